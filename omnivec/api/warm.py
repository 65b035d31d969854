"""Load the encoders a text query needs before the first request, so it is not the one that waits."""

from __future__ import annotations

import time
from collections.abc import Iterator

from omnivec.config import Settings
from omnivec.encoders import encoder_class, load_encoder
from omnivec.errors import OmnivecError
from omnivec.pipeline.spaces import resolve_spaces
from omnivec.store.store import Store


def warm_encoders(settings: Settings) -> Iterator[str]:
    """Load each enabled space that has vectors in the store (a space switched off is never loaded);
    yields one line per space, with its precision and torch's CPU threads."""
    store = Store(settings.store)
    settings = resolve_spaces(settings, store)
    have = {name for name, _, _ in store.vector_tables()}
    for name, cfg in settings.enabled_spaces().items():
        if name not in have:
            continue
        t0 = time.perf_counter()
        try:
            encoder_class(cfg.encoder)
            enc = load_encoder(cfg, settings.device)
        except OmnivecError as exc:
            yield f"space {name}: not loaded ({exc.problem})"
            continue
        import torch

        threads = torch.get_num_threads()
        yield (f"space {name}: {cfg.model} ({enc.precision}, {threads} torch thread{'s' * (threads != 1)}) "
               f"loaded in {time.perf_counter() - t0:.1f} s")
