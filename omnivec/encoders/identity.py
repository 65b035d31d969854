"""A space's identity (recipe, dimension, space_id) without loading its model, when that is sound.

An encoder's recipe is a function of what its load reads: the space's settings, the model's files,
the installed libraries and omnivec's own encoder code. When every one of those inputs can be seen
cheaply (a stat per model file, the installed packages' versions, a hash of a few source files),
their fingerprint keys the identity the last load with exactly those inputs computed. A run with no
files to embed for a space then needs neither torch nor the weights to know which space it is in.

Only encoders that say what their load reads (:meth:`Encoder.identity_inputs`) take part, and only
for inputs that are local files: a model fetched from a hub (which may serve new weights at any
load) or a device that must be probed (``cuda``; a precision other than fp32 on ``auto``) is loaded,
as before. Every real load records its identity when its inputs did not change while it ran.
Cached in ``$XDG_CACHE_HOME/omnivec/space-identities.json`` (one file per user, like the weights'
sha256); a missing or unreadable cache only means a load.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import sys
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omnivec.config import SpaceSettings
from omnivec.usercache import cache_file, read_json, write_json

if TYPE_CHECKING:
    from omnivec.encoders.base import Encoder

log = logging.getLogger("omnivec")

MAX_ENTRIES = 256  # identities kept (most recent first out when full)
MAX_FILES = 4096  # a model folder with more files than this is not fingerprinted
_LOCK = threading.Lock()
_CODE: dict[str, str] = {}  # module -> sha256 of its source, as imported by this process


@dataclass(frozen=True, slots=True)
class Identity:
    recipe: dict[str, Any]
    dimension: int
    space_id: str


def _cache_path() -> Path:
    return cache_file("space-identities.json")


def file_state(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What a stat says about a file (through symlinks); None when it is not a regular file."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return None
    if not os.path.isfile(real):
        return None
    return {"path": real, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "ino": st.st_ino, "dev": st.st_dev}


def tree_state(folder: str | os.PathLike[str]) -> list[dict[str, Any]] | None:
    """:func:`file_state` of every file under ``folder`` (symlinks followed), in a stable order; None when
    it is not a folder, a file cannot be stat'ed, a symlink loops, or it holds more than
    :data:`MAX_FILES` files or folders."""
    root = os.path.realpath(folder)
    if not os.path.isdir(root):
        return None
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for parent, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(parent)
        if real in seen or len(seen) >= MAX_FILES:  # a symlink loop, or a folder far too big
            return None
        seen.add(real)
        dirs.sort()
        for name in sorted(files):
            state = file_state(os.path.join(parent, name))
            if state is None or len(out) >= MAX_FILES:
                return None
            out.append({"rel": os.path.relpath(os.path.join(parent, name), root), **state})
    return out


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _code_hashes(cls: type[Encoder]) -> dict[str, str]:
    """sha256 of the source of every module that computes the recipe: the encoder's class hierarchy,
    the registry and the weights' hashing."""
    names = {c.__module__ for c in cls.__mro__ if c.__module__ not in ("builtins", "abc")}
    names |= {"omnivec.encoders", "omnivec.encoders.base", "omnivec.encoders.identity", "omnivec.weights"}
    out = {}
    for name in sorted(names):
        if name not in _CODE:
            file = getattr(importlib.import_module(name), "__file__", None)
            if not file:
                raise LookupError(f"no source file for module {name}")
            _CODE[name] = hashlib.sha256(Path(file).read_bytes()).hexdigest()
        out[name] = _CODE[name]
    return out


def _device_check_free(device: str, precision: str) -> bool:
    """Whether loading on ``device`` at ``precision`` can fail for a reason a fingerprint cannot see
    (an absent CUDA device, a precision the resolved device refuses): only then must the load run."""
    if device == "cpu":
        return precision != "fp16"
    return device == "auto" and precision == "fp32"


def fingerprint(cls: type[Encoder], settings: SpaceSettings, device: str) -> str | None:
    """A hash of everything the load of ``settings`` on ``device`` reads, or None when that cannot be
    known without loading. ``settings`` as :func:`omnivec.encoders.load_encoder` keys them."""
    try:
        precision = settings.precision or "fp32"
        if not _device_check_free(device, precision):
            return None
        inputs = cls.identity_inputs(settings)
        if inputs is None:
            return None
        doc = {
            "encoder": f"{cls.__module__}.{cls.__qualname__}",
            "settings": json.loads(settings.model_dump_json(exclude={"enabled", "batch_size"})),
            "device": device,
            "python": list(sys.version_info[:3]),
            "packages": {p: _package_version(p) for p in sorted(set(cls.identity_packages))},
            "code": _code_hashes(cls),
            "inputs": inputs,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()
    except Exception as exc:  # noqa: BLE001 - never worse than a load
        log.debug("no identity fingerprint for %s: %s", settings.model, exc)
        return None


def _read() -> dict[str, Any]:
    return read_json(_cache_path())


def lookup(cls: type[Encoder], settings: SpaceSettings, device: str) -> Identity | None:
    """The identity a load with the same fingerprint computed, or None."""
    from omnivec.encoders.base import space_id_for

    key = fingerprint(cls, settings, device)
    if key is None:
        return None
    with _LOCK:
        entry = _read().get(key)
    try:
        recipe, dimension, space_id = entry["recipe"], int(entry["dimension"]), entry["space_id"]  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return None
    if not isinstance(recipe, dict) or space_id_for(recipe) != space_id:
        return None
    return Identity(recipe, dimension, space_id)


def remember(cls: type[Encoder], settings: SpaceSettings, device: str, before: str | None, enc: Encoder) -> None:
    """Record a loaded encoder's identity under the fingerprint taken before its load, if its inputs
    are still the same now (a model file rewritten during the load is not remembered)."""
    if before is None or fingerprint(cls, settings, device) != before:
        return
    recipe = json.loads(json.dumps(enc.recipe, default=str))
    entry = {"recipe": recipe, "dimension": int(enc.dimension), "space_id": enc.space_id}
    path = _cache_path()
    with _LOCK:
        known = _read()
        known.pop(before, None)
        known[before] = entry
        while len(known) > MAX_ENTRIES:
            known.pop(next(iter(known)))
        write_json(path, known)  # a read-only home only costs a load next time
