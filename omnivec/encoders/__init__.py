"""The encoder registry: name -> encoder class, and a per-process cache of loaded encoders.

Built-in encoders are imported only when used, so ``omnivec status`` never imports torch.
Adding an encoder is one module with ``@register("name")`` and, for built-ins, one line in
``_BUILTIN``.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import TypeVar

from omnivec.config import SpaceSettings
from omnivec.encoders import identity
from omnivec.encoders.base import Encoder, Segment, apply_threads, resolve_device, space_id_for
from omnivec.errors import UnknownEncoderError

_BUILTIN: dict[str, str] = {
    "open_clip": "omnivec.encoders.open_clip:OpenClipEncoder",
    "clap": "omnivec.encoders.clap:ClapEncoder",
    "sentence_transformers": "omnivec.encoders.sentence_transformers:SentenceTransformerEncoder",
}
_REGISTRY: dict[str, type[Encoder]] = {}
_LOADED: dict[tuple[str, str], Encoder] = {}
_LOAD_LOCK = threading.Lock()
_LOADS = 0

E = TypeVar("E", bound=type[Encoder])


def register(name: str) -> Callable[[E], E]:
    """Class decorator: make an encoder available under ``name``."""

    def deco(cls: E) -> E:
        cls.kind = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_encoders() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def encoder_class(name: str) -> type[Encoder]:
    if name not in _REGISTRY and name in _BUILTIN:
        module, _, attr = _BUILTIN[name].partition(":")
        getattr(importlib.import_module(module), attr)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownEncoderError(
            f"encoder {name!r} is not registered. Available: {', '.join(available_encoders())}",
            ["fix the `encoder` key of the space in omnivec.toml",
             "register your own with @omnivec.encoders.register(name)"],
        ) from None


def _normalised(settings: SpaceSettings) -> SpaceSettings:
    return settings.model_copy(update={"precision": settings.precision or "fp32"})  # unset is fp32


def _key(settings: SpaceSettings, device: str) -> tuple[str, str]:
    return _normalised(settings).model_dump_json(exclude={"enabled", "batch_size"}), device


def load_encoder(settings: SpaceSettings, device: str = "auto") -> Encoder:
    """Load (once per process) the encoder a space's settings describe (its precision included), and set
    torch's CPU threads from the settings' ``threads``. A load remembers the space's identity for
    :func:`known_identity` (see :mod:`omnivec.encoders.identity`)."""
    key = _key(settings, device)
    with _LOAD_LOCK:
        if key not in _LOADED:
            cls = encoder_class(settings.encoder)
            before = identity.fingerprint(cls, _normalised(settings), device)
            _LOADED[key] = cls(settings, resolve_device(device))
            global _LOADS
            _LOADS += 1
            identity.remember(cls, _normalised(settings), device, before, _LOADED[key])
        enc = _LOADED[key]
    apply_threads(settings._threads, enc.device)
    return enc


def is_loaded(settings: SpaceSettings, device: str = "auto") -> bool:
    """Whether this process has already loaded the encoder ``settings`` describe."""
    with _LOAD_LOCK:
        return _key(settings, device) in _LOADED


def known_identity(settings: SpaceSettings, device: str = "auto") -> identity.Identity | None:
    """The space identity (recipe, dimension, space_id) of the encoder ``settings`` describe, when it is
    known without loading the model: from the encoder this process loaded, or from the load that last
    read exactly the same model files, libraries and encoder code. None: only a load can tell."""
    with _LOAD_LOCK:
        enc = _LOADED.get(_key(settings, device))
    if enc is not None:
        return identity.Identity(enc.recipe, enc.dimension, enc.space_id)
    return identity.lookup(encoder_class(settings.encoder), _normalised(settings), device)


def load_count() -> int:
    """How many encoders this process has loaded (each model once, unless the cache was cleared)."""
    return _LOADS


def clear_cache() -> None:
    with _LOAD_LOCK:
        _LOADED.clear()


__all__ = [
    "Encoder",
    "Segment",
    "available_encoders",
    "clear_cache",
    "load_count",
    "encoder_class",
    "is_loaded",
    "known_identity",
    "load_encoder",
    "register",
    "resolve_device",
    "space_id_for",
]
