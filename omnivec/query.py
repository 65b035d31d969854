"""Encode a query with every space that can take it, search each, and fuse the ranked lists.

A text query goes to every enabled space that embeds text (clip, clap, text), an image query to the
spaces that embed images (clip), an audio query to those that embed audio (clap). Each space's
per-file ranking (and, with ``hybrid``, a full-text ranking over text chunks) is fused with
reciprocal rank fusion. With a single ranked list, scores are cosine similarities; fused, they are
RRF scores and each hit lists its rank in every list that found it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from omnivec.config import Settings, load_settings
from omnivec.encoders import encoder_class, load_encoder
from omnivec.errors import DecodeError, OmnivecError, SpaceAbsentError, SpaceMismatchError, SpaceRetiredError
from omnivec.exact import cosines
from omnivec.filters import parse_filters, to_sql
from omnivec.fusion import rrf
from omnivec.media import decode_image, read_file
from omnivec.pipeline.spaces import resolve_spaces
from omnivec.store.coverage import Committed, committed, items_as_of
from omnivec.store.datasets import dataset
from omnivec.store.history import check_run, open_as_of, parse_as_of
from omnivec.store.schema import vectors_table_name
from omnivec.store.store import Store

MODALITY_FILTERS = ("image", "text", "audio")
FTS_COLUMN = "text"
_COLS = ["item_id", "uri", "modality", "segment", "char_start", "char_end", "start_s", "end_s", "text",
         "content_hash"]


@dataclass(frozen=True, slots=True)
class Hit:
    uri: str
    modality: str
    score: float  # cosine similarity for one ranked list; the RRF score when lists are fused
    space: str  # the space (or "fts:<space>") that ranked this file best
    item_id: str
    segment: int  # the best-matching chunk or window of the file
    char_start: int | None = None
    char_end: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    text: str | None = None
    ranks: dict[str, int] = field(default_factory=dict)  # list -> 1-based rank there
    scores: dict[str, float] = field(default_factory=dict)  # list -> cosine (or BM25 for fts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def space_table(store: Store, space: str, space_id: str | None = None,
                as_of: int | str | datetime | None = None) -> tuple[Any, str]:
    """(table, space_id) for a space identity; without ``space_id``, the newest active one of the name.
    With ``as_of``, the table as that run, version or time left it.

    A space_id the store has no vectors for is refused with the spaces that exist and how to pick one.
    """
    rows = store.space_rows(space)
    active = [r for r in rows if r["status"] == "active"]
    if space_id is None and active:
        space_id = active[-1]["space_id"]
    retired = next((r for r in rows if r["space_id"] == space_id and r["status"] != "active"), None)
    if retired is not None:
        raise SpaceRetiredError(f"space {space!r} {space_id} ({retired['model']}) is {retired['status']}",
                                ["search with the model of an active space (`omnivec spaces` lists them)",
                                 f"or make it searchable again: omnivec spaces activate {space_id}"])
    name = vectors_table_name(space, space_id) if space_id else None
    if name is not None and as_of is not None:
        tbl = open_as_of(store, name, as_of)
        if tbl is None:
            raise SpaceAbsentError(f"space {space!r} {space_id} had no vectors as of {as_of}",
                               ["search a later run, version or time (`omnivec runs` lists them)"])
        return tbl, space_id or ""
    tbl = store.table(name) if name else None
    if tbl is not None:
        return tbl, space_id or ""
    have = [f"{r['name']} {r['space_id']} ({r['model']} / {r['pretrained']}, {r['status']})"
            for r in store.space_rows()]
    if space_id is None:
        raise OmnivecError(f"store {store.uri} has no vectors for space {space!r}",
                           [f"search one of the spaces it has: {'; '.join(have) or 'none yet'}",
                            "or ingest files first: omnivec ingest PATH"])
    raise SpaceMismatchError(
        f"store {store.uri} has no vectors of space {space!r} with space_id {space_id} (the configured "
        "model's recipe); the store holds: " + ("; ".join(have) or "nothing yet"),
        ["search with the model of one of those spaces (--model/--pretrained, --clap-model, --text-model)",
         "or ingest with the configured model first: it becomes a new space beside the old ones"])


def _where(modality: str | None, extra: str | None) -> str:
    if modality is not None and modality not in MODALITY_FILTERS:
        raise OmnivecError(f"unknown modality {modality!r}; use one of {', '.join(MODALITY_FILTERS)}")
    parts = ["segment >= 0"]
    if modality:
        parts.append(f"modality = '{modality}'")
    if extra:
        parts.append(f"({extra})")
    return " AND ".join(parts)


def _per_file(rows: list[dict[str, Any]], k: int, per_file: bool) -> list[dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for r in rows:  # rows come best first
        key = r["item_id"] if per_file else f"{r['item_id']}:{r['segment']}"
        best.setdefault(key, r)
    return list(best.values())[:k]


def _ranked(run: Any, k: int, per_file: bool, worse: Callable[[dict[str, Any]], float],
            keep: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """Run a query at growing depth until ``k`` distinct files are found (or rows run out).

    Equal scores (copies of one file have equal vectors) are ordered by uri, then segment, never by
    where rows happen to sit on disk: a query fetches one row more than it returns, and fetches
    deeper while that row ties with the last hit, so every row tied with it takes part in the choice.
    ``worse(row)``: a sort key, lower is better (a distance, or a negated score). ``keep`` drops rows
    that must not be answered (vectors no `items` row commits); the depth grows past them."""
    fetch = k + 1
    while True:
        got = run(fetch)
        rows = keep(got) if keep is not None else got
        rows = sorted(rows, key=lambda r: (worse(r), r["uri"], r["segment"]))
        hits = _per_file(rows, k, per_file)
        if len(got) < fetch or len(hits) >= k and worse(rows[-1]) > worse(hits[-1]):
            return hits
        fetch *= 4


@dataclass(frozen=True, slots=True)
class AnnParams:
    """Query-time settings of a vector index; None leaves LanceDB's default."""

    ef: int | None = None  # HNSW candidate list (LanceDB: 1.5 x the limit); raised to the limit when below
    refine_factor: int | None = None  # re-rank limit x this many candidates with the stored full vectors
    nprobes: int | None = None  # IVF partitions searched


# For tables with a vector index (the IVF_HNSW_SQ index omnivec.maintenance creates), tuned with
# benchmarks/query_latency.py on 1M clustered 512-dim vectors: recall@10 0.98 (LanceDB's default ef
# gave 0.94); a larger ef barely adds latency there, mostly recall headroom.
ANN_DEFAULTS = AnnParams(ef=40)

_FACTS: dict[tuple[str, str, int], tuple[bool, bool]] = {}


def _table_facts(store: Store, name: str, tbl: Any, version: int) -> tuple[bool, bool]:
    """(has a vector index, every row passes ``segment >= 0``) of this table version, found once per
    version: the second means no pooled file vectors, so the default filter keeps every row."""
    key = (store.uri, name, version)
    if key not in _FACTS:
        if len(_FACTS) >= 1024:
            _FACTS.clear()
        indexed = any(i.columns == ["vector"] for i in tbl.list_indices())
        _FACTS[key] = indexed, indexed and int(tbl.count_rows(_where(None, None))) == int(tbl.count_rows())
    return _FACTS[key]


def search_vector(store: Store, space: str, vector: np.ndarray, k: int = 10, modality: str | None = None,
                  per_file: bool = True, where_sql: str | None = None, space_id: str | None = None,
                  as_of: int | str | datetime | None = None, ann: AnnParams | None = None) -> list[Hit]:
    """Cosine top-k over one space's chunks and windows (each file once, by its best segment).

    Exact on a table without a vector index; on an indexed one, the candidates come from the index
    (``ann``, default :data:`ANN_DEFAULTS`) and are scored again exactly from their stored vectors, so a
    score is always the cosine similarity, whatever the index computes. Only committed rows are
    answered (their file's `items` row covers them: see :mod:`omnivec.store.coverage`).
    """
    tbl, sid = space_table(store, space, space_id, as_of)
    where: str | None = _where(modality, where_sql)
    vec = np.asarray(vector, dtype=np.float32)
    version = int(tbl.version)
    indexed, all_segments = _table_facts(store, vectors_table_name(space, sid), tbl, version)
    params = (ann or ANN_DEFAULTS) if indexed else None
    if indexed and all_segments and modality is None and not where_sql:
        where = None  # it would keep every row, and a prefilter slows the index search (~45 ms at 1M rows)
    covered = _committed(store, tbl, as_of)

    matrix = None
    if not indexed and as_of is None and not where_sql:
        from omnivec.exact import CACHE

        matrix = CACHE.get(tbl, version)  # exact top-k from memory; None when off or the table is too big

    ds = dataset(tbl, version)  # Lance's own scanner: ~1.5 ms less per query than LanceDB's query builder

    def run(n: int) -> list[dict[str, Any]]:
        if matrix is not None:
            return matrix.top(vec, n, modality, _COLS)  # with "_score"
        nearest: dict[str, Any] = {"column": "vector", "q": vec, "k": n, "metric": "cosine"}
        if params is not None:
            if params.nprobes:
                nearest["nprobes"] = params.nprobes
            if params.refine_factor:
                nearest["refine_factor"] = params.refine_factor
            if params.ef:  # Lance refuses an ef below the number of candidates it is asked for
                nearest["ef"] = max(params.ef, n * (params.refine_factor or 1))
        out = ds.to_table(columns=[*_COLS, "vector", "_distance"], nearest=nearest, filter=where,
                          prefilter=where is not None)
        scores = cosines(out.column("vector"), vec)  # an index's distance is approximate, and not a cosine
        rows = out.drop_columns(["vector", "_distance"]).to_pylist()
        for row, score in zip(rows, scores, strict=True):
            row["_score"] = float(score)
        return rows

    hits = _ranked(run, k, per_file, lambda r: -r["_score"], covered.keep)
    return [_hit(r, space, r["_score"]) for r in hits]


def _committed(store: Store, tbl: Any, as_of: int | str | datetime | None) -> Committed:
    """What the `items` table commits, in the state that goes with the vector table ``tbl``."""
    items = items_as_of(store, tbl, as_of)
    if items is None:
        return Committed(pa.array([], pa.string()), pa.array([], pa.string()))
    return committed(items)


def search_text_index(store: Store, space: str, query: str, k: int = 10, modality: str | None = None,
                      where_sql: str | None = None, space_id: str | None = None,
                      as_of: int | str | datetime | None = None) -> list[Hit]:
    """BM25 full-text search over a space's text chunks (needs its full-text index)."""
    tbl, _ = space_table(store, space, space_id, as_of)
    where = _where(modality, where_sql)
    covered = _committed(store, tbl, as_of)

    def run(n: int) -> list[dict[str, Any]]:
        q = tbl.search(query, query_type="fts", fts_columns=FTS_COLUMN).where(where, prefilter=True)
        return q.select([*_COLS, "_score"]).limit(n).to_list()

    try:
        hits = _ranked(run, k, True, lambda r: -float(r["_score"]), covered.keep)
        return [_hit(r, f"fts:{space}", float(r["_score"])) for r in hits]
    except Exception as exc:  # noqa: BLE001 - no index yet is a user-facing condition
        if "index" in str(exc).lower():
            raise OmnivecError(f"space {space!r} has no full-text index yet",
                               ["run `omnivec ingest` once more (it builds the index after writing text)"]) from None
        raise


def _hit(r: dict[str, Any], source: str, score: float) -> Hit:
    return Hit(uri=r["uri"], modality=r["modality"], score=score, space=source, item_id=r["item_id"],
               segment=int(r["segment"]), char_start=r["char_start"], char_end=r["char_end"],
               start_s=_round(r["start_s"]), end_s=_round(r["end_s"]), text=r["text"],
               ranks={source: 0}, scores={source: score})


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 3)


def fuse(lists: dict[str, list[Hit]], k: int) -> list[Hit]:
    """Reciprocal rank fusion of per-list hits (one entry per file in each list)."""
    nonempty = {name: hits for name, hits in lists.items() if hits}
    if len(nonempty) <= 1:
        hits = next(iter(nonempty.values()), [])
        return [_with_ranks(h, {h.space: i}, {h.space: h.score}, h.score) for i, h in enumerate(hits[:k], 1)]
    by_list = {name: {h.item_id: h for h in hits} for name, hits in nonempty.items()}
    out = []
    for item_id, score, ranks in rrf({n: [h.item_id for h in hits] for n, hits in nonempty.items()})[:k]:
        best_list = min(ranks, key=lambda n: (ranks[n], n))
        base = by_list[best_list][item_id]
        scores = {n: by_list[n][item_id].score for n in ranks}
        out.append(_with_ranks(base, dict(ranks), scores, score))
    return out


def _with_ranks(h: Hit, ranks: dict[str, int], scores: dict[str, float], score: float) -> Hit:
    d = asdict(h)
    d.update(ranks=ranks, scores=scores, score=score)
    return Hit(**d)


def searchable_spaces(settings: Settings, store: Store, query_modality: str, result_modality: str | None) -> list[str]:
    """Enabled spaces that embed the query's modality (and the result modality) and have vectors."""
    names = {name for name, _, _ in store.vector_tables()}
    out = []
    for name, cfg in settings.enabled_spaces().items():
        mods = encoder_class(cfg.encoder).modalities
        if query_modality in mods and (result_modality is None or result_modality in mods) and name in names:
            out.append(name)
    return out


def search(query: str | None = None, *, image: str | os.PathLike[str] | None = None,
           audio: str | os.PathLike[str] | None = None, k: int = 10, modality: str | None = None,
           space: str | None = None, where: list[str] | None = None, hybrid: bool = False,
           as_of: str | None = None, settings: Settings | None = None, store: str | Store | None = None,
           per_file: bool = True) -> list[Hit]:
    """Search the store with a text query, an image file or an audio file. Usable without Prefect::

        from omnivec import search
        hits = search("a red circle", k=5, store="./omnivec-data")
        hits = search("a dog barking", modality="audio", where=["uri=*/field-recordings/*"])

    ``space`` restricts the search to one space; ``where`` takes filters such as ``modality=image``,
    ``uri=GLOB``, ``after=ISO``, ``before=ISO``, ``run=RUN_NAME``; ``hybrid`` adds BM25 full-text
    ranking over text chunks to the fusion; ``as_of`` (a run name, a version number or an ISO time)
    searches the store as it was then.
    """
    if sum(x is not None for x in (query, image, audio)) != 1:
        raise OmnivecError("give exactly one of: a text query, an image file, an audio file")
    if query is not None and not query.strip():
        raise OmnivecError("the query is empty")
    if isinstance(store, Store):  # an open store (a service keeps one for all its requests)
        st = store
        settings = settings or load_settings(overrides={"store": store.uri})
    else:
        settings = settings or load_settings(overrides={"store": store} if store else None)
        st = Store(store or settings.store)
    settings = resolve_spaces(settings, st)
    query_modality = "audio" if audio is not None else "image" if image is not None else "text"
    if modality is not None and modality not in MODALITY_FILTERS:
        raise OmnivecError(f"unknown modality {modality!r}; use one of {', '.join(MODALITY_FILTERS)}")
    if space is not None:
        if space not in settings.spaces:
            raise OmnivecError(f"space {space!r} is not configured; configured: {', '.join(settings.spaces)}")
        spaces = [space]
    else:
        spaces = searchable_spaces(settings, st, query_modality, modality)
        if not spaces:
            raise OmnivecError(f"no space in store {st.uri} can answer a {query_modality} query"
                               + (f" for {modality} results" if modality else ""),
                               ["ingest files first: omnivec ingest PATH", "check which spaces are enabled"])
    runs = st.read("runs", ["run_name", "run_id"]).to_pylist()
    where_sql = to_sql(parse_filters(list(where or []), {r["run_name"]: r["run_id"] for r in runs}))
    lists: dict[str, list[Hit]] = {}
    when = parse_as_of(as_of) if as_of is not None else None
    if isinstance(when, str):
        check_run(st, when)
    ids: dict[str, str] = {}
    left_out: list[OmnivecError] = []
    for name in spaces:
        try:
            vector, sid = encode_query(st, name, settings, query, image, audio)
            lists[name] = search_vector(st, name, vector, k, modality, per_file, where_sql, sid, when)
        except (SpaceRetiredError, SpaceAbsentError) as exc:
            if space is not None:
                raise
            left_out.append(exc)  # searching every space: a retired one, or one created later, is left out
            continue
        ids[name] = sid
    if not ids and left_out:
        raise left_out[0]
    spaces = [n for n in spaces if n in ids]
    if hybrid and query is not None:
        for name in spaces:
            if encoder_class(settings.spaces[name].encoder).modalities >= {"text"}:
                lists[f"fts:{name}"] = search_text_index(st, name, query, k, modality, where_sql, ids[name], when)
                break  # one full-text list: text chunks are the same files in every space
    return fuse(lists, k)


def encode_query(st: Store, space: str, settings: Settings, query: str | None, image: Any,
                 audio: Any) -> tuple[np.ndarray, str]:
    """Embed the query with the configured encoder of ``space``; returns (vector, space_id). The store
    must hold vectors of exactly that space_id."""
    enc = load_encoder(settings.spaces[space], settings.device)
    space_table(st, space, enc.space_id)
    query_modality = "audio" if audio is not None else "image" if image is not None else "text"
    if query_modality not in enc.modalities:
        raise OmnivecError(f"space {space!r} cannot embed a {query_modality} query "
                           f"(it embeds {', '.join(sorted(enc.modalities))})")
    try:
        if image is not None:
            data = read_file(os.fspath(image), settings.max_image_bytes).data
            return enc.embed_query("image", decode_image(data, settings.max_image_pixels,
                                                             settings.max_image_decoded_bytes)), enc.space_id
        if audio is not None:
            from omnivec.audio import probe_query

            return enc.embed_query("audio", probe_query(os.fspath(audio), settings.max_query_audio_s),
                                   settings.space_batch_size(space)), enc.space_id
    except DecodeError as exc:
        raise OmnivecError(f"query file {image or audio}: {exc}") from None
    assert query is not None
    return enc.embed_query("text", query), enc.space_id
