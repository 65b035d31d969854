"""The encoder contract: everything the pipeline and the query path rely on."""

from __future__ import annotations

import hashlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from omnivec.config import SpaceSettings


@dataclass(frozen=True, slots=True)
class Segment:
    """One piece of an item that gets one vector: a whole image, a text chunk (later: an audio window)."""

    payload: Any  # prepared input that `embed` consumes (a tensor, a string, samples...)
    char_start: int | None = None
    char_end: int | None = None
    start_s: float | None = None  # audio windows: seconds in the file
    end_s: float | None = None


def space_id_for(recipe: dict[str, Any]) -> str:
    """Short, stable hash of everything that changes a space's vectors."""
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def resolve_device(device: str) -> str:
    """Map ``auto`` to the best available torch device; check an explicit choice exists."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from omnivec.errors import ConfigError

        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device",
                          ["use --device auto or --device cpu", "install a CUDA build of torch"])
    return device


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


class Encoder(ABC):
    """A model plus its preprocessing, embedding batches into one space.

    Subclasses set ``modalities``, ``dimension`` and ``recipe`` in ``__init__`` and implement
    :meth:`segments` (CPU-side split + preprocess of one decoded item, thread-safe) and
    :meth:`embed` (one forward pass for a batch of payloads of one modality).
    """

    kind: ClassVar[str] = ""
    modalities: ClassVar[frozenset[str]] = frozenset()

    dimension: int
    recipe: dict[str, Any]

    def __init__(self, settings: SpaceSettings, device: str) -> None:
        self.settings = settings
        self.device = device
        self._forward_lock = threading.Lock()  # one forward at a time; decode runs beside it
        self._query_lock = threading.Lock()  # tokenizers are not safe to share between threads

    @property
    def space_id(self) -> str:
        return space_id_for(self.recipe)

    @abstractmethod
    def segments(self, modality: str, content: Any) -> Iterable[Segment]:
        """Split and preprocess one decoded item into the segments that get vectors (may be lazy:
        audio windows are decoded as they are pulled)."""

    @abstractmethod
    def _forward(self, modality: str, payloads: Sequence[Any]) -> np.ndarray:
        """Run the model once on a batch; returns float32 [len(payloads), dimension]."""

    def embed(self, modality: str, payloads: Sequence[Any]) -> np.ndarray:
        """L2-normalised float32 vectors, one per payload, in one forward pass."""
        if modality not in self.modalities:
            raise ValueError(f"{self.kind} embeds {sorted(self.modalities)}, not {modality}")
        if not payloads:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._forward_lock:
            out = self._forward(modality, payloads)
        return l2_normalise(out)

    def embed_query(self, modality: str, content: Any) -> np.ndarray:
        """One vector for a query: the re-normalised mean of its segments' vectors. Safe to call from
        several threads at once (a query service shares one encoder between its requests)."""
        with self._query_lock:
            segs = list(self.segments(modality, content))
            if not segs:
                raise ValueError("the query is empty")
            vecs = self.embed(modality, [s.payload for s in segs])
        return l2_normalise(vecs.mean(axis=0, keepdims=True))[0]
