"""Model hub access without long stalls: when the hub cannot be reached, use the cache only.

Left alone, huggingface_hub retries an unreachable host for ~50 s before it falls back to the
cache. omnivec probes the endpoint once (3 s) and, if it is unreachable, switches the hub client to
offline mode for the duration of a model load: cached weights still load, missing ones fail at once.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

_probe_cache: dict[str, bool] = {}


def hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if endpoint not in _probe_cache:
        url = urlparse(endpoint)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
                _probe_cache[endpoint] = True
        except OSError:
            _probe_cache[endpoint] = False
    return _probe_cache[endpoint]


@contextlib.contextmanager
def offline_if_unreachable() -> Iterator[bool]:
    """Yields True when the hub is used offline (by the user's choice or because it is unreachable)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        yield True
        return
    if hub_reachable():
        yield False
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield True
    finally:
        constants.HF_HUB_OFFLINE = False


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load warnings and progress bars (omnivec reports failures itself)."""
    from transformers.utils import logging as tlog

    level = tlog.get_verbosity()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(level)
        tlog.enable_progress_bar()
