"""Encode a query with the space it searches, and search that space's vector table."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from omnivec.config import Settings, load_settings
from omnivec.encoders import load_encoder
from omnivec.errors import DecodeError, OmnivecError, SpaceMismatchError
from omnivec.media import decode_image, read_file
from omnivec.store.schema import vectors_table_name
from omnivec.store.store import RECIPE_KEY, SPACE_ID_KEY, Store

MODALITY_FILTERS = ("image", "text", "audio")
DEFAULT_SPACE = {"audio": "clap", "image": "clip", "text": "clip", None: "clip"}


@dataclass(frozen=True, slots=True)
class Hit:
    uri: str
    modality: str
    score: float  # cosine similarity, 1.0 = same direction
    space: str
    item_id: str
    segment: int  # the best-matching chunk or window of the file
    char_start: int | None = None
    char_end: int | None = None
    start_s: float | None = None
    end_s: float | None = None
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


def search_vector(store: Store, space: str, vector: np.ndarray, k: int = 10, modality: str | None = None,
                  per_file: bool = True) -> list[Hit]:
    """Exact cosine top-k over a space's chunks and windows (optionally one result modality).

    With ``per_file`` (default) each file appears once, with its best-matching segment.
    """
    if modality is not None and modality not in MODALITY_FILTERS:
        raise OmnivecError(f"unknown modality {modality!r}; use one of {', '.join(MODALITY_FILTERS)}")
    tbl, _, _ = _table_identity(store, space)
    where = "segment >= 0" + (f" AND modality = '{modality}'" if modality else "")
    cols = ["item_id", "uri", "modality", "segment", "char_start", "char_end", "start_s", "end_s", "text",
            "_distance"]
    fetch = k
    while True:
        q = tbl.search(np.asarray(vector, dtype=np.float32)).distance_type("cosine")
        rows = q.where(where, prefilter=True).select(cols).limit(fetch).to_list()
        hits: dict[str, dict[str, Any]] = {}
        for r in rows:  # rows come best first
            if not per_file or r["item_id"] not in hits:
                hits[r["item_id"] if per_file else f"{r['item_id']}:{r['segment']}"] = r
        if len(hits) >= k or len(rows) < fetch:
            break
        fetch *= 4  # many segments of the same files: look deeper
    return [Hit(uri=r["uri"], modality=r["modality"], score=float(1.0 - r["_distance"]), space=space,
                item_id=r["item_id"], segment=int(r["segment"]), char_start=r["char_start"],
                char_end=r["char_end"], start_s=_round(r["start_s"]), end_s=_round(r["end_s"]), text=r["text"])
            for r in list(hits.values())[:k]]


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 3)


def search(query: str | None = None, *, image: str | os.PathLike[str] | None = None,
           audio: str | os.PathLike[str] | None = None, k: int = 10, modality: str | None = None,
           space: str | None = None, settings: Settings | None = None, store: str | None = None,
           per_file: bool = True) -> list[Hit]:
    """Search the store with a text query, an image file or an audio file. Usable without Prefect::

        from omnivec import search
        hits = search("a red circle", k=5, store="./omnivec-data")

    The space defaults to ``clap`` for audio (a query file or ``modality="audio"``) and ``clip``
    otherwise.
    """
    if sum(x is not None for x in (query, image, audio)) != 1:
        raise OmnivecError("give exactly one of: a text query, an image file, an audio file")
    settings = settings or load_settings(overrides={"store": store} if store else None)
    space = space or DEFAULT_SPACE["audio" if audio is not None else "image" if image is not None else modality]
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
    query_modality = "audio" if audio is not None else "image" if image is not None else "text"
    if query_modality not in enc.modalities:
        raise OmnivecError(f"space {space!r} cannot embed a {query_modality} query "
                           f"(it embeds {', '.join(sorted(enc.modalities))})")
    try:
        if image is not None:
            data = read_file(os.fspath(image), settings.max_image_bytes).data
            vector = enc.embed_query("image", decode_image(data, settings.max_image_pixels))
        elif audio is not None:
            from omnivec.audio import probe

            vector = enc.embed_query("audio", probe(os.fspath(audio)))
    except DecodeError as exc:
        raise OmnivecError(f"query file {image or audio}: {exc}") from None
    if query is not None:
        if not query.strip():
            raise OmnivecError("the query is empty")
        vector = enc.embed_query("text", query)
    return search_vector(st, space, vector, k, modality, per_file)
