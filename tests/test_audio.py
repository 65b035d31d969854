"""Audio: decoding every container, deterministic windows, the clap space, bad input."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import vectors_of
from fixtures.audio_files import sine, write_bad_audio, write_every_format, write_long_wav
from omnivec.audio import iter_windows, probe
from omnivec.errors import DecodeError
from omnivec.pipeline.run import ingest
from omnivec.query import search
from omnivec.store import Store

RATE = 48000


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3", "m4a", "aac", "opus", "webm"])
def test_every_container_decodes_to_48k_mono(tmp_path, ext):
    path = write_every_format(tmp_path)[ext]
    info = probe(str(path))
    assert info.backend == ("soundfile" if ext in ("wav", "flac", "ogg", "mp3") else "pyav")
    windows = list(iter_windows(info, RATE, 10.0, 10.0))
    assert len(windows) == 1
    w = windows[0]
    assert w.samples.dtype == np.float32 and w.samples.shape == (10 * RATE,)
    assert w.start_s == 0.0 and w.end_s == pytest.approx(3.0, abs=0.12)  # codecs add priming samples
    real = w.samples[: int(2.5 * RATE)]
    assert 0.15 < np.abs(real).max() <= 1.0  # the tone survived decoding and resampling
    assert np.all(w.samples[int(3.2 * RATE):] == 0)  # padding is silence, not repeated audio


def test_windows_cover_the_file_and_pad_the_last(tmp_path):
    path = tmp_path / "25s.wav"
    sf.write(path, sine(25, 16000), 16000)
    info = probe(str(path))
    wins = list(iter_windows(info, RATE, 10.0, 10.0))
    assert [(w.start_s, w.end_s) for w in wins] == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]
    assert np.all(wins[-1].samples[5 * RATE + 100:] == 0) and np.abs(wins[-1].samples[: 5 * RATE]).max() > 0.1
    hop5 = list(iter_windows(info, RATE, 10.0, 5.0))
    assert [(w.start_s, w.end_s) for w in hop5] == [(0.0, 10.0), (5.0, 15.0), (10.0, 20.0), (15.0, 25.0)]
    exact = tmp_path / "20s.wav"
    sf.write(exact, sine(20, 16000), 16000)
    assert [(w.start_s, w.end_s) for w in iter_windows(probe(str(exact)), RATE, 10.0, 10.0)] == [
        (0.0, 10.0), (10.0, 20.0)]


def test_windows_are_bit_identical_across_reads(tmp_path):
    path = tmp_path / "x.flac"
    sf.write(path, sine(13, 44100, freq=523.0), 44100)
    a = [w.samples for w in iter_windows(probe(str(path)), RATE, 10.0, 10.0)]
    b = [w.samples for w in iter_windows(probe(str(path)), RATE, 10.0, 10.0)]
    assert len(a) == 2 and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_one_hour_file_streams_in_flat_memory(tmp_path):
    path = write_long_wav(tmp_path / "hour.wav", 3600)
    tracemalloc.start()
    count = 0
    for w in iter_windows(probe(str(path)), RATE, 10.0, 10.0):
        count += 1
        last = w
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 360 and last.end_s == pytest.approx(3600.0)
    # the whole file at 48 kHz float32 would be 691 MB; a window is 1.9 MB
    assert peak < 40 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


def test_nan_samples_are_an_error(tmp_path):
    bad = write_bad_audio(tmp_path / "b")
    nan = next(p for p in bad if p.endswith("nan.wav"))
    with pytest.raises(DecodeError, match="non-finite"):
        list(iter_windows(probe(nan), RATE, 10.0, 10.0))


def test_bad_audio_becomes_error_rows_and_the_rest_gets_vectors(av_settings, tmp_path):
    expected = write_bad_audio(tmp_path / "bad")
    report = ingest([str(tmp_path / "bad")], av_settings)
    store = Store(av_settings.store)
    errors = {r["uri"]: r["message"] for r in store.read("errors").to_pylist()}
    for uri, words in expected.items():
        if words is None:
            assert uri not in errors, errors.get(uri)
        else:
            assert words in errors[uri].lower(), (uri, errors.get(uri))
    embedded = {r["uri"] for r in vectors_of(store, "clap").to_pylist()}
    assert embedded == {u for u, w in expected.items() if w is None}
    assert report.counts["audio"]["failed"] == sum(w is not None for w in expected.values())


def _direct_audio_vectors(model_dir: Path, windows: list[np.ndarray]) -> np.ndarray:
    from transformers import ClapModel, ClapProcessor

    model = ClapModel.from_pretrained(model_dir).eval()
    proc = ClapProcessor.from_pretrained(model_dir)
    with torch.inference_mode():
        feats = proc.feature_extractor(windows, sampling_rate=RATE, return_tensors="pt")
        out = model.get_audio_features(**feats)
    v = out.pooler_output if hasattr(out, "pooler_output") else out
    return v.numpy()


def test_stored_vectors_equal_direct_clap_and_runs_are_identical(av_settings, tmp_path, tiny_clap_dir):
    from conftest import make_settings, vectors_of

    root = tmp_path / "a"
    root.mkdir()
    sf.write(root / "long.wav", sine(23, 22050, freq=330.0), 22050)
    (root / "caption.txt").write_text("a dog barking in the park")
    ingest([str(root)], av_settings)
    rows = sorted((r for r in vectors_of(av_settings.store, "clap").to_pylist() if r["modality"] == "audio"),
                  key=lambda r: r["segment"])
    assert [(r["segment"], r["start_s"], r["end_s"]) for r in rows] == [
        (-1, 0.0, 23.0), (0, 0.0, 10.0), (1, 10.0, 20.0), (2, 20.0, 23.0)]
    windows = [w.samples for w in iter_windows(probe(str(root / "long.wav")), RATE, 10.0, 10.0)]
    direct = _direct_audio_vectors(tiny_clap_dir, windows)
    stored = np.stack([r["vector"] for r in rows[1:]])
    cos = (stored * direct).sum(1) / (np.linalg.norm(stored, axis=1) * np.linalg.norm(direct, axis=1))
    assert cos.min() >= 0.9999, cos
    pooled = direct.mean(0) / np.linalg.norm(direct.mean(0))
    assert float(np.dot(rows[0]["vector"], pooled)) >= 0.9999

    from transformers import ClapModel, ClapProcessor

    model = ClapModel.from_pretrained(tiny_clap_dir).eval()
    tok = ClapProcessor.from_pretrained(tiny_clap_dir).tokenizer
    texts = ["a dog barking in the park", "rain falling on a window"]
    ids = [tok(t)["input_ids"] for t in texts]
    # the inputs differ, so a match below is about this caption, not about every text
    assert ids[0] != ids[1] and min(len(i) for i in ids) > 4, ids
    with torch.inference_mode():
        out = model.get_text_features(**tok(texts, padding=True, return_tensors="pt"))
    t, other = (out.pooler_output if hasattr(out, "pooler_output") else out).numpy()
    t, other = t / np.linalg.norm(t), other / np.linalg.norm(other)
    assert np.abs(t - other).max() > 1e-3
    text_row = next(r for r in vectors_of(av_settings.store, "clap").to_pylist() if r["modality"] == "text")
    assert float(np.dot(text_row["vector"], t)) >= 0.9999
    assert np.abs(np.asarray(text_row["vector"]) - other).max() > 1e-3

    again = make_settings(tmp_path / "store2", Path(av_settings.spaces["clip"].model[len("local-dir:"):]),
                          tiny_clap_dir)
    ingest([str(root)], again)
    rows2 = {r["vector_id"]: r["vector"] for r in vectors_of(again.store, "clap").to_pylist()}
    for r in vectors_of(av_settings.store, "clap").to_pylist():
        assert np.array_equal(np.asarray(r["vector"]), np.asarray(rows2[r["vector_id"]]))  # bit for bit


def test_one_hour_file_gets_vectors(av_settings, tmp_path):
    root = tmp_path / "long"
    root.mkdir()
    write_long_wav(root / "hour.wav", 3600)
    report = ingest([str(root)], av_settings)
    assert report.counts["audio"]["new"] == 1
    rows = vectors_of(av_settings.store, "clap", ["segment", "start_s", "end_s"]).to_pylist()
    assert len(rows) == 361  # 360 windows + the pooled vector
    assert max(r["end_s"] for r in rows) == pytest.approx(3600.0)


def test_audio_search_by_text_and_by_file(av_settings, tmp_path):
    root = tmp_path / "s"
    root.mkdir()
    sf.write(root / "a.wav", sine(4, 16000, 440), 16000)
    sf.write(root / "b.wav", np.random.default_rng(1).standard_normal(16000 * 25).astype(np.float32) * 0.1, 16000)
    (root / "note.txt").write_text("a note about sounds")
    ingest([str(root)], av_settings)
    hits = search("a dog barking", modality="audio", k=5, settings=av_settings)
    assert {h.uri for h in hits} == {str(root / "a.wav"), str(root / "b.wav")}  # one hit per file
    assert all(h.space == "clap" and h.start_s is not None and h.end_s is not None for h in hits)
    same = search(audio=root / "a.wav", k=1, settings=av_settings)
    assert same[0].uri == str(root / "a.wav") and same[0].score == pytest.approx(1.0, abs=1e-4)
    assert (same[0].start_s, same[0].end_s) == (0.0, 4.0)


def test_cli_audio_search_json_carries_window_offsets(av_settings, tmp_path, tiny_clip_dir, tiny_clap_dir):
    import json
    import subprocess
    import sys

    root = tmp_path / "cli"
    root.mkdir()
    sf.write(root / "long.wav", sine(14, 16000, 440), 16000)
    flags = ["--store", str(tmp_path / "cli-store"), "--model", f"local-dir:{tiny_clip_dir}",
             "--clap-model", str(tiny_clap_dir)]
    cli = [sys.executable, "-m", "flows.cli"]
    cwd = Path(__file__).resolve().parents[1]
    import os

    env = {**os.environ, "OMNIVEC_SPACES__TEXT__ENABLED": "false"}
    done = subprocess.run([*cli, "ingest", str(root), *flags, "--local", "--json"], capture_output=True,
                          text=True, cwd=cwd, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    res = subprocess.run([*cli, "search", "a dog barking", "--modality", "audio", "--json", *flags],
                         capture_output=True, text=True, cwd=cwd, timeout=300, env=env)
    hits = json.loads(res.stdout)
    assert len(hits) == 1 and hits[0]["space"] == "clap"
    assert (hits[0]["start_s"], hits[0]["end_s"]) in {(0.0, 10.0), (10.0, 14.0)}
    res = subprocess.run([*cli, "search", "--audio", str(root / "long.wav"), "--json", *flags],
                         capture_output=True, text=True, cwd=cwd, timeout=300, env=env)
    hit = json.loads(res.stdout)[0]
    assert hit["uri"] == str(root / "long.wav") and {"start_s", "end_s", "score"} <= set(hit)
