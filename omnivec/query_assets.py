"""Search assets (groups of files) by their fused vectors in the joint spaces."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from omnivec.config import Settings, load_settings
from omnivec.encoders import encoder_class
from omnivec.errors import OmnivecError
from omnivec.fusion import rrf
from omnivec.pipeline.spaces import resolve_spaces
from omnivec.query import cosines, encode_query
from omnivec.store.schema import asset_table_name
from omnivec.store.store import Store


@dataclass(frozen=True, slots=True)
class AssetHit:
    asset_id: str
    key: str
    score: float  # cosine for one space, RRF score when several spaces are fused
    space: str  # the space that ranked this asset best
    members: list[dict[str, str]]  # [{"uri", "modality"}]
    ranks: dict[str, int] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def search_assets(query: str | None = None, *, image: str | os.PathLike[str] | None = None,
                  audio: str | os.PathLike[str] | None = None, k: int = 10, space: str | None = None,
                  settings: Settings | None = None, store: str | None = None) -> list[AssetHit]:
    """Assets whose fused vector is closest to the query, fused over the joint spaces."""
    if sum(x is not None for x in (query, image, audio)) != 1:
        raise OmnivecError("give exactly one of: a text query, an image file, an audio file")
    settings = settings or load_settings(overrides={"store": store} if store else None)
    st = Store(store or settings.store)
    settings = resolve_spaces(settings, st)
    qmod = "audio" if audio is not None else "image" if image is not None else "text"
    names = {n for n, _, _ in st.vector_tables()}
    spaces = [n for n, cfg in settings.enabled_spaces().items()
              if (space is None or n == space) and qmod in encoder_class(cfg.encoder).modalities
              and len(encoder_class(cfg.encoder).modalities) > 1 and n in names]
    if not spaces:
        raise OmnivecError(f"store {st.uri} has no asset vectors a {qmod} query can search",
                           ["group files into assets (same folder + same stem, or a manifest) and ingest them"])
    members = {r["asset_id"]: [{"uri": u, "modality": m} for u, m in zip(r["member_uris"], r["member_modalities"],
                                                                          strict=True)]
               for r in st.read("assets").to_pylist()}
    lists: dict[str, list[dict[str, Any]]] = {}
    for name in spaces:
        vec, space_id = encode_query(st, name, settings, query, image, audio)
        tbl: Any = st.table(asset_table_name(name, space_id))
        if tbl is None:
            continue
        q = np.asarray(vec, dtype=np.float32)
        found = tbl.search(q).distance_type("cosine").select(["asset_id", "key", "vector", "_distance"]) \
            .limit(k).to_arrow()
        scores = cosines(found.column("vector"), q)  # an ANN index's distance is neither exact nor a cosine
        rows = found.select(["asset_id", "key"]).to_pylist()
        for row, score in zip(rows, scores, strict=True):
            row["_score"] = float(score)
        lists[name] = sorted(rows, key=lambda r: (-r["_score"], r["key"]))
    if not lists:
        raise OmnivecError(f"store {st.uri} has no asset vectors a {qmod} query can search",
                           ["group files into assets (same folder + same stem, or a manifest) and ingest them"])
    if len(lists) == 1:
        name, rows = next(iter(lists.items()))
        return [AssetHit(r["asset_id"], r["key"], r["_score"], name, members.get(r["asset_id"], []),
                         {name: i}, {name: r["_score"]}) for i, r in enumerate(rows, 1)]
    by = {n: {r["asset_id"]: r for r in rows} for n, rows in lists.items()}
    out = []
    for asset_id, score, ranks in rrf({n: [r["asset_id"] for r in rows] for n, rows in lists.items()})[:k]:
        best = min(ranks, key=lambda n: (ranks[n], n))
        out.append(AssetHit(asset_id, by[best][asset_id]["key"], score, best, members.get(asset_id, []),
                            dict(ranks), {n: by[n][asset_id]["_score"] for n in ranks}))
    return out
