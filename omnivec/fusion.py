"""Reciprocal rank fusion (RRF): merge several ranked result lists into one.

RRF (Cormack, Clarke and Buettcher, "Reciprocal Rank Fusion outperforms Condorcet and individual
Rank Learning Methods", SIGIR 2009) scores each key by summing ``1 / (k + rank)`` over every list it
appears in, with ranks starting at 1. It needs no score calibration between sources (a cosine distance
in one space and another are not comparable, ranks are), rewards keys that several sources agree on,
and the constant ``k`` (60 in the paper, and here by default) damps the weight of the very top ranks so
that one source cannot dominate. An optional per-source weight multiplies that source's contributions.

Pure Python, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["DEFAULT_K", "rrf"]

DEFAULT_K = 60


def rrf(
    ranked: Mapping[str, Sequence[str]],
    k: int = DEFAULT_K,
    weights: Mapping[str, float] | None = None,
) -> list[tuple[str, float, dict[str, int]]]:
    """Fuse ranked lists of keys (best first) from several sources (e.g. spaces) with reciprocal rank fusion:
    score(key) = sum over sources where key appears of weight[source] / (k + rank), rank starting at 1.
    Returns (key, score, {source: rank}) sorted by score descending; ties broken by best (lowest) single rank,
    then by key, so the order is deterministic.

    ``k`` must be an integer >= 1. ``weights`` defaults to 1.0 for every source; a source missing from
    ``weights`` also gets 1.0; a weight must be finite and >= 0 (0 keeps the source's ranks in the result
    but adds nothing to the score); a weight for a source not in ``ranked`` is ignored. A key repeated
    within one source's list counts only at its first (best) rank, and later entries of that list keep
    their positional rank (no renumbering). Empty lists contribute nothing.

    Raises ValueError on a bad ``k`` or weight.
    """
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    weights = dict(weights or {})
    for source, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise ValueError(f"weight for source {source!r} must be a finite number, got {weight!r}")
        if weight < 0:
            raise ValueError(f"weight for source {source!r} must be >= 0, got {weight}")

    parts: dict[str, list[float]] = {}
    ranks: dict[str, dict[str, int]] = {}
    for source, keys in ranked.items():
        if isinstance(keys, str):
            raise ValueError(f"ranked[{source!r}] must be a list of keys, not a string")
        weight = float(weights.get(source, 1.0))
        for rank, key in enumerate(keys, start=1):
            per_source = ranks.setdefault(key, {})
            if source in per_source:  # duplicate within this list: only the first (best) rank counts
                continue
            per_source[source] = rank
            parts.setdefault(key, []).append(weight / (k + rank))

    # math.fsum is exactly rounded, so the score does not depend on the order of sources and equal
    # rank patterns give bit-identical scores (true ties), whatever order the dict was built in.
    fused = [(key, math.fsum(parts[key]), ranks[key]) for key in parts]
    fused.sort(key=lambda row: (-row[1], min(row[2].values()), row[0]))
    return fused
