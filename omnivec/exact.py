"""Exact cosine search from memory: a table's vectors as one float32 matrix, per table version.

Scanning a table without a vector index through LanceDB reads every vector from disk on every
query (about 0.5 s at 100k x 512 on a small machine). A long-lived process (``omnivec api``) keeps
the matrix of each table it searches instead, keyed by the table's version so a new ingest is seen
by the next query, and answers with a matrix-vector product. Only the matching rows' display
columns are read from the table. The results are the same top-k as the scan (same cosine; ties
broken by row order).

At 100k x 512 the float32 product reads 205 MB per query and is bound by memory bandwidth. Where
the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX: the product takes ~3.5 ms instead of ~7), a
bfloat16 copy is scanned first and only the rows that can still be in the top-k are scored again
in float32. That stays exact: bfloat16 rounding moves a score by at most ``delta`` (a bound from
the rounding of both operands, the float32 accumulation and the rounded output), so every row of
the true top-k (and every row tied with its last) scores at least ``(k-th best approximate) -
2 * delta`` approximately, and those rows are re-scored exactly. The bound is checked against the
float32 scores of a probe query when the matrix is loaded; a CPU that breaks it keeps float32 only.

Bounded: ``OMNIVEC_EXACT_CACHE_MB`` (default 1024; 0 turns it off) caps the bytes held; a table
larger than the cap is scanned by LanceDB as before. ``OMNIVEC_EXACT_FIRST_PASS`` is ``auto``
(default: bfloat16 first on such CPUs), ``bf16`` (always, where it passes the check) or ``off``.
Searches with SQL filters, ``as_of`` or an ANN index do not use this module.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omnivec.config import env
from omnivec.store.datasets import dataset

BF16_UNIT = 2.0**-8  # unit roundoff of bfloat16 (8 significant bits, round to nearest)
FP32_UNIT = 2.0**-24


def cache_bytes() -> int:
    """The cap, from ``OMNIVEC_EXACT_CACHE_MB`` (a bad value is a ConfigError naming it)."""
    return int(env("OMNIVEC_EXACT_CACHE_MB") * 1024 * 1024)


def first_pass_mode() -> str:
    return str(env("OMNIVEC_EXACT_FIRST_PASS"))


def error_bound(dim: int, norm_product: float) -> float:
    """Largest |bf16 score - exact score| for rows and query whose norms multiply to ``norm_product``:
    both operands rounded (2u + u^2 relative per product), float32 accumulation over ``dim`` terms,
    and the bfloat16 rounding of the result (u of its magnitude); doubled float32 terms for safety."""
    u = BF16_UNIT
    inputs = 2 * u + u * u
    accumulate = 2 * dim * FP32_UNIT * (1 + inputs)
    return float(norm_product * ((inputs + accumulate) * (1 + u) + u))


@dataclass(slots=True)
class Matrix:
    dataset: Any  # the Lance dataset at the cached version (row positions refer to it)
    vectors: np.ndarray  # (rows, dim) float32
    segment: np.ndarray  # (rows,) int
    modality: np.ndarray  # (rows,) object
    low: Any = None  # (rows, dim) torch bfloat16 copy for the first pass, or None
    max_norm: float = 1.0  # largest row norm (the vectors are L2-normalised: about 1)
    first_pass: str = "float32"  # what :meth:`top` scans first, for reports
    _rows: dict[str | None, np.ndarray | None] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        low = int(self.low.numel() * 2) if self.low is not None else 0
        return int(self.vectors.nbytes + self.segment.nbytes + 8 * len(self.modality)) + low

    def rows(self, modality: str | None) -> np.ndarray | None:
        """Row positions a search may return (segment >= 0, of ``modality`` if given); None: all."""
        if modality not in self._rows:
            keep = self.segment >= 0
            if modality is not None:
                keep &= self.modality == modality
            self._rows[modality] = None if bool(keep.all()) else np.flatnonzero(keep)
        return self._rows[modality]

    def approximate(self, query: np.ndarray) -> np.ndarray:
        import torch

        q = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32)).to(torch.bfloat16)
        bits = torch.mv(self.low, q).view(torch.int16).numpy().view(np.uint16)
        # bfloat16 is the top half of a float32: widening in numpy avoids another OpenMP region, which
        # on a busy machine waits for a descheduled thread
        return (bits.astype(np.uint32) << 16).view(np.float32)

    def exact(self, query: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """float32 cosines of ``rows`` (all rows when None). torch, like the first pass: numpy's BLAS
        and torch's OpenMP threads spinning after each other's calls slow both down."""
        import torch

        m = self.vectors if rows is None else self.vectors[rows]
        return torch.mv(torch.from_numpy(m), torch.from_numpy(query)).numpy()

    def best(self, query: np.ndarray, n: int, modality: str | None) -> tuple[np.ndarray, np.ndarray]:
        """(row positions, float32 cosines) of the ``n`` best rows, best first, ties by row order."""
        q = np.ascontiguousarray(query, dtype=np.float32)
        rows = self.rows(modality)
        count = len(self.vectors) if rows is None else len(rows)
        n = min(n, count)
        if n <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        if self.low is not None and n * 8 < count:
            approx = self.approximate(q)
            sub = approx if rows is None else approx[rows]
            kth = np.partition(sub, count - n)[count - n]
            margin = 2 * error_bound(q.shape[0], self.max_norm * float(np.linalg.norm(q)))
            near = np.flatnonzero(sub >= kth - margin)
            if len(near) <= max(64 * n, count // 16):  # else the float32 pass below is cheaper
                cand = near if rows is None else rows[near]
                return _pick(cand, self.exact(q, cand), n)
        scores = self.exact(q)
        if rows is None:
            return _pick(np.arange(count), scores, n)
        return _pick(rows, scores[rows], n)

    def top(self, query: np.ndarray, n: int, modality: str | None, columns: list[str]) -> list[dict[str, Any]]:
        """The ``n`` best rows (segment >= 0, of ``modality`` if given), best first, with their cosine
        (:func:`cosines`) in ``_score``."""
        chosen, _ = self.best(query, n, modality)
        if not len(chosen):
            return []
        rows = self.dataset.take(chosen.tolist(), columns=columns).to_pylist()
        for row, s in zip(rows, cosines(self.vectors[chosen], query), strict=True):
            row["_score"] = float(s)
        return rows


def cosines(vectors: Any, query: np.ndarray) -> np.ndarray:
    """The cosine similarity of each stored vector (rows of a matrix, or a fixed-size-list column) with
    the query, computed in float64 and rounded to float32: the score every search path reports, so a
    file scores the same from memory, through Lance's scan, through an ANN index (whose own distance
    is approximate, and a squared L2 rather than a cosine) and at any as-of version."""
    import pyarrow as pa

    if isinstance(vectors, pa.ChunkedArray | pa.Array):
        arr = vectors.combine_chunks() if isinstance(vectors, pa.ChunkedArray) else vectors
        m = np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float64).reshape(len(arr), len(query))
    else:
        m = np.asarray(vectors, dtype=np.float64)
    q = np.asarray(query, dtype=np.float64)
    if not len(m):
        return np.empty(0, dtype=np.float32)
    # row by row (not a BLAS product, whose summation order changes with the number of rows), so a
    # vector scores the same whichever rows it is fetched with: copies of a file tie exactly
    dots = (m * q).sum(axis=1)
    norms = np.sqrt((m * m).sum(axis=1)) * np.sqrt((q * q).sum())
    # rounded to float32, the vectors' own precision: a file embedded in another batch can differ in
    # its last bit, which must not break a tie with its copies
    return (dots / np.maximum(norms, 1e-300)).astype(np.float32)


def _pick(cand: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best of ``cand`` by ``scores``: every row tied with the n-th is considered, then
    rows are ordered by score (best first) and row position."""
    if n < len(scores):
        kth = np.partition(scores, len(scores) - n)[len(scores) - n]
        keep = np.flatnonzero(scores >= kth)
        cand, scores = cand[keep], scores[keep]
    order = np.lexsort((cand, -scores))[:n]
    return cand[order], scores[order]


def _with_first_pass(m: Matrix, limit: int) -> Matrix:
    """Add the bfloat16 copy when it is allowed, fits the cap, keeps the error bound on a probe query
    and (in ``auto``) the CPU has bfloat16 arithmetic."""
    mode = first_pass_mode()
    rows, dim = m.vectors.shape
    if mode == "off" or rows < 1024 or m.nbytes + rows * dim * 2 > limit:
        return m
    try:
        import torch

        low = torch.from_numpy(m.vectors).to(torch.bfloat16)
    except Exception:  # noqa: BLE001 - no bfloat16 on this build: float32 only
        return m
    probe = m.vectors[len(m.vectors) // 2].copy()
    probe /= max(float(np.linalg.norm(probe)), 1e-12)
    m.max_norm = float(np.sqrt(np.einsum("ij,ij->i", m.vectors, m.vectors).max())) * (1 + 1e-5)
    trial = Matrix(m.dataset, m.vectors, m.segment, m.modality, low, m.max_norm)
    worst = float(np.max(np.abs(trial.approximate(probe) - m.exact(probe))))
    if worst > error_bound(dim, m.max_norm):
        return m  # this CPU's bfloat16 product is not the one the bound describes
    if mode == "auto" and not bf16_hardware():
        return m
    m.low, m.first_pass = low, "bfloat16"
    return m


def bf16_hardware() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), where torch's bfloat16
    matrix-vector product runs at about twice float32's speed (half the bytes read). Elsewhere it is
    emulated and slower than float32. (Timing both at load time proved unreliable on a busy machine.)"""
    try:
        import torch

        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except Exception:  # noqa: BLE001 - an older torch or another architecture: float32 only
        return False


class ExactCache:
    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, int], Matrix] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}

    def get(self, tbl: Any, version: int | None = None) -> Matrix | None:
        """The matrix of ``tbl`` at its current version, loaded on first use; None when off or too big."""
        limit = cache_bytes()
        if limit <= 0:
            return None
        ds = dataset(tbl, version)
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
            vectors = np.ascontiguousarray(flat, dtype=np.float32).reshape(t.num_rows, dim)
            if not vectors.flags.writeable:  # torch wraps only writable arrays (it never writes)
                vectors = vectors.copy()
            m = Matrix(ds, vectors,
                       np.asarray(t.column("segment").to_numpy(zero_copy_only=False)),
                       np.asarray(t.column("modality").to_pylist(), dtype=object))
            m = _with_first_pass(m, limit)
            with self._lock:
                self._loading.pop(key, None)
                for old in [k for k in self._items if k[0] == key[0]]:
                    del self._items[old]  # older versions of the same table
                self._items[key] = m
                while sum(x.nbytes for x in self._items.values()) > limit and len(self._items) > 1:
                    self._items.popitem(last=False)
            return m


CACHE = ExactCache()
