"""What a store folder may hold, and the object-store and disk errors met opening and writing it."""

from __future__ import annotations

import errno
import os
import re

from omnivec.errors import StoreError
from omnivec.store.lock import LOCK_NAME

_OWN_TABLE = re.compile(r"^(items|errors|runs|spaces|assets|(vectors|assets)_[a-z_][a-z0-9_]*_[0-9a-f]{12})$")


def own_table(name: str) -> bool:
    """Whether ``name`` is a table omnivec writes (the only tables a store folder may hold)."""
    return bool(_OWN_TABLE.match(name))


def is_remote(uri: str) -> bool:
    return "://" in uri


_NO_SPACE = ("no space left on device", "os error 28", "disk quota exceeded", "os error 122")


def no_space(exc: BaseException) -> bool:
    """Whether a write failed because the disk (or the user's quota) is full. Lance reports it as a
    RuntimeError carrying the OS error; Python as an OSError."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(m in str(exc).lower() for m in _NO_SPACE)


def no_space_error(uri: str, what: str) -> StoreError:
    return StoreError(
        f"no space left on device for store {uri} (while writing {what}); the store keeps its last "
        "committed version of every table",
        ["free space on that disk, or point --store / OMNIVEC_STORE at a disk with room",
         "then run the same command again: it continues where this one stopped"])


def storage_options(uri: str) -> dict[str, str]:
    """Object-store options from the usual AWS variables: an ``AWS_ENDPOINT_URL`` (S3-compatible
    servers such as MinIO) and plain http for such an endpoint. Credentials and region are read by
    the object-store client itself (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, profiles)."""
    if not uri.startswith(("s3://", "s3a://")):
        return {}
    opts: dict[str, str] = {}
    endpoint = (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
                or os.environ.get("AWS_ENDPOINT"))
    if endpoint:
        opts["aws_endpoint"] = endpoint
        if endpoint.startswith("http://"):
            opts["allow_http"] = "true"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        opts["aws_region"] = region
    return opts


def brief(exc: BaseException, limit: int = 400) -> str:
    """An object-store error without the Rust location and backtrace that follow its message."""
    text = str(exc)
    status = re.search(r"status: (\d{3})", text)
    known = {"404": "no such bucket (HTTP 404)", "403": "access denied (HTTP 403)",
             "301": "the bucket is in another region (HTTP 301)"}
    if status and status.group(1) in known:
        return known[status.group(1)]
    if "BadScheme" in text:
        return "the endpoint's scheme is not allowed (use http:// or https:// in AWS_ENDPOINT_URL)"
    if "Connection refused" in text or "ConnectError" in text or "error sending request" in text:
        return "the object store did not answer (connection refused)"
    for marker in (", location: Location", " backtrace:"):
        if marker in text:
            text = text[:text.index(marker)]
    return text if len(text) <= limit else text[:limit] + "..."


def own_entry(entry: os.DirEntry[str]) -> bool:
    if entry.name == LOCK_NAME:
        return entry.is_file(follow_symlinks=False)
    return (entry.name.endswith(".lance") and own_table(entry.name[: -len(".lance")])
            and entry.is_dir(follow_symlinks=False))


def refuse_foreign(uri: str, foreign: list[str]) -> None:
    """A store folder holds only omnivec's tables and its lock file: never write into (or clean up) a
    folder that holds anything else."""
    if not foreign:
        return
    shown = ", ".join(sorted(foreign)[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    raise StoreError(f"{uri} is not an omnivec store: it holds {shown}, which omnivec did not write",
                     ["point --store / OMNIVEC_STORE at a new or empty folder, or at an existing store",
                      "a store folder holds only omnivec's tables (items.lance, errors.lance, runs.lance, "
                      "spaces.lance, assets.lance, vectors_*.lance, assets_*.lance) and its lock file "
                      f"{LOCK_NAME}"])
