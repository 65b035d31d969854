"""Exact cosine search from memory: a table's vectors as one float32 matrix, per table version.

Scanning a table without a vector index through LanceDB reads every vector from disk on every
query (about 0.5 s at 100k x 512 on a small machine). A long-lived process (``omnivec api``) keeps
the matrix of each table it searches instead, keyed by the table's version so a new ingest is seen
by the next query, and answers with one matrix-vector product (~10 ms at 100k x 512). Only the
matching rows' display columns are read from the table. The results are the same top-k as the
scan (same cosine; ties broken by row order).

Bounded: ``OMNIVEC_EXACT_CACHE_MB`` (default 1024; 0 turns it off) caps the bytes held; a table
larger than the cap is scanned by LanceDB as before. Searches with SQL filters, ``as_of`` or an
ANN index do not use it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np


def cache_bytes() -> int:
    try:
        return int(float(os.environ.get("OMNIVEC_EXACT_CACHE_MB", "1024")) * 1024 * 1024)
    except ValueError:
        return 1024 * 1024 * 1024


@dataclass(slots=True)
class Matrix:
    dataset: Any  # the Lance dataset at the cached version (row positions refer to it)
    vectors: np.ndarray  # (rows, dim) float32, L2-normalised
    segment: np.ndarray  # (rows,) int
    modality: np.ndarray  # (rows,) object

    @property
    def nbytes(self) -> int:
        return int(self.vectors.nbytes + self.segment.nbytes + 8 * len(self.modality))

    def top(self, query: np.ndarray, n: int, modality: str | None, columns: list[str]) -> list[dict[str, Any]]:
        """The ``n`` best rows (segment >= 0, of ``modality`` if given), best first, with ``_distance``."""
        scores = self.vectors @ query.astype(np.float32)
        keep = self.segment >= 0
        if modality is not None:
            keep &= self.modality == modality
        candidates = np.flatnonzero(keep)
        if not len(candidates):
            return []
        n = min(n, len(candidates))
        sub = scores[candidates]
        part = np.argpartition(-sub, n - 1)[:n] if n < len(sub) else np.arange(len(sub))
        chosen = candidates[part]
        order = np.lexsort((chosen, -scores[chosen]))  # best score first, then row order
        chosen = chosen[order]
        rows = self.dataset.take(chosen.tolist(), columns=columns).to_pylist()
        for row, i in zip(rows, chosen, strict=True):
            row["_distance"] = float(1.0 - scores[i])
        return rows


class ExactCache:
    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, int], Matrix] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}

    def get(self, tbl: Any) -> Matrix | None:
        """The matrix of ``tbl`` at its current version, loaded on first use; None when off or too big."""
        limit = cache_bytes()
        if limit <= 0:
            return None
        ds = tbl.to_lance()
        key = (str(ds.uri), int(ds.version))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            gate = self._loading.setdefault(key, threading.Lock())
        dim = ds.schema.field("vector").type.list_size
        if ds.count_rows() * (dim * 4 + 16) > limit:
            return None
        with gate:  # one load per version, even under concurrent requests
            with self._lock:
                if key in self._items:
                    return self._items[key]
            t = ds.to_table(columns=["vector", "segment", "modality"])
            flat = t.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False)
            m = Matrix(ds, np.ascontiguousarray(flat, dtype=np.float32).reshape(t.num_rows, dim),
                       np.asarray(t.column("segment").to_numpy(zero_copy_only=False)),
                       np.asarray(t.column("modality").to_pylist(), dtype=object))
            with self._lock:
                self._loading.pop(key, None)
                for old in [k for k in self._items if k[0] == key[0]]:
                    del self._items[old]  # older versions of the same table
                self._items[key] = m
                while sum(x.nbytes for x in self._items.values()) > limit and len(self._items) > 1:
                    self._items.popitem(last=False)
            return m


CACHE = ExactCache()
