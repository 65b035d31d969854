"""Drift canary: re-embed a small fixed sample of stored items and compare with their stored vectors.

A space's ``space_id`` pins everything omnivec can see (model, weights, preprocessing config,
library major versions). The canary catches what it cannot: a minor library change, a different
image backend, another precision or device kernel that moves vectors. The sample is fixed (the
lowest item ids per modality whose file is unchanged), so consecutive runs compare like with like.
It runs for the spaces a run wrote vectors to: a run that embedded nothing in a space (a no-op
re-run) skips it there, and reports it skipped.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection
from typing import Any

import numpy as np

from omnivec.config import Settings
from omnivec.encoders import load_encoder
from omnivec.errors import DecodeError
from omnivec.pipeline.batch import _open
from omnivec.pipeline.plan import WorkItem
from omnivec.pipeline.spaces import SpaceState
from omnivec.store.store import Store, sql_in

MAX_SEGMENTS = 3  # per item: the first chunks/windows are enough to see drift
SKIPPED_NO_WRITES = "no vectors written in this run"


def check_drift(store: Store, states: dict[str, SpaceState], settings: Settings,
                written: Collection[str] | None = None,
                inside: tuple[str, ...] | None = None) -> dict[str, dict[str, Any]]:
    """space -> {"items", "segments", "min_cosine", "ok"} for every available space with stored vectors.

    ``written``: the vector tables this run wrote rows to (None: check every space). A space that got
    no new vectors is not checked (nothing was mixed into it, and its model need not be loaded for
    the check); it is reported as ``{"skipped": True, "reason": ...}``."""
    if settings.canary_sample <= 0:
        return {}
    out: dict[str, dict[str, Any]] = {}
    check = []
    for name, st in states.items():
        if not st.available or st.table is None or store.table(st.table) is None:
            continue
        if written is not None and st.table not in written:
            out[name] = {"skipped": True, "reason": SKIPPED_NO_WRITES}
        else:
            check.append((name, st))
    if not check:
        return out
    items = [r for r in store.read("items", ["item_id", "uri", "modality", "content_hash", "status"]).to_pylist()
             if r["status"] == "ok"]
    items.sort(key=lambda r: r["item_id"])
    for name, st in check:
        assert st.table is not None
        sample = []
        for modality in sorted(st.modalities):
            sample += [r for r in items if r["modality"] == modality][: settings.canary_sample]
        if not sample:
            continue
        stored = {r["vector_id"]: np.asarray(r["vector"], dtype=np.float32) for r in store.read(
            st.table, ["vector_id", "vector"], where=sql_in("item_id", [r["item_id"] for r in sample])).to_pylist()}
        enc = load_encoder(settings.spaces[name], settings.device)
        cosines: list[float] = []
        checked = 0
        for r in sample:
            w = WorkItem(r["uri"], r["item_id"], r["modality"], 0, 0, (name,), inside=inside)  # the run's link rule
            try:
                opened = _open(w, settings)
                if opened.content_hash != r["content_hash"]:
                    continue  # changed since it was embedded: not a fair comparison
                segs = list(itertools.islice(enc.segments(r["modality"], opened.decode()), MAX_SEGMENTS))
            except (DecodeError, OSError):
                continue
            pairs = [(stored[f"{r['item_id']}:{i}"], s) for i, s in enumerate(segs) if f"{r['item_id']}:{i}" in stored]
            if not pairs:
                continue
            fresh = enc.embed(r["modality"], [s.payload for _, s in pairs])
            cosines += [float(np.dot(old, new)) for (old, _), new in zip(pairs, fresh, strict=True)]
            checked += 1
        if cosines:
            low = min(cosines)
            out[name] = {"items": checked, "segments": len(cosines), "min_cosine": round(low, 6),
                         "ok": low >= settings.canary_tolerance}
    return out
