"""Equal scores are ordered by uri, never by where the rows sit on disk (copies of one file tie)."""

from __future__ import annotations

import pytest

from conftest import make_settings
from omnivec.encoders import load_encoder
from omnivec.pipeline.run import ingest
from omnivec.query import search_vector
from omnivec.store import Store


@pytest.mark.parametrize("exact_cache_mb", ["1024", "0"])  # from memory (omnivec.exact), and Lance's scan
def test_copies_of_a_file_rank_by_uri_whatever_their_order_on_disk(tmp_path, tiny_clip_dir, monkeypatch,
                                                                     exact_cache_mb):
    monkeypatch.setenv("OMNIVEC_EXACT_CACHE_MB", exact_cache_mb)
    settings = make_settings(tmp_path / "store", tiny_clip_dir)
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in [("z-copy.txt", "a red circle"), ("blue.txt", "a blue square"),
                       ("green.txt", "a green triangle"), ("dots.txt", "yellow dots on black")]:
        (docs / name).write_text(text)
    ingest([str(docs)], settings)
    for name in ("m-copy.txt", "a-copy.txt"):  # written after z-copy: later on disk
        (docs / name).write_text("a red circle")
    ingest([str(docs)], settings)

    store = Store(settings.store)
    vec = load_encoder(settings.spaces["clip"], "cpu").embed_query("text", "a red circle")

    def names(k: int) -> list[str]:
        return [h.uri.rsplit("/", 1)[-1] for h in search_vector(store, "clip", vec, k=k)]

    scores = [h.score for h in search_vector(store, "clip", vec, k=3)]
    assert scores[0] == scores[1] == scores[2]  # the three copies tie exactly
    assert names(5)[:3] == ["a-copy.txt", "m-copy.txt", "z-copy.txt"]
    assert names(2) == ["a-copy.txt", "m-copy.txt"]  # the cut at k takes the first by uri among the tied
    assert names(1) == ["a-copy.txt"]
