"""Precision (fp32 / bf16 / fp16 / int8) and torch threads: settings reach the encoder, another
precision is another space, int8's accuracy cost stays within a measured bound, searches follow the
precision of the stored space, bad values are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import make_settings
from omnivec.config import load_settings
from omnivec.encoders import clear_cache, load_encoder
from omnivec.encoders.base import check_precision, torch_threads, usable_cores
from omnivec.errors import ConfigError
from omnivec.pipeline.run import ingest
from omnivec.query import search
from omnivec.store import Store

# Lowest cosine of int8 vectors to fp32 ones on the tiny test model (measured: images 0.99998, text
# 0.9995), with room for another CPU's quantised kernels.
INT8_MIN_COSINE = 0.998

TEXTS = {"ocean.txt": "waves rolling onto a sandy beach at dawn",
         "city.txt": "traffic lights and taxis on a rainy night street",
         "forest.txt": "tall pine trees and moss in a quiet forest",
         "kitchen.txt": "bread baking in a warm oven with the smell of yeast"}


@pytest.fixture(autouse=True)
def fresh_encoders():
    clear_cache()
    threads = torch.get_num_threads()
    yield
    clear_cache()
    torch.set_num_threads(threads)


@pytest.fixture
def texts(tmp_path: Path) -> Path:
    folder = tmp_path / "texts"
    folder.mkdir()
    for name, text in TEXTS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def encoder(tiny_clip_dir: Path, **overrides: object):  # type: ignore[no-untyped-def]
    s = make_settings(Path("unused"), tiny_clip_dir, **overrides)
    return load_encoder(s.spaces["clip"], "cpu")


def test_precision_setting_reaches_the_encoder(tiny_clip_dir):
    s = make_settings(Path("unused"), tiny_clip_dir, precision="int8")
    assert {n: c.precision for n, c in s.spaces.items()} == {"clip": "int8", "clap": "int8", "text": "int8"}
    enc = load_encoder(s.spaces["clip"], "cpu")
    assert enc.precision == "int8" and enc.recipe["precision"] == "int8"
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in enc.model.modules())
    per_space = load_settings(env={"OMNIVEC_PRECISION": "bf16", "OMNIVEC_SPACES__CLIP__PRECISION": "int8"})
    assert per_space.spaces["clip"].precision == "int8" and per_space.spaces["clap"].precision == "bf16"
    assert load_settings(env={}).spaces["clip"].precision is None  # unset: fp32 for a new space
    with pytest.raises(ConfigError, match="precision"):
        load_settings(env={"OMNIVEC_PRECISION": "fp8"})


def test_int8_vectors_close_to_fp32_in_another_space(tiny_clip_dir, corpus):
    from PIL import Image

    fp32, int8, plain = (encoder(tiny_clip_dir, precision=p) for p in ("fp32", "int8", None))
    assert fp32.space_id == plain.space_id and "precision" not in fp32.recipe  # fp32 space_ids as before
    assert int8.space_id != fp32.space_id
    images = [Image.open(p).convert("RGB") for p in sorted((corpus / "images").iterdir())]
    texts = list(TEXTS.values())
    for modality, items in (("image", images), ("text", texts)):
        a = fp32.embed(modality, [fp32.segments(modality, x)[0].payload for x in items])
        b = int8.embed(modality, [int8.segments(modality, x)[0].payload for x in items])
        cos = (a * b).sum(axis=1)
        assert cos.min() >= INT8_MIN_COSINE, (modality, cos.min())
        assert not np.array_equal(a, b)  # it does change the vectors


def test_bf16_autocast_is_another_space(tiny_clip_dir):
    fp32, bf16 = encoder(tiny_clip_dir), encoder(tiny_clip_dir, precision="bf16")
    assert bf16.space_id != fp32.space_id and bf16.recipe["precision"] == "bf16"
    a, b = fp32.embed("text", ["a red circle"]), bf16.embed("text", ["a red circle"])
    assert float(a[0] @ b[0]) > 0.999 and not np.array_equal(a, b)


def test_devices_refuse_what_they_cannot_run():
    with pytest.raises(ConfigError, match="CPU only"):
        check_precision("int8", "cuda")
    with pytest.raises(ConfigError, match="needs a GPU"):
        check_precision("fp16", "cpu")
    check_precision("bf16", "cpu")
    check_precision("int8", "cpu")


def test_search_follows_the_stored_precision_and_a_chosen_one_is_a_new_space(tmp_path, tiny_clip_dir, texts):
    store = tmp_path / "store"
    ingest([str(texts)], make_settings(store, tiny_clip_dir, precision="bf16"))
    plain = make_settings(store, tiny_clip_dir)  # no precision chosen
    plain._pinned = set()  # the clip space follows the store's default space of its name
    hit = search(TEXTS["forest.txt"], k=1, space="clip", settings=plain)[0]
    assert hit.uri == str(texts / "forest.txt") and hit.score == pytest.approx(1.0, abs=1e-3)

    chosen = make_settings(store, tiny_clip_dir, precision="int8")
    chosen._pinned = set()  # the store's model, at the precision asked for: another space beside
    report = ingest([str(texts)], chosen)
    assert report.embedded == len(TEXTS)
    rows = Store(str(store)).space_rows("clip")
    assert [(json.loads(r["recipe"])["precision"], r["is_default"]) for r in rows] == [("bf16", True),
                                                                                      ("int8", False)]
    assert search(TEXTS["city.txt"], k=1, space="clip", settings=chosen)[0].uri == str(texts / "city.txt")


def test_threads_setting(tiny_clip_dir, monkeypatch):
    encoder(tiny_clip_dir, threads=1)
    assert torch.get_num_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert torch_threads(None) == usable_cores() >= 1  # the model on the CPU: every usable core
    assert torch_threads(None, "cuda") == 1  # on a GPU: one per preprocessing thread, like DataLoader workers
    assert torch_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a local Dask worker's share: torch already follows it
    assert torch_threads(None) is None
    with pytest.raises(ConfigError, match="threads"):
        load_settings(env={"OMNIVEC_THREADS": "0"})


@pytest.mark.parametrize("command", [["ingest", "DIR"], ["search", "a query"],
                                     ["reembed", "--space", "clip", "--model", "ViT-B-32"]])
def test_cli_refuses_a_bad_precision(tmp_path, command):
    from flows.cli import app

    args = [str(tmp_path) if a == "DIR" else a for a in command]
    res = CliRunner().invoke(app, [*args, "--precision", "fp8", "--store", str(tmp_path / "s")])
    assert res.exit_code == 2, res.output
    assert "precision" in res.output and "int8" in res.output  # the accepted values are listed
