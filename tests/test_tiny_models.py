"""The tiny test models really tokenize: distinct texts give distinct ids, vectors and chunks.

A tiny model whose tokenizer maps every text to the same ids makes every text test pass by
comparing a vector with itself; these guards fail first when that happens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import vectors_of
from omnivec.config import SpaceSettings
from omnivec.encoders import load_encoder
from omnivec.pipeline.run import ingest
from omnivec.testing import TINY_CLAP_SENTENCES, check_tokenizer

TEXTS = ["a dog barking in the park", "rain falling on a window", "zebra quantum xylophone"]  # the last: unseen


def _clap(tiny_clap_dir: Path):  # type: ignore[no-untyped-def]
    return load_encoder(SpaceSettings(encoder="clap", model=str(tiny_clap_dir), pretrained=None), "cpu")


def test_tiny_clap_tokenizer_gives_distinct_texts_distinct_ids(tiny_clap_dir):
    from transformers import ClapProcessor

    tok = ClapProcessor.from_pretrained(tiny_clap_dir).tokenizer
    special = set(tok.all_special_ids)
    ids = [tok(t)["input_ids"] for t in TEXTS]
    words = [[i for i in seq if i not in special] for seq in ids]
    assert len(tok) > 256  # byte-level: every byte has a token, plus learnt merges
    assert all(len(w) >= 3 for w in words), ids
    assert len({tuple(w) for w in words}) == len(TEXTS), ids
    assert tok.decode(words[2]) == TEXTS[2]  # an unseen text round-trips: nothing falls to <unk>


def test_tiny_clap_distinct_texts_give_distinct_vectors(tiny_clap_dir):
    enc = _clap(tiny_clap_dir)
    vecs = enc.embed("text", TEXTS)
    for i in range(len(TEXTS)):
        for j in range(i + 1, len(TEXTS)):
            assert np.abs(vecs[i] - vecs[j]).max() > 1e-3, (TEXTS[i], TEXTS[j])
    again = enc.embed("text", TEXTS[:1])[0]
    assert np.allclose(again, vecs[0], atol=1e-5)  # the same text, the same vector


def test_a_long_text_splits_into_several_clap_chunks(tmp_path, tiny_clip_dir, tiny_clap_dir):
    from conftest import make_settings

    enc = _clap(tiny_clap_dir)
    text = " ".join(TINY_CLAP_SENTENCES * 6)
    assert enc.count_tokens(text) > 2 * enc.max_tokens
    root = tmp_path / "docs"
    root.mkdir()
    (root / "long.txt").write_text(text)
    settings = make_settings(tmp_path / "store", tiny_clip_dir, tiny_clap_dir)
    ingest([str(root)], settings)
    rows = sorted(vectors_of(settings.store, "clap").to_pylist(), key=lambda r: r["segment"])
    assert len(rows) >= 3
    assert rows[0]["char_start"] == 0 and rows[-1]["char_end"] == len(text)
    assert all(enc.count_tokens(r["text"]) <= enc.max_tokens for r in rows)
    assert len({tuple(np.round(r["vector"], 5)) for r in rows}) == len(rows)  # each chunk its own vector


def test_tiny_open_clip_gives_distinct_texts_distinct_tokens_and_vectors(tiny_clip_dir):
    enc = load_encoder(SpaceSettings(model=f"local-dir:{tiny_clip_dir}", pretrained=None), "cpu")
    tokens = enc.tokenizer(TEXTS).numpy()
    assert len({tuple(row) for row in tokens}) == len(TEXTS)
    assert all(enc.count_tokens(t) >= 3 for t in TEXTS)
    vecs = enc.embed("text", TEXTS)
    assert min(np.abs(vecs[i] - vecs[j]).max() for i in range(3) for j in range(i + 1, 3)) > 1e-3


def test_check_tokenizer_refuses_a_tokenizer_without_vocabulary():
    from transformers import RobertaTokenizerFast

    empty = RobertaTokenizerFast()  # what a vocabulary passed under an ignored argument name gives
    assert len(empty) < 10
    with pytest.raises(RuntimeError, match="does not tokenize"):
        check_tokenizer(empty)
