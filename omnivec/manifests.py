"""Manifests: CSV, JSONL or Parquet files whose rows each describe one asset.

Columns whose name starts with ``image``, ``audio`` or ``text`` hold paths (relative to the
manifest's folder, or absolute) of member files; columns whose name starts with ``caption`` hold
inline text. An optional ``id`` column names the asset (default: the row number). Inline captions
become text items like any other, with the URI ``<manifest>#row=<n>&col=<column>``.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from omnivec.errors import DecodeError
from omnivec.media import display_path, open_regular

MANIFEST_EXTENSIONS = frozenset({".csv", ".jsonl", ".parquet"})
PATH_PREFIXES = ("image", "audio", "text")
CAPTION_PREFIX = "caption"
MAX_MANIFEST_ROWS = 1_000_000  # rows are held in memory while a manifest is read
MAX_MANIFEST_BYTES = 1 << 30  # file size (CSV, JSONL) or uncompressed data size (Parquet)


class NotAManifest(DecodeError):
    """A CSV/JSONL/Parquet file without asset columns: ordinary data, not a manifest."""


@dataclass(slots=True)
class ManifestRow:
    key: str  # asset key: "<manifest>#<id or row>"
    paths: list[tuple[str, str]] = field(default_factory=list)  # (column, absolute path)
    captions: list[tuple[str, str, str]] = field(default_factory=list)  # (column, uri, text)


def is_manifest(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in MANIFEST_EXTENSIONS


def caption_uri(manifest: str, row: int, column: str) -> str:
    return f"{manifest}#row={row}&col={column}"


def _too_many_rows(n: int) -> DecodeError:
    return DecodeError(f"manifest has {n:,} rows or more, over the {MAX_MANIFEST_ROWS:,}-row limit; split it")


def _check_size(path: str, size: int, what: str = "") -> None:
    if size > MAX_MANIFEST_BYTES:
        raise DecodeError(f"manifest{what} is {size:,} bytes, over the {MAX_MANIFEST_BYTES:,}-byte limit; split it")


_CACHE: OrderedDict[tuple[Any, ...], tuple[tuple[str, ...], tuple[dict[str, object], ...]]] = OrderedDict()
_CACHE_SIZE = 16  # manifests parsed and kept (a batch reads one caption at a time)
_CACHE_LOCK = threading.Lock()


def _load(path: str, inside: Sequence[str] | None) -> tuple[tuple[str, ...], tuple[dict[str, object], ...]]:
    """Columns and rows, parsed from one descriptor opened with omnivec's checks (a regular file,
    inside ``inside``) and kept per file identity (device, inode, mtime, size)."""
    fd, st = open_regular(path, inside)
    with os.fdopen(fd, "rb") as fh:
        key = (path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        with _CACHE_LOCK:
            if key in _CACHE:
                _CACHE.move_to_end(key)
                return _CACHE[key]
        loaded = _parse(path, fh, st.st_size)
    with _CACHE_LOCK:
        _CACHE[key] = loaded
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return loaded


def _parse(path: str, fh: BinaryIO, size: int) -> tuple[tuple[str, ...], tuple[dict[str, object], ...]]:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".parquet":
        import pyarrow.parquet as pq

        # sizes come from the footer, before anything is decompressed: a few kilobytes of Parquet
        # can declare millions of rows
        pf = pq.ParquetFile(fh)
        meta = pf.metadata
        if meta.num_rows > MAX_MANIFEST_ROWS:
            raise _too_many_rows(meta.num_rows)
        _check_size(path, sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)),
                    " data (uncompressed)")
        names = tuple(pf.schema_arrow.names)
        wanted = [c for c in names if _is_asset_column(c) or c == "id"]
        return names, tuple(pf.read(columns=wanted).to_pylist()) if wanted else ()
    _check_size(path, size)
    if ext == ".jsonl":
        rows = []
        for n, line in enumerate(io.TextIOWrapper(fh, encoding="utf-8"), 1):
            if line.strip():
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"line {n} is not a JSON object")
                rows.append(obj)
                if len(rows) > MAX_MANIFEST_ROWS:
                    raise _too_many_rows(len(rows))
        cols: dict[str, None] = {}
        for r in rows:
            cols.update(dict.fromkeys(r))
        return tuple(cols), tuple(rows)
    import csv

    reader = csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8-sig", newline=""))
    out = []
    for r in reader:
        out.append(dict(r))
        if len(out) > MAX_MANIFEST_ROWS:
            raise _too_many_rows(len(out))
    return tuple(reader.fieldnames or ()), tuple(out)


def _is_asset_column(name: str) -> bool:
    return name.lower().startswith((*PATH_PREFIXES, CAPTION_PREFIX))


def read_manifest(path: str, inside: Sequence[str] | None = None) -> list[ManifestRow]:
    """Parse a manifest; raises DecodeError (with the reason) when it cannot be read, is not a
    regular file, or resolves outside ``inside`` (see :func:`omnivec.media.open_regular`)."""
    try:
        columns, rows = _load(path, inside)
    except DecodeError:
        raise
    except RecursionError:
        raise DecodeError("manifest cannot be read: JSON nested too deeply") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"manifest cannot be read: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow and csv errors vary
        raise DecodeError(f"manifest cannot be read: {type(exc).__name__}: {exc}") from None
    path_cols = [c for c in columns if c.lower().startswith(PATH_PREFIXES)]
    caption_cols = [c for c in columns if c.lower().startswith(CAPTION_PREFIX)]
    if not path_cols and not caption_cols:
        shown = ", ".join(display_path(c) for c in columns[:50]) + (", ..." if len(columns) > 50 else "")
        raise NotAManifest(f"no image*/audio*/text*/caption* columns (columns: {shown})")
    base = os.path.dirname(path)
    out = []
    for n, row in enumerate(rows):
        ident = row.get("id")
        # the asset key is stored: any JSON value becomes text, undecodable characters escapes
        ident_text = "" if ident is None else display_path(str(ident))
        mr = ManifestRow(key=f"{path}#{ident_text or n}")
        for col in path_cols:
            value = row.get(col)
            if isinstance(value, str) and value.strip():
                mr.paths.append((col, os.path.normpath(os.path.join(base, value.strip()))))
        for col in caption_cols:
            value = row.get(col)
            if isinstance(value, str) and value.strip():
                mr.captions.append((col, caption_uri(path, n, col), value))
        out.append(mr)
    return out


def split_caption_uri(uri: str) -> tuple[str, int, str] | None:
    """(manifest, row, column) of a caption URI, or None when ``uri`` does not have that shape (the
    manifest's own path may hold ``#``; the column name may hold ``&``)."""
    manifest, sep, rest = uri.rpartition("#row=")
    row, sep2, col = rest.partition("&col=")
    if not sep or not sep2 or not is_manifest(manifest) or not (row.isascii() and row.isdigit()):
        return None
    return manifest, int(row), col


def read_caption(uri: str, inside: Sequence[str] | None = None) -> str:
    """The inline text behind a caption URI (its manifest read as :func:`read_manifest` does)."""
    parts = split_caption_uri(uri)
    if parts is None:
        raise DecodeError(f"not a caption URI: {uri}", stage="read")
    manifest, row, col = parts
    rows = read_manifest(manifest, inside)
    if row >= len(rows):
        raise DecodeError(f"manifest row {row} no longer exists", stage="read")
    for c, _, text in rows[row].captions:
        if c == col:
            return text
    raise DecodeError(f"manifest row {row} has no caption in column {col!r} any more", stage="read")
