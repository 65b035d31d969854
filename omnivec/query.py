"""Encode a query with the space it searches, and search that space's vector table."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from omnivec.config import Settings, load_settings
from omnivec.encoders import load_encoder
from omnivec.errors import OmnivecError, SpaceMismatchError
from omnivec.media import decode_image, read_file
from omnivec.store.schema import vectors_table_name
from omnivec.store.store import RECIPE_KEY, SPACE_ID_KEY, Store

MODALITY_FILTERS = ("image", "text")


@dataclass(frozen=True, slots=True)
class Hit:
    uri: str
    modality: str
    score: float  # cosine similarity, 1.0 = same direction
    space: str
    item_id: str
    segment: int
    char_start: int | None = None
    char_end: int | None = None
    text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _table_identity(store: Store, space: str) -> tuple[Any, str, dict[str, Any]]:
    name = vectors_table_name(space)
    tbl = store.table(name)
    if tbl is None:
        have = [t[len("vectors_"):] for t in store.table_names() if t.startswith("vectors_")]
        raise OmnivecError(f"store {store.uri} has no vectors for space {space!r}",
                           [f"search one of the spaces it has: {', '.join(have) or 'none yet'}",
                            "or ingest files first: omnivec ingest PATH"])
    meta = tbl.schema.metadata or {}
    return tbl, meta.get(SPACE_ID_KEY.encode(), b"").decode(), json.loads(
        meta.get(RECIPE_KEY.encode(), b"{}").decode())


def search_vector(store: Store, space: str, vector: np.ndarray, k: int = 10,
                  modality: str | None = None) -> list[Hit]:
    """Exact cosine top-k over a space's table (optionally one result modality)."""
    if modality is not None and modality not in MODALITY_FILTERS:
        raise OmnivecError(f"unknown modality {modality!r}; use one of {', '.join(MODALITY_FILTERS)}")
    tbl, _, _ = _table_identity(store, space)
    q = tbl.search(np.asarray(vector, dtype=np.float32)).distance_type("cosine")
    if modality:
        q = q.where(f"modality = '{modality}'", prefilter=True)
    cols = ["item_id", "uri", "modality", "segment", "char_start", "char_end", "text", "_distance"]
    rows = q.select(cols).limit(k).to_list()
    return [Hit(uri=r["uri"], modality=r["modality"], score=float(1.0 - r["_distance"]), space=space,
                item_id=r["item_id"], segment=int(r["segment"]), char_start=r["char_start"],
                char_end=r["char_end"], text=r["text"]) for r in rows]


def search(query: str | None = None, *, image: str | os.PathLike[str] | None = None, k: int = 10,
           modality: str | None = None, space: str = "clip", settings: Settings | None = None,
           store: str | None = None) -> list[Hit]:
    """Search the store with a text query or an image file. Usable without Prefect::

        from omnivec import search
        hits = search("a red circle", k=5, store="./omnivec-data")
    """
    if (query is None) == (image is None):
        raise OmnivecError("give either a text query or an image, not both or neither")
    settings = settings or load_settings(overrides={"store": store} if store else None)
    if space not in settings.spaces:
        raise OmnivecError(f"space {space!r} is not configured; configured: {', '.join(settings.spaces)}")
    st = Store(store or settings.store)
    _, stored_id, stored_recipe = _table_identity(st, space)
    enc = load_encoder(settings.spaces[space], settings.device)
    if stored_id and enc.space_id != stored_id:
        raise SpaceMismatchError(
            f"the query encoder for space {space!r} is space_id {enc.space_id} "
            f"({enc.recipe.get('model')} / {enc.recipe.get('pretrained')}), but the store's vectors "
            f"are space_id {stored_id} ({stored_recipe.get('model')} / {stored_recipe.get('pretrained')})",
            [f"search with the model that built them: --model {stored_recipe.get('model')} "
             f"--pretrained {stored_recipe.get('pretrained') or 'none'}",
             "or re-ingest into a new store with the new model"],
        )
    if image is not None:
        data = read_file(os.fspath(image), settings.max_image_bytes).data
        vector = enc.embed_query("image", decode_image(data, settings.max_image_pixels))
    else:
        assert query is not None
        if not query.strip():
            raise OmnivecError("the query is empty")
        vector = enc.embed_query("text", query)
    return search_vector(st, space, vector, k, modality)
