"""Which vector rows are committed: a file's `items` row is its commit point.

A flush writes vectors, then errors, then items. A writer killed between those writes leaves vector
rows that no `items` row covers: a new file's vectors without its row, or a changed file's new
vectors while its row still holds the old content hash. Such rows were never committed. Search
leaves them out (:class:`Committed`), and the next writer deletes them (:func:`remove_uncommitted`).

A vector row is covered when the `items` table holds a row with the same item_id and content_hash.
Both are hex digests (item_id: 128 bits of sha256 of the uri; content_hash: sha256 of the bytes);
the check compares one 64-bit key per pair, the first 64 bits of each XORed. Two different pairs
share a key with probability 2^-64 per pair compared: a row that is not covered is taken for
covered with a probability of about (items in the store) x 2^-64, under 10^-12 for a billion items.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from omnivec.store.datasets import dataset

log = logging.getLogger("omnivec")

_NIBBLE = np.zeros(256, dtype=np.uint64)
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF", 10):
    _NIBBLE[_c] = _i
_SHIFTS = np.arange(60, -4, -4, dtype=np.uint64)  # 16 hex digits, most significant first


def _hex64(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The first 16 hex digits of each string as a uint64 (a null or short string is padded with 0)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    arr = pc.utf8_rpad(pc.utf8_slice_codeunits(pc.fill_null(arr.cast(pa.string()), ""), 0, 16), 16, "0")
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    n = len(arr)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=n + 1, offset=arr.offset * 4)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    if int(offsets[-1] - offsets[0]) == 16 * n:  # every string is 16 ASCII characters
        digits = data[offsets[0] : offsets[0] + 16 * n].reshape(n, 16)
    else:  # non-ASCII characters: never a valid id, but keep going (they match nothing real)
        digits = np.array([list(s.encode()[:16].ljust(16, b"0")) for s in arr.to_pylist()], dtype=np.uint8)
    return np.bitwise_or.reduce(_NIBBLE[digits] << _SHIFTS, axis=1)


def keys(item_ids: pa.Array | pa.ChunkedArray, hashes: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """One uint64 key per (item_id, content_hash) pair."""
    return _hex64(item_ids) ^ _hex64(hashes)


class Committed:
    """The (item_id, content_hash) pairs of one version of the `items` table."""

    def __init__(self, item_ids: pa.Array | pa.ChunkedArray, hashes: pa.Array | pa.ChunkedArray) -> None:
        self.keys = np.unique(keys(item_ids, hashes))

    def covers(self, item_ids: pa.Array | pa.ChunkedArray | list[Any],
               hashes: pa.Array | pa.ChunkedArray | list[Any]) -> np.ndarray:
        """A boolean per row: whether its (item_id, content_hash) is committed."""
        ids = item_ids if isinstance(item_ids, pa.Array | pa.ChunkedArray) else pa.array(item_ids, pa.string())
        hs = hashes if isinstance(hashes, pa.Array | pa.ChunkedArray) else pa.array(hashes, pa.string())
        k = keys(ids, hs)
        if not len(self.keys):
            return np.zeros(len(k), dtype=bool)
        pos = np.minimum(np.searchsorted(self.keys, k), len(self.keys) - 1)
        return self.keys[pos] == k

    def keep(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows (with ``item_id`` and ``content_hash``) that are committed."""
        if not rows:
            return rows
        mask = self.covers([r["item_id"] for r in rows], [r["content_hash"] for r in rows])
        return [r for r, ok in zip(rows, mask, strict=True) if ok]


_CACHE: OrderedDict[tuple[str, int], Committed] = OrderedDict()
_CACHE_SIZE = 4
_lock = threading.Lock()


def committed(items: Any) -> Committed:
    """The committed pairs of the `items` table at the version ``items`` has checked out, read once per
    version (a long-lived reader pays it once per ingest: ~0.1 s per 100k items)."""
    ds = dataset(items)
    key = (str(ds.uri), int(ds.version))
    with _lock:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
    t = ds.to_table(columns=["item_id", "content_hash"])
    found = Committed(t.column("item_id"), t.column("content_hash"))
    with _lock:
        _CACHE[key] = found
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return found


def items_as_of(store: Any, vectors: Any, as_of: int | str | datetime | None) -> Any | None:
    """The `items` table in the state that goes with ``vectors`` (a vector table, checked out as of
    ``as_of``): the latest, the same run or time, or for a version number of the vector table, the last
    `items` version before the vector table's next version (the items rows of that version's flush
    were written after it). None when the store had no `items` table then."""
    from omnivec.store.history import open_as_of

    if as_of is None:
        return store.table("items")
    if not isinstance(as_of, int):
        return open_as_of(store, "items", as_of)
    later = [v["timestamp"] for v in vectors.list_versions() if int(v["version"]) == as_of + 1]
    if not later:  # the latest version of the vector table
        return store.table("items")
    ts = later[0] if later[0].tzinfo else later[0].replace(tzinfo=UTC)  # Lance's are naive UTC
    return open_as_of(store, "items", ts - timedelta(microseconds=1))


def uncommitted(store: Any, table: str, covered: Committed) -> dict[str, set[str]]:
    """item_id -> the content hashes of its rows in ``table`` that ``covered`` does not cover."""
    tbl = store.table(table)
    if tbl is None:
        return {}
    t = dataset(tbl).to_table(columns=["item_id", "content_hash"])
    if not t.num_rows:
        return {}
    bad = ~covered.covers(t.column("item_id"), t.column("content_hash"))
    if not bad.any():
        return {}
    out: dict[str, set[str]] = {}
    rows = t.filter(pa.array(bad)).to_pylist()
    for r in rows:
        out.setdefault(r["item_id"], set()).add(r["content_hash"])
    return out


def remove_uncommitted(store: Any) -> dict[str, int]:
    """Delete, from every vector table, the rows no `items` row covers (left by a writer killed between
    its vector and its items writes). For a writer holding the store's lock. Returns table -> rows
    deleted."""
    from omnivec.store.store import sql_in

    items = store.table("items")
    covered = committed(items) if items is not None else Committed(pa.array([], pa.string()),
                                                                   pa.array([], pa.string()))
    removed: dict[str, int] = {}
    for _, _, table in store.vector_tables():
        stale = uncommitted(store, table, covered)
        if not stale:
            continue
        before = store.count(table)
        pairs = sorted((i, h) for i, hs in stale.items() for h in hs if h is not None)
        nulls = sorted(i for i, hs in stale.items() if None in hs)
        for start in range(0, len(pairs), 500):
            part = pairs[start : start + 500]
            store.delete(table, " OR ".join(f"({sql_in('item_id', [i])} AND {sql_in('content_hash', [h])})"
                                            for i, h in part))
        for start in range(0, len(nulls), 500):
            store.delete(table, f"{sql_in('item_id', nulls[start : start + 500])} AND content_hash IS NULL")
        removed[table] = before - store.count(table)
    if removed:
        log.warning("removed %s vector rows that a stopped run wrote without committing their files (%s)",
                    sum(removed.values()), ", ".join(f"{t}: {n}" for t, n in sorted(removed.items())))
    return removed
