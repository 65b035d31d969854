"""Which vector rows are committed: a file's `items` row is its commit point.

A flush writes vectors, then errors, then items. A writer killed between those writes leaves vector
rows that no `items` row covers: a new file's vectors without its row, or a changed file's new
vectors while its row still holds the old content hash. Such rows were never committed. Search
leaves them out (:class:`Committed`), and the next writer deletes them (:func:`remove_uncommitted`).

A vector row is covered when the `items` table holds a row with the same item_id and content_hash.
Both are hex digests (item_id: 128 bits of sha256 of the uri; content_hash: sha256 of the bytes). A
pair is compared by a 64-bit hash of its 48 bytes (a chain of bijective mixing steps: two pairs that
differ in only one 8-byte word never collide), kept sorted: 8 bytes per item, ~0.1 s per 100k items
to build. An uncommitted row is taken for a committed one only if its hash equals one of the N
committed pairs', with a probability of about N / 2^64 (5e-14 for a million items).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from omnivec.store.datasets import dataset

log = logging.getLogger("omnivec")

_MUL = np.uint64(0xBF58476D1CE4E5B9)
_SEED = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(31)


def _digests(column: pa.Array | pa.ChunkedArray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(each string's hex digits as ``width`` bytes viewed as uint64 words, shape (n, width // 8);
    whether the string is exactly such a digest). A null, or any other string, matches nothing."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    arr = arr.cast(pa.string())
    n, digits = len(arr), 2 * width
    if n == 0:
        return np.empty((0, width // 8), dtype=np.uint64), np.empty(0, dtype=bool)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=n + 1, offset=arr.offset * 4)
    if arr.null_count == 0 and bool((np.diff(offsets) == digits).all()):  # the usual case: one decode
        text = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[0] + digits * n]
        try:
            raw = bytes.fromhex(text.tobytes().decode("ascii"))
            return np.frombuffer(raw, dtype=np.uint64).reshape(n, width // 8), np.ones(n, dtype=bool)
        except ValueError:  # a character that is not a hex digit somewhere: row by row below
            pass
    out = np.zeros((n, width), dtype=np.uint8)
    valid = np.zeros(n, dtype=bool)
    for i, value in enumerate(arr.to_pylist()):
        if value is not None and len(value) == digits:
            try:
                out[i] = np.frombuffer(bytes.fromhex(value), dtype=np.uint8)
                valid[i] = True
            except ValueError:
                pass
    return out.view(np.uint64), valid


def keys(item_ids: pa.Array | pa.ChunkedArray, hashes: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(a 64-bit key per (item_id, content_hash) pair, whether both are digests)."""
    ids, ids_ok = _digests(item_ids, 16)
    hs, hs_ok = _digests(hashes, 32)
    key = np.full(len(ids), _SEED, dtype=np.uint64)
    for word in [*ids.T, *hs.T]:  # each step is a bijection of the state for a given word
        key ^= word
        key *= _MUL
        key ^= key >> _SHIFT
    return key, ids_ok & hs_ok


class Committed:
    """The (item_id, content_hash) pairs of one version of the `items` table."""

    def __init__(self, item_ids: pa.Array | pa.ChunkedArray, hashes: pa.Array | pa.ChunkedArray) -> None:
        k, valid = keys(item_ids, hashes)
        self.keys = np.sort(k[valid])

    def covers(self, item_ids: pa.Array | pa.ChunkedArray | list[Any],
               hashes: pa.Array | pa.ChunkedArray | list[Any]) -> np.ndarray:
        """A boolean per row: whether its (item_id, content_hash) is committed."""
        ids = item_ids if isinstance(item_ids, pa.Array | pa.ChunkedArray) else pa.array(item_ids, pa.string())
        hs = hashes if isinstance(hashes, pa.Array | pa.ChunkedArray) else pa.array(hashes, pa.string())
        k, valid = keys(ids, hs)
        if not len(self.keys):
            return np.zeros(len(k), dtype=bool)
        pos = np.minimum(np.searchsorted(self.keys, k), len(self.keys) - 1)
        return (self.keys[pos] == k) & valid

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
