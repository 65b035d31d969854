"""Assets: files that belong together, and their fused vectors in each joint space.

Rule 1: files in the same folder with the same stem (``dog.jpg``, ``dog.txt``, ``dog.wav``).
Rule 2: each row of a manifest (see :mod:`omnivec.manifests`).
An asset's vector in a joint space (one that embeds several modalities: clip, clap) is the
normalised weighted mean of its members' vectors there; a member's vector is its pooled vector
(audio) or the normalised mean of its segments (text chunks); members a space does not embed are
left out. Weights per modality come from ``asset_weights``.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from omnivec.config import Settings
from omnivec.encoders.base import l2_normalise
from omnivec.pipeline.spaces import SpaceState
from omnivec.sources import Discovery, item_id_for
from omnivec.store.schema import ASSETS, asset_table_name, asset_vectors_schema
from omnivec.store.store import Store, sql_in


def asset_id_for(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def groups(discovery: Discovery) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(key, rule, [(uri, modality)]) for every asset the walk found."""
    modality = {f.uri: f.modality for f in discovery.files}
    by_stem: dict[str, list[str]] = defaultdict(list)
    for f in discovery.files:
        if "#" not in f.uri:
            by_stem[os.path.splitext(f.uri)[0]].append(f.uri)
    out = [(stem, "stem", [(u, modality[u]) for u in sorted(uris)])
           for stem, uris in sorted(by_stem.items()) if len(uris) > 1]
    out += [(key, "manifest", [(u, modality[u]) for u in uris if u in modality])
            for key, uris in discovery.manifest_assets]
    return out


def _member_vectors(store: Store, table: str, item_ids: list[str]) -> dict[str, np.ndarray]:
    vecs: dict[str, list[np.ndarray]] = defaultdict(list)
    pooled: dict[str, np.ndarray] = {}
    for start in range(0, len(item_ids), 2000):
        rows = store.read(table, ["item_id", "segment", "vector"],
                          where=sql_in("item_id", item_ids[start : start + 2000])).to_pylist()
        for r in rows:
            v = np.asarray(r["vector"], dtype=np.float32)
            if r["segment"] < 0:
                pooled[r["item_id"]] = v
            else:
                vecs[r["item_id"]].append(v)
    out = {i: l2_normalise(np.stack(v).mean(axis=0, keepdims=True))[0] for i, v in vecs.items()}
    out.update(pooled)
    return out


def update_assets(store: Store, discovery: Discovery, states: dict[str, SpaceState], settings: Settings,
                  run_id: str) -> int:
    """Write the `assets` rows of this walk and their fused vectors; drop assets that vanished."""
    found = groups(discovery)
    now = datetime.now(UTC)
    rows = [{"asset_id": asset_id_for(key), "key": key, "rule": rule,
             "member_ids": [item_id_for(u) for u, _ in members], "member_uris": [u for u, _ in members],
             "member_modalities": [m for _, m in members], "run_id": run_id, "updated_at": now}
            for key, rule, members in found if members]
    live = {r["asset_id"] for r in rows}
    gone = [r["asset_id"] for r in store.read("assets", ["asset_id", "key"]).to_pylist()
            if r["asset_id"] not in live and discovery.owns(r["key"])]
    if rows:
        store.upsert("assets", pa.Table.from_pylist(rows, schema=ASSETS))
    for start in range(0, len(gone), 2000):
        store.delete("assets", sql_in("asset_id", gone[start : start + 2000]))
    for name, st in states.items():
        if len(st.modalities) < 2 or st.table is None or store.table(st.table) is None:
            continue  # only joint spaces get asset vectors
        _write_space(store, name, st, rows, discovery, settings.asset_weights, now)
    return len(rows)


def _write_space(store: Store, space: str, st: SpaceState, rows: list[dict[str, Any]], discovery: Discovery,
                 weights: dict[str, float], now: datetime) -> None:
    assert st.space_id is not None and st.table is not None
    table = asset_table_name(space, st.space_id)
    ids = sorted({i for r in rows for i in r["member_ids"]})
    member = _member_vectors(store, st.table, ids) if ids else {}
    dim = st.dimension or next((v.shape[0] for v in member.values()), 0)
    out = []
    for r in rows:
        parts = [(member[i], weights.get(m, 1.0)) for i, m in zip(r["member_ids"], r["member_modalities"], strict=True)
                 if i in member and weights.get(m, 1.0) > 0]
        if not parts:
            continue
        mean = sum(w * v for v, w in parts) / sum(w for _, w in parts)
        out.append({"asset_id": r["asset_id"], "key": r["key"], "space_id": st.space_id,
                    "member_uris": r["member_uris"], "members_used": len(parts),
                    "vector": l2_normalise(np.asarray(mean)[None, :])[0].tolist(), "updated_at": now})
    if store.table(table) is None:
        if not out or not dim:
            return
        store.ensure(table, asset_vectors_schema(dim), "asset_id")
    # what the table holds beyond this walk's assets: from the table itself, not from the `assets` rows
    # dropped above, which a run killed after that drop would no longer show the next run
    kept = {o["asset_id"] for o in out}
    stale = [r["asset_id"] for r in store.read(table, ["asset_id", "key"]).to_pylist()
             if r["asset_id"] not in kept and discovery.owns(r["key"])]
    if out:
        store.upsert(table, pa.Table.from_pylist(out, schema=asset_vectors_schema(dim)), key="asset_id")
    for start in range(0, len(stale), 2000):
        store.delete(table, sql_in("asset_id", stale[start : start + 2000]))
