"""One batch of one modality: read + hash every file, decode what needs embedding, and stream its
segments through each space in fixed-size forwards.

Pure function of its inputs (work items, settings, space states): safe to run in a thread, a process
or on a remote worker. Loaded models come from the per-process encoder cache.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from omnivec.audio import probe
from omnivec.config import Settings
from omnivec.encoders import load_encoder
from omnivec.errors import DecodeError
from omnivec.manifests import is_manifest, read_caption
from omnivec.media import decode_image, decode_text, read_file
from omnivec.pipeline.embedder import EmbeddedSegment, SpaceEmbedder, pooled
from omnivec.pipeline.plan import WorkItem
from omnivec.pipeline.spaces import SpaceState
from omnivec.sources import sha256_bytes, sha256_file
from omnivec.store.schema import ERRORS, ITEMS, vectors_schema

POOLED_MODALITIES = frozenset({"audio"})  # files with many windows also get one pooled vector


@dataclass(slots=True)
class BatchResult:
    modality: str
    items: pa.Table
    errors: pa.Table
    vectors: dict[str, pa.Table] = field(default_factory=dict)  # space -> rows
    replace: dict[str, list[str]] = field(default_factory=dict)  # space -> item_ids to replace
    cleared: list[str] = field(default_factory=list)  # item_ids whose old errors are resolved
    counts: Counter[str] = field(default_factory=Counter)  # new/changed/resumed/unchanged/pending/failed
    seconds: dict[str, float] = field(default_factory=dict)  # read / decode / encode


@dataclass(slots=True)
class _Opened:
    content_hash: str
    size: int
    mtime_ns: int
    decode: Callable[[], Any]


def _open(w: WorkItem, settings: Settings) -> _Opened:
    """Read and hash one file; decoding is deferred until we know it is needed."""
    if w.modality == "audio":  # streamed twice (hash, then decode): never whole in memory
        try:
            st = os.stat(w.uri)
        except OSError as exc:
            raise DecodeError(f"cannot read the file: {exc.strerror or exc}", stage="read") from None
        if st.st_size == 0:
            raise DecodeError("file is empty (0 bytes)", stage="read")
        try:
            digest = sha256_file(w.uri)
        except OSError as exc:
            raise DecodeError(f"cannot read the file: {exc.strerror or exc}", stage="read") from None
        return _Opened(digest, st.st_size, st.st_mtime_ns, lambda: probe(w.uri))
    if w.modality == "text" and "#row=" in w.uri and is_manifest(w.uri.partition("#")[0]):
        caption = read_caption(w.uri).encode("utf-8")  # inline text of a manifest row
        mtime = os.stat(w.uri.partition("#")[0]).st_mtime_ns
        return _Opened(sha256_bytes(caption), len(caption), mtime, lambda: decode_text(caption))
    limit = settings.max_text_bytes if w.modality == "text" else settings.max_image_bytes
    fb = read_file(w.uri, limit)
    if w.modality == "image":
        return _Opened(sha256_bytes(fb.data), fb.size, fb.mtime_ns,
                       lambda: decode_image(fb.data, settings.max_image_pixels))
    if w.modality == "text":
        return _Opened(sha256_bytes(fb.data), fb.size, fb.mtime_ns, lambda: decode_text(fb.data))
    raise DecodeError(f"no decoder for modality {w.modality!r}")


def _error_row(w: WorkItem, space: str | None, stage: str, exc: BaseException, content_hash: str | None,
               run_id: str, now: datetime) -> dict[str, Any]:
    return {
        "error_id": f"{w.item_id}:{space or '*'}", "item_id": w.item_id, "uri": w.uri,
        "content_hash": content_hash, "modality": w.modality, "space": space, "stage": stage,
        "error_class": type(exc).__name__, "message": str(exc), "attempts": 1, "run_id": run_id,
        "created_at": now,
    }


def process_batch(work: list[WorkItem], settings: Settings, spaces: dict[str, SpaceState],
                  run_id: str) -> BatchResult:
    now = datetime.now(UTC)
    modality = work[0].modality
    timing: defaultdict[str, float] = defaultdict(float)
    counts: Counter[str] = Counter()
    items: dict[str, dict[str, Any]] = {}
    errors: list[dict[str, Any]] = []
    hashes: dict[str, str] = {}
    embedders: dict[str, SpaceEmbedder] = {}
    failed: set[str] = set()
    undecodable: set[str] = set()
    touched: dict[str, list[str]] = {}  # space -> items whose vectors this batch replaces

    def fail(w: WorkItem, space: str | None, stage: str, exc: BaseException) -> None:
        errors.append(_error_row(w, space, stage, exc, hashes.get(w.item_id, w.prev_hash), run_id, now))
        failed.add(w.item_id)
        if space is None:
            undecodable.add(w.item_id)

    for w in work:
        t0 = time.perf_counter()
        try:
            opened = _open(w, settings)
        except DecodeError as exc:
            timing["read"] += time.perf_counter() - t0
            items[w.item_id] = _item_row(w, w.prev_hash, w.size, w.mtime_ns, "error", run_id, now)
            fail(w, None, exc.stage, exc)
            continue
        h = hashes[w.item_id] = opened.content_hash
        timing["read"] += time.perf_counter() - t0
        have = set(w.have) if h == w.prev_hash else set()
        need = [s for s in w.spaces if s not in have]
        runnable = [s for s in need if spaces[s].available]
        missing = set(need) - set(runnable)
        items[w.item_id] = _item_row(w, h, opened.size, opened.mtime_ns, "pending" if missing else "ok",
                                     run_id, now)
        if not runnable:
            # nothing to encode: still pending, confirmed unchanged by hash, or no space takes it
            counts["pending" if missing else "unchanged" if h == w.prev_hash else w.kind] += 1
            continue
        t1 = time.perf_counter()
        try:
            content = opened.decode()
        except DecodeError as exc:
            timing["decode"] += time.perf_counter() - t1
            fail(w, None, exc.stage, exc)
            continue
        timing["decode"] += time.perf_counter() - t1
        for space in runnable:
            touched.setdefault(space, []).append(w.item_id)
            emb = embedders.get(space)
            if emb is None:
                enc = load_encoder(settings.spaces[space], settings.device)
                emb = embedders[space] = SpaceEmbedder(enc, modality, settings.space_batch_size(space))
            t2 = time.perf_counter()
            n = 0
            try:
                for seg in emb.encoder.segments(modality, content):  # lazy for audio
                    emb.add(w.item_id, seg)
                    n += 1
                if n == 0:
                    raise DecodeError("nothing to embed after splitting")
            except DecodeError as exc:  # corrupt data found mid-stream
                emb.drop(w.item_id, exc)
                fail(w, None, exc.stage, exc)
            except Exception as exc:  # noqa: BLE001 - recorded as an errors row
                emb.drop(w.item_id, exc)
                fail(w, space, "prepare", exc)
            timing["encode"] += time.perf_counter() - t2  # streamed decode + forwards, interleaved
            if w.item_id in undecodable:
                break

    vectors: dict[str, pa.Table] = {}
    t3 = time.perf_counter()
    for space, emb in embedders.items():
        done = emb.finish()
        for item_id, enc_exc in emb.failed.items():
            if item_id not in failed:
                fail(next(w for w in work if w.item_id == item_id), space, "encode", enc_exc)
        by_id = {w.item_id: w for w in work}
        vectors[space] = _vector_rows(
            [(by_id[i], segs) for i, segs in done.items() if i not in undecodable], hashes, spaces[space],
            run_id, now, pool=modality in POOLED_MODALITIES)
    timing["encode"] += time.perf_counter() - t3

    replace = {space: sorted(set(ids)) for space, ids in touched.items()}
    for item_id in failed:
        items[item_id]["status"] = "error"
    for space in spaces:  # vectors of content that can no longer be read or decoded are stale
        stale = undecodable - set(replace.get(space, ()))
        if stale:
            replace[space] = sorted(set(replace.get(space, ())) | stale)
    touched_ids = {i for ids in touched.values() for i in ids}
    for w in work:
        if w.item_id in failed:
            counts["failed"] += 1
        elif w.item_id in touched_ids:
            counts[w.kind] += 1
    cleared = [i for i, row in items.items() if row["status"] != "error"]
    return BatchResult(
        modality, pa.Table.from_pylist(list(items.values()), schema=ITEMS),
        pa.Table.from_pylist(errors, schema=ERRORS), vectors, replace, cleared, counts, dict(timing),
    )


def _item_row(w: WorkItem, h: str | None, size: int, mtime_ns: int, status: str, run_id: str,
              now: datetime) -> dict[str, Any]:
    return {"item_id": w.item_id, "uri": w.uri, "modality": w.modality, "content_hash": h,
            "size": size, "mtime_ns": mtime_ns, "status": status,
            "first_run": w.first_run or run_id, "last_run": run_id, "updated_at": now}


def _vector_rows(done: list[tuple[WorkItem, list[EmbeddedSegment]]], hashes: dict[str, str],
                 space: SpaceState, run_id: str, now: datetime, pool: bool) -> pa.Table:
    assert space.dimension is not None
    rows: list[tuple[WorkItem, EmbeddedSegment]] = []
    for w, segs in done:
        rows += [(w, s) for s in segs]
        if pool and segs:
            rows.append((w, pooled(segs)))
    n = len(rows)
    vecs = np.stack([s.vector for _, s in rows]) if rows else np.zeros((0, space.dimension), np.float32)
    cols = {
        "vector_id": [f"{w.item_id}:{s.index}" for w, s in rows],
        "item_id": [w.item_id for w, _ in rows],
        "uri": [w.uri for w, _ in rows],
        "modality": [w.modality for w, _ in rows],
        "content_hash": [hashes[w.item_id] for w, _ in rows],
        "space_id": [space.space_id] * n,
        "segment": [s.index for _, s in rows],
        "char_start": [s.char_start for _, s in rows],
        "char_end": [s.char_end for _, s in rows],
        "start_s": [s.start_s for _, s in rows],
        "end_s": [s.end_s for _, s in rows],
        "text": [s.text for _, s in rows],
        "vector": pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(vecs, dtype=np.float32).reshape(-1)), space.dimension),
        "run_id": [run_id] * n,
        "created_at": [now] * n,
    }
    return pa.table(cols, schema=vectors_schema(space.dimension))
