"""Manifests: CSV, JSONL or Parquet files whose rows each describe one asset.

Columns whose name starts with ``image``, ``audio`` or ``text`` hold paths (relative to the
manifest's folder, or absolute) of member files; columns whose name starts with ``caption`` hold
inline text. An optional ``id`` column names the asset (default: the row number). Inline captions
become text items like any other, with the URI ``<manifest>#row=<n>&col=<column>``.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field

from omnivec.errors import DecodeError

MANIFEST_EXTENSIONS = frozenset({".csv", ".jsonl", ".parquet"})
PATH_PREFIXES = ("image", "audio", "text")
CAPTION_PREFIX = "caption"


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


@functools.lru_cache(maxsize=16)
def _load(path: str, mtime_ns: int) -> tuple[tuple[str, ...], tuple[dict[str, object], ...]]:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return tuple(table.column_names), tuple(table.to_pylist())
    if ext == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    obj = json.loads(line)
                    if not isinstance(obj, dict):
                        raise ValueError(f"line {n} is not a JSON object")
                    rows.append(obj)
        cols: list[str] = []
        for r in rows:
            cols += [c for c in r if c not in cols]
        return tuple(cols), tuple(rows)
    import csv

    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        return tuple(reader.fieldnames or ()), tuple(dict(r) for r in reader)


def read_manifest(path: str) -> list[ManifestRow]:
    """Parse a manifest; raises DecodeError (with the reason) when it cannot be read."""
    try:
        columns, rows = _load(path, os.stat(path).st_mtime_ns)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"manifest cannot be read: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow and csv errors vary
        raise DecodeError(f"manifest cannot be read: {type(exc).__name__}: {exc}") from None
    path_cols = [c for c in columns if c.lower().startswith(PATH_PREFIXES)]
    caption_cols = [c for c in columns if c.lower().startswith(CAPTION_PREFIX)]
    if not path_cols and not caption_cols:
        raise NotAManifest(f"no image*/audio*/text*/caption* columns (columns: {', '.join(columns)})")
    base = os.path.dirname(path)
    out = []
    for n, row in enumerate(rows):
        ident = row.get("id")
        mr = ManifestRow(key=f"{path}#{ident if ident not in (None, '') else n}")
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


def read_caption(uri: str) -> str:
    """The inline text behind a caption URI."""
    manifest, _, frag = uri.partition("#")
    parts = dict(p.split("=", 1) for p in frag.split("&") if "=" in p)
    try:
        row, col = int(parts["row"]), parts["col"]
    except (KeyError, ValueError):
        raise DecodeError(f"not a caption URI: {uri}", stage="read") from None
    rows = read_manifest(manifest)
    if row >= len(rows):
        raise DecodeError(f"manifest row {row} no longer exists", stage="read")
    for c, _, text in rows[row].captions:
        if c == col:
            return text
    raise DecodeError(f"manifest row {row} has no caption in column {col!r} any more", stage="read")
