"""The encoder contract: everything the pipeline and the query path rely on.

Also what every encoder shares: precision (autocast, int8 dynamic quantisation), torch CPU threads,
batches pinned for a non-blocking copy to the GPU, and a batch size that halves on out-of-memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import warnings
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from omnivec.config import SpaceSettings

QUERY_CACHE_SIZE = 1024  # text queries remembered per encoder (a few MB of vectors at most)
QUERY_BATCH = 16  # most segments of one query per forward: a group of audio windows and their mel features
# take ~8 MB each, so 16 bound an audio query's memory (~150 MB) where ingest's batch of 64 takes ~550 MB

log = logging.getLogger("omnivec")


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


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask; a container's cpuset counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def torch_threads(requested: int | None, device: str = "cpu") -> int | None:
    """The torch CPU thread count for ``threads``: the setting when given. Else, with the model on the
    CPU, the usable cores (forwards run one at a time, each on every core); with it on a GPU, 1: the CPU
    then only preprocesses, one item per thread on ``workers`` threads at once (as a DataLoader worker
    does), and more threads per op would oversubscribe the cores. Unset and OMP_NUM_THREADS set: None,
    torch already follows it (local Dask workers get a share of the cores each)."""
    if requested:
        return requested
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return None
    return usable_cores() if device.split(":")[0] == "cpu" else 1


def apply_threads(requested: int | None, device: str = "cpu") -> None:
    import torch

    n = torch_threads(requested, device)
    if n is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def is_out_of_memory(exc: BaseException) -> bool:
    """A device allocation failure: CUDA's OutOfMemoryError, or the RuntimeError MPS raises."""
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None) or getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class DeviceOutOfMemory(RuntimeError):
    """One input alone does not fit on the device: it becomes an ``errors`` row, its batch goes on."""


def _free_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        mps.empty_cache()


def check_precision(precision: str, device: str) -> None:
    """Refuse a precision the device cannot run, before any model is loaded."""
    from omnivec.errors import ConfigError

    kind = device.split(":")[0]
    if precision == "int8" and kind != "cpu":
        raise ConfigError(f"precision int8 (dynamic quantisation of Linear layers) runs on the CPU only, "
                          f"and the device is {device}",
                          ["use --device cpu with --precision int8", "or --precision bf16 / fp16 on the GPU"])
    if precision == "fp16" and kind == "cpu":
        raise ConfigError("precision fp16 needs a GPU: CPUs have no fast float16 matrix multiply",
                          ["use --precision bf16 or int8 on the CPU", "or --device cuda"])
    if precision == "bf16" and kind == "cuda":
        import torch

        if not torch.cuda.is_bf16_supported():
            raise ConfigError("this GPU has no bfloat16 support", ["use --precision fp16"])


def quantize_int8(model: Any) -> Any:
    """torch dynamic quantisation: Linear weights stored as int8, activations quantised per batch."""
    import torch

    with warnings.catch_warnings():  # torch.ao points to torchao; the eager API still does the job
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


class TensorBatch:
    """A collated batch of named tensors (a tokeniser's or feature extractor's output): len() and slicing
    along the batch, so an out-of-memory retry can take it in parts."""

    def __init__(self, tensors: dict[str, Any]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return int(next(iter(self.tensors.values())).shape[0])

    def __getitem__(self, part: slice) -> TensorBatch:
        return TensorBatch({k: v[part] for k, v in self.tensors.items()})

    def to(self, device: str) -> dict[str, Any]:
        return {k: v.to(device, non_blocking=True) for k, v in self.tensors.items()}


def pin(tensor: Any, device: str) -> Any:
    """Page-locked host memory for a CUDA device: the copy to it can then run asynchronously."""
    return tensor.pin_memory() if device.startswith("cuda") else tensor


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


class FairLock:
    """A lock granted in the order it was asked for: a thread that releases it and asks again waits
    behind those already waiting (an audio query's next forward waits behind a text query's)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._next = 0  # the next ticket handed out
        self._serving = 0  # the ticket that holds the lock (== _next: free)
        self._abandoned: set[int] = set()  # tickets whose thread stopped waiting (an exception)

    def acquire(self) -> None:
        with self._cond:
            ticket = self._next
            self._next += 1
            try:
                self._cond.wait_for(lambda: self._serving == ticket)
            except BaseException:
                self._abandoned.add(ticket)
                self._advance()
                raise

    def release(self) -> None:
        with self._cond:
            self._serving += 1
            self._advance()

    def _advance(self) -> None:
        while self._serving in self._abandoned:
            self._abandoned.discard(self._serving)
            self._serving += 1
        self._cond.notify_all()

    @property
    def waiting(self) -> int:
        """Threads waiting for the lock (not counting its holder)."""
        with self._cond:
            return max(0, self._next - self._serving - 1 - len(self._abandoned))

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Encoder(ABC):
    """A model plus its preprocessing, embedding batches into one space.

    Subclasses set ``modalities``, ``dimension`` and ``recipe`` (through :meth:`with_precision`) in
    ``__init__`` and implement :meth:`segments` (CPU-side split + preprocess of one decoded item,
    thread-safe) and :meth:`_forward` (one forward pass for a batch of payloads of one modality, under
    :meth:`autocast`). :meth:`_collate` may batch payloads on the CPU (stack, tokenise, pin) outside the
    forward lock, so that one thread prepares its batch while another one's forward runs.

    ``precision`` (``settings.precision``, fp32 when unset): bf16/fp16 run the forward under
    ``torch.autocast``; int8 quantises the model's Linear layers at load (:meth:`prepare_model`).
    Out-of-memory: a forward that runs out of device memory is retried in halves, and the size that fit
    becomes ``batch_limit`` for every later batch of this encoder; one input that does not fit alone
    raises :class:`DeviceOutOfMemory`.
    """

    kind: ClassVar[str] = ""
    modalities: ClassVar[frozenset[str]] = frozenset()
    # distributions whose versions (with the model's files and omnivec's encoder code) fix the recipe
    identity_packages: ClassVar[tuple[str, ...]] = ("torch",)

    dimension: int
    recipe: dict[str, Any]

    def __init__(self, settings: SpaceSettings, device: str) -> None:
        self.settings = settings
        self.device = device
        self._forward_lock = FairLock()  # one forward at a time, in turn; decode runs beside it
        self._query_lock = threading.Lock()  # text queries: tokenizers are not safe to share between threads
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.precision: str = settings.precision or "fp32"
        check_precision(self.precision, device)
        self.batch_limit: int | None = None  # set by the first out-of-memory: the largest batch that fit

    # -- precision ----------------------------------------------------------------------------
    def with_precision(self, recipe: dict[str, Any]) -> dict[str, Any]:
        """The recipe, plus the precision when it is not fp32 (other precisions give other vectors, so
        another space; fp32 recipes stay as they were, and so do their space_ids)."""
        return recipe if self.precision == "fp32" else {**recipe, "precision": self.precision}

    def prepare_model(self, model: Any) -> Any:
        """Apply load-time precision to a model in eval mode (int8: dynamic quantisation)."""
        return quantize_int8(model) if self.precision == "int8" else model

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The context a forward runs in: ``torch.autocast`` for bf16/fp16, else nothing."""
        if self.precision not in ("bf16", "fp16"):
            return contextlib.nullcontext()
        import torch

        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.split(":")[0], dtype=dtype)

    @property
    def space_id(self) -> str:
        return space_id_for(self.recipe)

    @classmethod
    def identity_inputs(cls, settings: SpaceSettings) -> Any:
        """What a load of ``settings`` reads besides the settings, :attr:`identity_packages` and omnivec's
        code, as JSON-able data that changes whenever it does (a stat of each model file: see
        :func:`omnivec.encoders.identity.tree_state`); None when that cannot be known without loading
        (weights from a hub, which may serve new ones). Not None lets a run that embeds nothing in the
        space skip the load (:mod:`omnivec.encoders.identity`). The default: always load."""
        return None

    @abstractmethod
    def segments(self, modality: str, content: Any) -> Iterable[Segment]:
        """Split and preprocess one decoded item into the segments that get vectors (may be lazy:
        audio windows are decoded as they are pulled)."""

    def _collate(self, modality: str, payloads: Sequence[Any]) -> Any:
        """CPU-side batching, run outside the forward lock. The result must have len() and slicing
        along the batch; :meth:`_forward` takes it (or a slice of it). Default: the payloads as they are."""
        return list(payloads)

    @abstractmethod
    def _forward(self, modality: str, payloads: Any) -> np.ndarray:
        """Run the model once on a batch (payloads, or what :meth:`_collate` made of them); returns
        float32 [len(payloads), dimension]."""

    def embed(self, modality: str, payloads: Sequence[Any]) -> np.ndarray:
        """L2-normalised float32 vectors, one per payload: one forward pass, or several of at most
        ``batch_limit`` once the device has run out of memory."""
        if modality not in self.modalities:
            raise ValueError(f"{self.kind} embeds {sorted(self.modalities)}, not {modality}")
        if not payloads:
            return np.zeros((0, self.dimension), dtype=np.float32)
        batch = self._collate(modality, payloads)  # outside the lock: overlaps another batch's forward
        n, limit_before = len(payloads), self.batch_limit
        parts: list[np.ndarray] = []
        start = 0
        while start < n:
            with self._forward_lock:
                size = min(n - start, self.batch_limit or n)
                failure = None
                try:
                    parts.append(self._forward(modality, batch if size == n else batch[start : start + size]))
                except Exception as exc:
                    if not is_out_of_memory(exc):
                        raise
                    failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'out of memory'}"
                if failure is None:
                    start += size
                    continue
                # outside the except block: the exception's frames (and their tensors) are released
                _free_device_memory()
                if size == 1:
                    # one input alone does not fit: the halving was about it, not the batch size
                    self.batch_limit = limit_before
                    raise DeviceOutOfMemory(f"out of memory on {self.device} for this input alone (batch of 1, "
                                            f"precision {self.precision}): {failure}")
                self.batch_limit = max(1, size // 2)
                log.warning("%s %s: out of memory on %s at a batch of %d; batches of %d from now on",
                            self.kind, self.settings.model, self.device, size, self.batch_limit)
        return l2_normalise(np.concatenate(parts) if len(parts) > 1 else parts[0])

    def embed_query(self, modality: str, content: Any, batch_size: int | None = None) -> np.ndarray:
        """One vector for a query: the re-normalised mean of its segments' vectors, as ingest pools an
        audio file. Safe to call from several threads at once (a query service shares one encoder
        between its requests).

        Segments are embedded in groups of ``batch_size`` (default: the space's), at most
        :data:`QUERY_BATCH`, into a running sum, so an hour of audio is never in memory at once. Only
        text queries take the query lock (the tokenizer is not thread-safe): an audio or image query
        takes the forward lock for each forward alone, and a text query waiting for it gets the next
        one. Text queries are remembered (the last :data:`QUERY_CACHE_SIZE` per encoder): a page that
        changes a filter, ``k`` or the as-of version sends the same text again, and this encoder
        gives the same vector for it every time."""
        if modality != "text" or not isinstance(content, str):
            return self._pooled_query(modality, content, batch_size)
        with self._query_lock:
            if content in self._query_cache:
                self._query_cache.move_to_end(content)
                return self._query_cache[content].copy()
            vec = self._pooled_query(modality, content, batch_size)
            self._query_cache[content] = vec.copy()
            while len(self._query_cache) > QUERY_CACHE_SIZE:
                self._query_cache.popitem(last=False)
        return vec

    def _pooled_query(self, modality: str, content: Any, batch_size: int | None) -> np.ndarray:
        size = min(batch_size or self.settings.batch_size or QUERY_BATCH, QUERY_BATCH)
        total = np.zeros(self.dimension, dtype=np.float64)
        count = 0
        group: list[Any] = []
        for seg in self.segments(modality, content):
            group.append(seg.payload)
            if len(group) >= size:
                total += self.embed(modality, group).sum(axis=0, dtype=np.float64)
                count, group = count + len(group), []
        if group:
            total += self.embed(modality, group).sum(axis=0, dtype=np.float64)
            count += len(group)
        if not count:
            raise ValueError("the query is empty")
        return l2_normalise((total / count)[None, :])[0]
