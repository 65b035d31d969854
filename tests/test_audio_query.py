"""Audio queries stream: their pooled vector is ingest's, memory does not grow with their length, a
text query never waits for a whole audio query, and an over-long query is refused."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

import omnivec.encoders.clap as clap_module
from conftest import vectors_of
from fixtures.audio_files import sine, write_av, write_long_wav
from omnivec.audio import probe_query
from omnivec.encoders import load_encoder
from omnivec.encoders.base import FairLock
from omnivec.errors import OmnivecError
from omnivec.pipeline.run import ingest
from omnivec.query import search

WAIT_S = 120  # how long a step may block before the test calls it stuck (a deadlock guard, not a timing)


def _pooled(store: object, uri: str) -> np.ndarray:
    rows = [r for r in vectors_of(store, "clap").to_pylist() if r["uri"] == uri and r["segment"] == -1]
    assert len(rows) == 1
    return np.asarray(rows[0]["vector"], dtype=np.float32)


def test_an_audio_query_vector_equals_the_pooled_vector_ingest_stored(av_settings, tmp_path):
    root = tmp_path / "a"
    root.mkdir()
    sf.write(root / "tone.wav", sine(43, 22050, freq=330.0), 22050)  # 5 windows, the last one padded
    noise = np.random.default_rng(3).standard_normal(16000 * 27).astype(np.float32) * 0.1
    sf.write(root / "noise.wav", noise, 16000)
    ingest([str(root)], av_settings)
    stored = {name: _pooled(av_settings.store, str(root / name)) for name in ("tone.wav", "noise.wav")}
    assert np.abs(stored["tone.wav"] - stored["noise.wav"]).max() > 1e-3  # the files' vectors differ
    enc = load_encoder(av_settings.spaces["clap"], av_settings.device)
    for name in stored:
        for group in (2, 3, 64):  # groups that split the windows otherwise than ingest's batches did
            q = enc.embed_query("audio", probe_query(str(root / name), 600), batch_size=group)
            assert np.abs(q - stored[name]).max() <= 1e-6, (name, group)


def test_a_one_hour_audio_query_holds_a_group_of_windows_not_the_hour(av_settings, tmp_path):
    path = write_long_wav(tmp_path / "hour.wav", 3600)
    enc = load_encoder(av_settings.spaces["clap"], av_settings.device)
    info = probe_query(str(path), 3600)
    tracemalloc.start()
    try:
        vec = enc.embed_query("audio", info, batch_size=8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert vec.shape == (enc.dimension,) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-5
    # the hour at 48 kHz float32 is 691 MB; a group of 8 windows is 15 MB (plus their mel features)
    assert peak < 150 * 2**20, f"numpy peak {peak / 2**20:.1f} MiB"


def test_a_text_query_returns_while_an_audio_query_is_between_forwards(av_settings, tmp_path, monkeypatch):
    path = tmp_path / "long.wav"
    sf.write(path, sine(95, 16000), 16000)  # 10 windows
    enc = load_encoder(av_settings.spaces["clap"], av_settings.device)
    reached, gate = threading.Event(), threading.Event()
    real = clap_module.iter_windows

    def gated(*args, **kwargs):  # type: ignore[no-untyped-def]
        for n, window in enumerate(real(*args, **kwargs)):
            if n == 4:  # two groups of 2 embedded; the audio query now waits for the test
                reached.set()
                assert gate.wait(WAIT_S)
            yield window

    monkeypatch.setattr(clap_module, "iter_windows", gated)
    audio: dict[str, object] = {}
    worker = threading.Thread(target=lambda: audio.update(
        vec=enc.embed_query("audio", probe_query(str(path), 600), batch_size=2)), daemon=True)
    worker.start()
    assert reached.wait(WAIT_S)
    text: dict[str, object] = {}
    asker = threading.Thread(target=lambda: text.update(vec=enc.embed_query("text", "a dog barking")), daemon=True)
    asker.start()
    asker.join(WAIT_S)
    answered_first = not asker.is_alive() and worker.is_alive() and "vec" not in audio
    gate.set()
    worker.join(WAIT_S)
    assert answered_first, "the text query waited for the audio query"
    assert not worker.is_alive() and np.asarray(audio["vec"]).shape == (enc.dimension,)
    monkeypatch.setattr(clap_module, "iter_windows", real)
    ungated = enc.embed_query("audio", probe_query(str(path), 600), batch_size=2)
    assert np.abs(ungated - np.asarray(audio["vec"])).max() <= 1e-6


def test_a_thread_waiting_for_the_forward_lock_gets_it_before_its_holder_takes_it_again():
    lock = FairLock()
    order: list[str] = []
    lock.acquire()

    def waiter() -> None:
        with lock:
            order.append("waiter")

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    for _ in range(10**6):  # until the waiter is queued (no sleep-based timing)
        if lock.waiting == 1:
            break
        threading.Event().wait(0.001)
    assert lock.waiting == 1
    lock.release()
    with lock:  # the holder asks again at once: it waits behind the waiter
        order.append("holder")
    t.join(WAIT_S)
    assert order == ["waiter", "holder"]
    assert lock.waiting == 0


def test_a_query_longer_than_max_query_audio_s_is_refused(av_settings, tmp_path):
    root = tmp_path / "q"
    root.mkdir()
    sf.write(root / "short.wav", sine(12, 16000), 16000)
    ingest([str(root)], av_settings)
    long_wav = tmp_path / "long.wav"
    sf.write(long_wav, sine(31, 16000), 16000)
    short = av_settings.model_copy(update={"max_query_audio_s": 30.0})
    with pytest.raises(OmnivecError, match="31 s of audio, over the 30 s") as refused:  # from the header
        search(audio=long_wav, settings=short)
    assert "max_query_audio_s" in str(refused.value)
    webm = write_av(tmp_path / "long.webm", "webm", "libopus", seconds=31)
    assert probe_query(str(webm), 30.0).frames is None  # this container does not say how long it is
    with pytest.raises(OmnivecError, match="runs past 30 s"):  # refused while its windows are decoded
        search(audio=webm, settings=short)
    assert search(audio=root / "short.wav", settings=short)[0].uri == str(root / "short.wav")
    assert search(audio=long_wav, settings=av_settings)  # the default (600 s) takes it
