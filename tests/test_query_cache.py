"""Text queries are embedded once per encoder: the same text again costs no forward and gives the
same vector; the cache is bounded and its vectors cannot be changed by a caller."""

from __future__ import annotations

import numpy as np

import omnivec.encoders.base as base
from conftest import make_settings
from omnivec.encoders import clear_cache, load_encoder


def test_a_repeated_text_query_is_not_embedded_again(tmp_path, tiny_clip_dir, monkeypatch):
    clear_cache()
    enc = load_encoder(make_settings(tmp_path / "store", tiny_clip_dir).spaces["clip"], "cpu")
    forwards: list[int] = []
    real = type(enc).embed
    monkeypatch.setattr(type(enc), "embed", lambda self, m, xs: forwards.append(len(xs)) or real(self, m, xs))

    first = enc.embed_query("text", "a red circle")
    first[:] = 0.0  # a caller scribbling on its vector does not reach the cache
    again = enc.embed_query("text", "a red circle")
    other = enc.embed_query("text", "a blue square")
    assert forwards == [1, 1]  # "a red circle" once, "a blue square" once
    assert abs(float(np.linalg.norm(again)) - 1.0) < 1e-5
    assert not np.allclose(again, other)

    monkeypatch.setattr(base, "QUERY_CACHE_SIZE", 2)
    enc.embed_query("text", "a green triangle")  # evicts the oldest, "a red circle"
    enc.embed_query("text", "a red circle")
    assert forwards == [1, 1, 1, 1]
    assert len(enc._query_cache) == 2
    fresh = real(enc, "text", ["a red circle"])[0]
    assert np.allclose(enc.embed_query("text", "a red circle"), fresh / np.linalg.norm(fresh), atol=1e-6)
    clear_cache()
