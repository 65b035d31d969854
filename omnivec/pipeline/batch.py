"""One batch of one modality: read + hash + decode every file, then one forward per space.

Pure function of its inputs (work items, settings, space states): safe to run in a thread,
a process or on a remote worker. Loaded models come from the per-process encoder cache.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from omnivec.config import Settings
from omnivec.encoders import Segment, load_encoder
from omnivec.errors import DecodeError
from omnivec.media import decode_image, decode_text, read_file
from omnivec.pipeline.plan import WorkItem
from omnivec.pipeline.spaces import SpaceState
from omnivec.sources import sha256_bytes
from omnivec.store.schema import ERRORS, ITEMS, vectors_schema


@dataclass(slots=True)
class BatchResult:
    modality: str
    items: pa.Table
    errors: pa.Table
    vectors: dict[str, pa.Table] = field(default_factory=dict)  # space -> rows
    replace: dict[str, list[str]] = field(default_factory=dict)  # space -> item_ids to replace
    cleared: list[str] = field(default_factory=list)  # item_ids whose old errors are resolved
    counts: Counter[str] = field(default_factory=Counter)  # new/changed/pending/unchanged/failed
    seconds: dict[str, float] = field(default_factory=dict)  # read / decode / encode


def _decode(modality: str, data: bytes, settings: Settings) -> Any:
    if modality == "image":
        return decode_image(data, settings.max_image_pixels)
    if modality == "text":
        return decode_text(data)
    raise DecodeError(f"no decoder for modality {modality!r}")


def _error_row(w: WorkItem, space: str | None, stage: str, exc: BaseException, content_hash: str | None,
               run_id: str, now: datetime) -> dict[str, Any]:
    return {
        "error_id": f"{w.item_id}:{space or '*'}", "item_id": w.item_id, "uri": w.uri,
        "content_hash": content_hash, "modality": w.modality, "space": space, "stage": stage,
        "error_class": type(exc).__name__, "message": str(exc), "attempts": 1, "run_id": run_id,
        "created_at": now,
    }


def _embed_space(enc: Any, modality: str, segs: list[tuple[WorkItem, int, Segment]],
                 batch_size: int) -> tuple[np.ndarray, dict[str, BaseException]]:
    """Embed all segments in forwards of ``batch_size``; a failing forward is retried item by
    item so one bad file cannot take its neighbours down."""
    vecs = np.zeros((len(segs), enc.dimension), dtype=np.float32)
    failed: dict[str, BaseException] = {}
    for start in range(0, len(segs), batch_size):
        part = segs[start : start + batch_size]
        try:
            vecs[start : start + len(part)] = enc.embed(modality, [s.payload for _, _, s in part])
        except Exception:
            for offset, (w, _, s) in enumerate(part):
                if w.item_id in failed:
                    continue
                try:
                    vecs[start + offset] = enc.embed(modality, [s.payload])[0]
                except Exception as exc:  # noqa: BLE001 - recorded as an errors row
                    failed[w.item_id] = exc
    finite = np.asarray(np.isfinite(vecs).all(axis=1), dtype=bool)
    bad = [not bool(finite[i]) for i in range(len(segs))]
    for (w, _, _), is_bad in zip(segs, bad, strict=True):
        if is_bad and w.item_id not in failed:
            failed[w.item_id] = ValueError("the model produced a non-finite vector")
    return vecs, failed


def process_batch(work: list[WorkItem], settings: Settings, spaces: dict[str, SpaceState],
                  run_id: str) -> BatchResult:
    now = datetime.now(UTC)
    modality = work[0].modality
    timing: defaultdict[str, float] = defaultdict(float)
    counts: Counter[str] = Counter()
    items: dict[str, dict[str, Any]] = {}
    errors: list[dict[str, Any]] = []
    hashes: dict[str, str] = {}
    todo: dict[str, list[tuple[WorkItem, int, Segment]]] = {}
    missing: dict[str, set[str]] = {}  # item_id -> spaces still without vectors
    failed_items: set[str] = set()
    undecodable: set[str] = set()
    replace: dict[str, list[str]] = {}

    for w in work:
        t0 = time.perf_counter()
        try:
            fb = read_file(w.uri, settings.max_text_bytes if modality == "text" else settings.max_image_bytes)
        except DecodeError as exc:
            timing["read"] += time.perf_counter() - t0
            errors.append(_error_row(w, None, exc.stage, exc, w.prev_hash, run_id, now))
            failed_items.add(w.item_id)
            undecodable.add(w.item_id)
            items[w.item_id] = _item_row(w, w.prev_hash, w.size, w.mtime_ns, "error", run_id, now)
            continue
        h = sha256_bytes(fb.data)
        hashes[w.item_id] = h
        timing["read"] += time.perf_counter() - t0
        have = set(w.have) if h == w.prev_hash else set()
        need = [s for s in w.spaces if s not in have]
        runnable = [s for s in need if spaces[s].available]
        missing[w.item_id] = set(need) - set(runnable)
        status = "pending" if missing[w.item_id] else "ok"
        items[w.item_id] = _item_row(w, h, fb.size, fb.mtime_ns, status, run_id, now)
        if not runnable:
            # nothing to encode: still pending, confirmed unchanged by hash, or no space takes it
            counts["pending" if missing[w.item_id] else "unchanged" if h == w.prev_hash else w.kind] += 1
            continue
        t1 = time.perf_counter()
        try:
            content = _decode(modality, fb.data, settings)
        except DecodeError as exc:
            timing["decode"] += time.perf_counter() - t1
            errors.append(_error_row(w, None, exc.stage, exc, h, run_id, now))
            failed_items.add(w.item_id)
            undecodable.add(w.item_id)
            continue
        for space in runnable:
            enc = load_encoder(settings.spaces[space], settings.device)
            try:
                pieces = enc.segments(modality, content)
                if not pieces:
                    raise DecodeError("nothing to embed after splitting")
            except Exception as prep_exc:  # noqa: BLE001 - recorded as an errors row
                errors.append(_error_row(w, space, "prepare", prep_exc, h, run_id, now))
                failed_items.add(w.item_id)
                continue
            todo.setdefault(space, []).extend((w, i, s) for i, s in enumerate(pieces))
        timing["decode"] += time.perf_counter() - t1

    vectors: dict[str, pa.Table] = {}
    t2 = time.perf_counter()
    for space, segs in todo.items():
        enc = load_encoder(settings.spaces[space], settings.device)
        vecs, failed = _embed_space(enc, modality, segs, settings.space_batch_size(space))
        for item_id, enc_exc in failed.items():
            w = next(w for w, _, _ in segs if w.item_id == item_id)
            errors.append(_error_row(w, space, "encode", enc_exc, hashes.get(item_id), run_id, now))
            failed_items.add(item_id)
        keep = [i for i, (w, _, _) in enumerate(segs) if w.item_id not in failed]
        vectors[space] = _vector_rows([segs[i] for i in keep], vecs[keep], hashes,
                                      spaces[space], run_id, now)
        replace[space] = sorted({w.item_id for w, _, _ in segs})
    timing["encode"] += time.perf_counter() - t2

    for item_id in failed_items:
        items[item_id]["status"] = "error"
    for space in spaces:  # vectors of content that can no longer be read or decoded are stale
        stale = undecodable - set(replace.get(space, ()))
        if stale:
            replace.setdefault(space, []).extend(sorted(stale))
    for w in work:
        if w.item_id in failed_items:
            counts["failed"] += 1
        elif w.item_id in hashes and any(w.item_id in r for r in replace.values()):
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


def _vector_rows(segs: list[tuple[WorkItem, int, Segment]], vecs: np.ndarray, hashes: dict[str, str],
                 space: SpaceState, run_id: str, now: datetime) -> pa.Table:
    assert space.dimension is not None
    schema = vectors_schema(space.dimension)
    n = len(segs)
    text = [s.payload if isinstance(s.payload, str) else None for _, _, s in segs]
    cols = {
        "vector_id": [f"{w.item_id}:{i}" for w, i, _ in segs],
        "item_id": [w.item_id for w, _, _ in segs],
        "uri": [w.uri for w, _, _ in segs],
        "modality": [w.modality for w, _, _ in segs],
        "content_hash": [hashes[w.item_id] for w, _, _ in segs],
        "space_id": [space.space_id] * n,
        "segment": [i for _, i, _ in segs],
        "char_start": [s.char_start for _, _, s in segs],
        "char_end": [s.char_end for _, _, s in segs],
        "text": text,
        "vector": pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(vecs, dtype=np.float32).reshape(-1)), space.dimension),
        "run_id": [run_id] * n,
        "created_at": [now] * n,
    }
    return pa.table(cols, schema=schema)
