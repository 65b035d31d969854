"""Stream segments of many items through one space in fixed-size forwards.

Segments are pulled lazily (an hour of audio is never in memory at once); a forward runs whenever
``batch_size`` payloads are waiting. Payloads are dropped as soon as they are embedded; only vectors
and their offsets are kept. A failing forward is retried in halves, down to single segments, so one
bad file cannot take its neighbours down and the others still run in batches. (Running out of device
memory is handled first by the encoder itself, which halves its batch size for the rest of the run.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from omnivec.encoders import Encoder, Segment
from omnivec.encoders.base import l2_normalise


@dataclass(slots=True)
class EmbeddedSegment:
    index: int
    vector: np.ndarray
    char_start: int | None
    char_end: int | None
    start_s: float | None
    end_s: float | None
    text: str | None


@dataclass(slots=True)
class SpaceEmbedder:
    encoder: Encoder
    modality: str
    batch_size: int
    pending: list[tuple[str, int, Segment]] = field(default_factory=list)
    done: dict[str, list[EmbeddedSegment]] = field(default_factory=dict)
    failed: dict[str, BaseException] = field(default_factory=dict)
    counter: dict[str, int] = field(default_factory=dict)

    def add(self, item_id: str, seg: Segment) -> None:
        index = self.counter.get(item_id, 0)
        self.counter[item_id] = index + 1
        self.pending.append((item_id, index, seg))
        if len(self.pending) >= self.batch_size:
            self.run()

    def drop(self, item_id: str, exc: BaseException | None = None) -> None:
        """Forget an item's segments (it failed while being read or split)."""
        self.pending = [p for p in self.pending if p[0] != item_id]
        self.done.pop(item_id, None)
        if exc is not None:
            self.failed[item_id] = exc

    def run(self) -> None:
        part, self.pending = self.pending, []
        part = [p for p in part if p[0] not in self.failed]
        if not part:
            return
        vecs = self._embed_isolating(part)
        for (item_id, index, seg), vec in zip(part, vecs, strict=True):
            if item_id in self.failed:
                continue
            if not np.isfinite(vec).all():
                self.failed[item_id] = ValueError("the model produced a non-finite vector")
                self.done.pop(item_id, None)
                continue
            text = seg.payload if isinstance(seg.payload, str) else None
            self.done.setdefault(item_id, []).append(EmbeddedSegment(
                index, np.asarray(vec, dtype=np.float32), seg.char_start, seg.char_end, seg.start_s,
                seg.end_s, text))

    def _embed_isolating(self, part: list[tuple[str, int, Segment]]) -> np.ndarray:
        """Vectors of ``part``; when its forward fails, each half is tried on its own, down to single
        segments, whose failure is recorded against their item (NaN rows for segments not embedded)."""
        vecs = np.full((len(part), self.encoder.dimension), np.nan, dtype=np.float32)
        live = [i for i, (item_id, _, _) in enumerate(part) if item_id not in self.failed]
        if not live:
            return vecs
        try:
            vecs[live] = self.encoder.embed(self.modality, [part[i][2].payload for i in live])
            return vecs
        except Exception as exc:  # noqa: BLE001 - isolate the failing segment(s)
            if len(live) == 1:
                self.failed[part[live[0]][0]] = exc.with_traceback(None)  # an errors row; frames freed
                return vecs
        mid = len(part) // 2
        vecs[:mid] = self._embed_isolating(part[:mid])
        vecs[mid:] = self._embed_isolating(part[mid:])
        return vecs

    def finish(self) -> dict[str, list[EmbeddedSegment]]:
        """Run what is left; return item_id -> segments (in order) for items that succeeded."""
        self.run()
        return {i: sorted(segs, key=lambda s: s.index) for i, segs in self.done.items()
                if i not in self.failed}


def pooled(segments: list[EmbeddedSegment]) -> EmbeddedSegment:
    """One vector for a whole file: the re-normalised mean of its segment vectors."""
    mean = l2_normalise(np.stack([s.vector for s in segments]).mean(axis=0, keepdims=True))[0]
    starts = [s.start_s for s in segments if s.start_s is not None]
    ends = [s.end_s for s in segments if s.end_s is not None]
    return EmbeddedSegment(-1, mean, None, None, min(starts) if starts else None,
                           max(ends) if ends else None, None)


