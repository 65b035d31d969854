"""One batch of one modality: read + hash every file, decode what needs embedding, and stream its
segments through each space in fixed-size forwards.

Pure function of its inputs (work items, settings, space states): safe to run in a thread, a process
or on a remote worker. Loaded models come from the per-process encoder cache.
"""

from __future__ import annotations

import functools
import hashlib
import os
import queue
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from omnivec.audio import probe
from omnivec.config import Settings
from omnivec.encoders import load_encoder
from omnivec.errors import DecodeError
from omnivec.manifests import read_caption, split_caption_uri
from omnivec.media import decode_image, decode_text, open_regular, read_file
from omnivec.memory import release
from omnivec.pipeline.embedder import EmbeddedSegment, SpaceEmbedder, pooled
from omnivec.pipeline.plan import WorkItem
from omnivec.pipeline.spaces import SpaceState
from omnivec.sources import sha256_bytes
from omnivec.store.schema import ERRORS, ITEMS, vectors_schema

POOLED_MODALITIES = frozenset({"audio"})  # files with many windows also get one pooled vector

T = TypeVar("T")
MAX_STRAGGLERS = 4  # abandoned decoder threads a process keeps before it stops starting new ones


class DecodeTimeout(DecodeError):
    """A read or decode step ran past ``decode_timeout_s``; its thread was abandoned."""


class _Stragglers:
    """Count of abandoned decoder threads still running, process-wide (they hold their file's data)."""

    def __init__(self) -> None:
        self.count = 0
        self.cond = threading.Condition()

    def wait_for_room(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.count < MAX_STRAGGLERS, timeout)

    def add(self) -> None:
        with self.cond:
            self.count += 1

    def done(self) -> None:
        with self.cond:
            self.count -= 1
            self.cond.notify_all()


STRAGGLERS = _Stragglers()


class _Worker:
    """A daemon thread that runs one step at a time. Abandoned after a timeout, it finishes the stuck
    step in the background (a thread cannot be killed), drops its result and exits."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event] | None] = \
            queue.SimpleQueue()
        self.abandoned = False
        self.lock = threading.Lock()
        threading.Thread(target=self._loop, name="omnivec-decode", daemon=True).start()

    def _loop(self) -> None:
        while (job := self.jobs.get()) is not None:
            fn, box, done = job
            try:
                box.append((True, fn()))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                box.append((False, exc))
            del job, fn, box  # an abandoned step's data goes now, not when the thread ends
            done.set()
            with self.lock:
                if self.abandoned:
                    STRAGGLERS.done()
                    return


class DecodeGuard:
    """Runs each read/decode step of a batch under ``decode_timeout_s``.

    Prefect's task timeouts cannot interrupt a call blocked in C (a decoder spinning on a hostile file,
    a read stuck on a dead mount): here each step runs on a helper thread and the batch waits at most
    ``timeout_s`` for it. A step that overruns becomes a :class:`DecodeTimeout` for its file; its
    thread is left to finish on its own (daemon, its result dropped) and the batch goes on with a
    fresh helper. At most :data:`MAX_STRAGGLERS` such threads live in a process: past that, a batch
    first waits for one to end, then refuses the file instead of starting another thread.
    ``timeout_s == 0`` runs steps inline (no limit, no thread).
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._worker: _Worker | None = None

    def call(self, fn: Callable[[], T], what: str) -> T:
        if self.timeout_s <= 0:
            return fn()
        if self._worker is None:
            if not STRAGGLERS.wait_for_room(self.timeout_s):
                raise DecodeTimeout(f"not {what}: {STRAGGLERS.count} earlier decoders are still stuck past "
                                    f"decode_timeout_s={self.timeout_s:g} s in this process; retry the file later "
                                    "(--retry-errors)")
            self._worker = _Worker()
        box: list[Any] = []
        done = threading.Event()
        self._worker.jobs.put((fn, box, done))
        if not done.wait(self.timeout_s):
            with self._worker.lock:
                finished = done.is_set()
                if not finished:
                    self._worker.abandoned = True
                    STRAGGLERS.add()
            if not finished:
                self._worker = None
                raise DecodeTimeout(f"{what} took longer than decode_timeout_s={self.timeout_s:g} s; gave up "
                                    "on it (a hostile or damaged file, or a stalled disk)")
        ok, value = box[0]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def iterate(self, items: Iterable[T], what: str) -> Iterator[T]:
        """Pull a lazy sequence (audio windows) one step at a time under the timeout."""
        if self.timeout_s <= 0 or isinstance(items, list | tuple):
            yield from items
            return
        it = iter(items)
        end = object()
        while (item := self.call(lambda: next(it, end), what)) is not end:
            yield item  # type: ignore[misc]

    def close(self) -> None:
        if self._worker is not None:
            self._worker.jobs.put(None)
            self._worker = None


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


def _hash_audio(path: str, inside: tuple[str, ...] | None) -> tuple[str, int, int]:
    """sha256, size and mtime of an audio file, streamed (never whole in memory)."""
    fd, st = open_regular(path, inside)
    try:
        if st.st_size == 0:
            raise DecodeError("file is empty (0 bytes)", stage="read")
        digest = hashlib.sha256()
        while block := os.read(fd, 1 << 20):
            digest.update(block)
    except OSError as exc:
        raise DecodeError(f"cannot read the file: {exc.strerror or exc}", stage="read") from None
    finally:
        os.close(fd)
    return digest.hexdigest(), st.st_size, st.st_mtime_ns


def _caption(w: WorkItem, settings: Settings) -> _Opened:
    parts = split_caption_uri(w.uri)
    assert parts is not None
    text = read_caption(w.uri, w.inside)  # inline text of a manifest row
    try:
        caption = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DecodeError(f"caption is not valid UTF-8: a lone surrogate U+{ord(text[exc.start]):04X} at "
                          f"character {exc.start} (from a \\u escape in the manifest?)") from None
    if len(caption) > settings.max_text_bytes:
        raise DecodeError(f"caption is {len(caption):,} bytes, over the {settings.max_text_bytes:,}-byte limit "
                          "for text", stage="read")
    try:
        mtime = os.stat(parts[0]).st_mtime_ns
    except OSError as exc:
        raise DecodeError(f"cannot read the manifest: {exc.strerror or exc}", stage="read") from None
    return _Opened(sha256_bytes(caption), len(caption), mtime, lambda: decode_text(caption))


def _is_caption(uri: str) -> bool:
    """Whether ``uri`` names a manifest row's inline caption (a real file of that name wins)."""
    return split_caption_uri(uri) is not None and not os.path.lexists(uri)


def _open(w: WorkItem, settings: Settings) -> _Opened:
    """Read and hash one file; decoding is deferred until we know it is needed."""
    if w.modality == "audio":  # streamed twice (hash, then decode): never whole in memory
        digest, size, mtime_ns = _hash_audio(w.uri, w.inside)
        return _Opened(digest, size, mtime_ns, lambda: probe(w.uri, w.inside))
    if w.modality == "text" and _is_caption(w.uri):
        return _caption(w, settings)
    limit = settings.max_text_bytes if w.modality == "text" else settings.max_image_bytes
    fb = read_file(w.uri, limit, w.inside)  # every open checks the file resolves inside the sources
    if w.modality == "image":
        return _Opened(sha256_bytes(fb.data), fb.size, fb.mtime_ns,
                       lambda: decode_image(fb.data, settings.max_image_pixels, settings.max_image_decoded_bytes))
    if w.modality == "text":
        return _Opened(sha256_bytes(fb.data), fb.size, fb.mtime_ns, lambda: decode_text(fb.data))
    raise DecodeError(f"no decoder for modality {w.modality!r}")


def _stat_now(w: WorkItem) -> tuple[int, int]:
    """Size and mtime of a file that could not be read, as it is now (it may have changed since it was
    discovered): the next run then skips it while it stays as it is."""
    try:
        st = os.stat(w.uri)
    except (OSError, ValueError):
        return w.size, w.mtime_ns
    return st.st_size, st.st_mtime_ns


def _unexpected(exc: Exception, what: str, stage: str) -> DecodeError:
    """A decoder failed in a way nobody anticipated: still an errors row (keeping the class), not a crash."""
    err = DecodeError(f"unexpected {type(exc).__name__} while {what}: {exc}", stage=stage)
    err.__cause__ = exc
    return err


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

    guard = DecodeGuard(settings.decode_timeout_s)
    try:
        for w in work:
            t0 = time.perf_counter()
            try:
                opened = guard.call(functools.partial(_open, w, settings), "reading the file")
            except (DecodeError, Exception) as exc:
                timing["read"] += time.perf_counter() - t0
                err = exc if isinstance(exc, DecodeError) else _unexpected(exc, "reading the file", "read")
                size, mtime_ns = _stat_now(w)
                items[w.item_id] = _item_row(w, w.prev_hash, size, mtime_ns, "error", run_id, now)
                fail(w, None, err.stage, err)
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
                content = guard.call(opened.decode, "decoding the file")
            except (DecodeError, Exception) as exc:
                timing["decode"] += time.perf_counter() - t1
                err = exc if isinstance(exc, DecodeError) else _unexpected(exc, "decoding the file", "decode")
                fail(w, None, err.stage, err)
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
                    # lazy for audio: each window is decoded under the timeout, forwards run here
                    segments = guard.iterate(emb.encoder.segments(modality, content), "decoding one window")
                    for seg in segments:
                        emb.add(w.item_id, seg)
                        n += 1
                    if n == 0:
                        raise DecodeError("nothing to embed after splitting")
                except DecodeError as exc:  # corrupt data found mid-stream, or a stuck decoder
                    emb.drop(w.item_id, exc)
                    fail(w, None, exc.stage, exc)
                except Exception as exc:  # noqa: BLE001 - recorded as an errors row
                    emb.drop(w.item_id, exc)
                    fail(w, space, "prepare", exc)
                timing["encode"] += time.perf_counter() - t2  # streamed decode + forwards, interleaved
                if w.item_id in undecodable:
                    break
    finally:
        guard.close()

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
    if embedders:
        release()  # the forwards' activations, freed, go back to the OS (see omnivec.memory)
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
