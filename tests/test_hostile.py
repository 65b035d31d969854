"""Hostile input (tests/fixtures/hostile.py) through the core pipeline and the Prefect flow.

Every file ends as vectors or as an `errors` row whose message names its problem; the run completes;
a re-run changes nothing; memory stays bounded. And the per-file decode timeout: a decoder stuck on
a file costs that file, never the run.
"""

from __future__ import annotations

import faulthandler
import os
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from conftest import make_settings, vectors_of
from fixtures.bad_files import good_jpeg, good_png
from fixtures.hostile import (
    BIG_TEXT_BYTES,
    EITHER,
    ERROR,
    RUNNING_AS_ROOT,
    VECTORS,
    HostileCorpus,
    write_heavy_corpus,
    write_hostile_corpus,
)
from omnivec.errors import DecodeError, SourceError
from omnivec.pipeline import batch
from omnivec.pipeline.batch import STRAGGLERS, DecodeGuard, DecodeTimeout
from omnivec.pipeline.run import ingest
from omnivec.store import Store

HANG_S = 600  # a test here running longer than this is a hang: dump every thread's stack and exit
# Peak RSS growth of the core run over the whole corpus. Its own working set (LanceDB, torch, two
# batches of audio windows and CLAP features in flight) grows RSS by ~0.3-0.5 GB on a warm process;
# decoding any of the bombs would take 2.7 GB (30000x30000 RGB) to 13 GB, /dev/zero has no end.
RSS_GROWTH_BOUND = 1536 << 20
# Peak traced (Python + numpy) memory of the heavy-input run. Reading the 100 MB single-line file
# whole would take 100 MB at once, expanding the Parquet bomb's 2 million rows ~0.5 GB.
TRACED_BOUND = BIG_TEXT_BYTES // 2


@pytest.fixture(autouse=True)
def no_hang():
    faulthandler.dump_traceback_later(HANG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def release():
    """An event the injected stuck decoders wait on; set at teardown so their threads end."""
    event = threading.Event()
    yield event
    event.set()
    deadline = time.monotonic() + 10
    while STRAGGLERS.count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert STRAGGLERS.count == 0, "abandoned decoder threads did not finish after being released"


def mutate_after_discovery(monkeypatch: pytest.MonkeyPatch, corpus: HostileCorpus) -> None:
    """Delete/rewrite the 'between' files after the plan is made, before any batch reads them."""
    import omnivec.pipeline.run as run

    real = run.make_plan

    def make_plan(*args: Any, **kwargs: Any) -> Any:
        plan = real(*args, **kwargs)
        corpus.mutate()
        return plan

    monkeypatch.setattr(run, "make_plan", make_plan)


def outcomes(store_uri: str, spaces: tuple[str, ...]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    store = Store(store_uri)
    errors = {r["uri"]: r for r in store.read("errors").to_pylist()}
    embedded: set[str] = set()
    for space in spaces:
        embedded |= {r["uri"] for r in vectors_of(store, space, ["uri"]).to_pylist()}
    return errors, embedded


def mismatches(corpus: HostileCorpus, errors: dict[str, dict[str, Any]], embedded: set[str]) -> list[str]:
    """Every way the store disagrees with the corpus's expectations (empty: all good)."""
    bad = []
    for uri, case in corpus.cases.items():
        row = errors.get(uri)
        shown = repr(uri[len(str(corpus.root)):])
        if uri in embedded and row is not None:
            bad.append(f"{shown}: has vectors and an errors row ({row['message']})")
            continue
        got = VECTORS if uri in embedded else ERROR if row is not None else None
        if got is None:
            bad.append(f"{shown}: neither vectors nor an errors row: lost")
        elif case.expect != EITHER and got != case.expect:
            detail = f" ({row['stage']}: {row['message']})" if row else ""
            bad.append(f"{shown}: expected {case.expect}, got {got}{detail}" + (f" [{case.note}]" if case.note else ""))
        elif row is not None:
            msg = row["message"] or ""
            if case.words and not any(w.lower() in msg.lower() for w in case.words):
                bad.append(f"{shown}: message {msg!r} names none of {case.words}")
            if case.stage and row["stage"] != case.stage:
                bad.append(f"{shown}: stage {row['stage']}, expected {case.stage} ({msg})")
            if not msg.strip() or "Traceback" in msg or len(msg) > 1000:
                bad.append(f"{shown}: unreadable message {msg[:200]!r}")
    for uri in set(errors) - set(corpus.cases):
        bad.append(f"unexpected errors row for {uri!r}: {errors[uri]['message']}")
    return bad


def _warm(settings: Any) -> None:
    """Load the models first, so memory measured afterwards is the run's, not the model's."""
    from omnivec.encoders import load_encoder

    for name in settings.enabled_spaces():
        load_encoder(settings.spaces[name], settings.device)


def _reset_peak_rss() -> int | None:
    """Reset this process's peak RSS to its current RSS (Linux); returns it, or None if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _rss("VmHWM")
    except OSError:
        return None


def _rss(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(field)


# --------------------------------------------------------------------------- the whole corpus


def test_hostile_corpus_through_the_core_pipeline(tmp_path, tiny_clip_dir, tiny_clap_dir, monkeypatch):
    corpus = write_hostile_corpus(tmp_path / "hostile")
    try:
        mutate_after_discovery(monkeypatch, corpus)
        s = make_settings(tmp_path / "store", tiny_clip_dir, tiny_clap_dir, batch_size=8)
        assert s.decode_timeout_s == 60  # the default guards every read and decode here
        _warm(s)
        before = _reset_peak_rss()
        report = ingest([str(corpus.root)], s)
        growth = _rss("VmHWM") - before if before is not None else None

        errors, embedded = outcomes(s.store, ("clip", "clap"))
        assert mismatches(corpus, errors, embedded) == []
        assert report.failed == len(errors) == len(corpus.expected(ERROR)) + len(
            [u for u, c in corpus.expected(EITHER).items() if u in errors])
        assert report.embedded == len(embedded)
        if growth is not None:
            assert growth < RSS_GROWTH_BOUND, f"peak RSS grew by {growth / 2**20:.0f} MB"
        store = Store(s.store)
        vectors = {sp: store.count(t) for sp, _, t in store.vector_tables()}

        # a re-run reads nothing again: files that failed stay quarantined while unchanged; only
        # what discovery finds wrong (links, pipes, names) is reported again, as it is seen again
        again = ingest([str(corpus.root)], s)
        errors2, embedded2 = outcomes(s.store, ("clip", "clap"))
        # deleted files take their errors with them; so do files now links out of the corpus (skipped, counted)
        gone = {u for u, c in corpus.cases.items() if u in errors and (
            c.words == ("vanished",) or "folder" in c.words or "outside the source folders" in c.words)}
        assert set(errors2) == set(errors) - gone
        assert again.links_skipped == sum("outside the source folders" in c.words for c in corpus.cases.values())
        assert embedded2 == embedded and again.embedded == 0
        assert {sp: store.count(t) for sp, _, t in store.vector_tables()} == vectors
        discovered = [r for r in errors2.values() if r["stage"] == "discover"]
        assert again.failed == len(discovered)
        assert {r["attempts"] for r in errors2.values()} == {1}

        # --retry-errors reads exactly the files that failed, once more
        retried = ingest([str(corpus.root)], s, retry_errors=True)
        errors3, embedded3 = outcomes(s.store, ("clip", "clap"))
        assert set(errors3) == set(errors2) and embedded3 == embedded and retried.embedded == 0
        assert {r["attempts"] for r in errors3.values() if r["stage"] != "discover"} == {2}
    finally:
        corpus.cleanup()


def test_heavy_inputs_are_refused_before_they_take_memory(tmp_path, tiny_clip_dir):
    """tracemalloc over the run: the 100 MB file is refused from its size, the Parquet bomb from its
    footer, the bombs from their headers, /dev/zero at discovery; nothing is read whole."""
    corpus = write_heavy_corpus(tmp_path / "heavy")
    s = make_settings(tmp_path / "store", tiny_clip_dir, batch_size=8)
    _warm(s)
    tracemalloc.start()
    try:
        report = ingest([str(corpus.root)], s)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    errors, embedded = outcomes(s.store, ("clip",))
    assert mismatches(corpus, errors, embedded) == []
    assert report.failed == len(corpus.expected(ERROR))
    assert peak < TRACED_BOUND, f"peak traced memory {peak / 2**20:.0f} MB"


@pytest.mark.flow
def test_hostile_corpus_through_the_prefect_flow(prefect_harness, tmp_path, tiny_clip_dir, tiny_clap_dir,
                                                 monkeypatch):
    from flows.ingest import run_ingest_flow

    corpus = write_hostile_corpus(tmp_path / "hostile", big_text=False)
    try:
        mutate_after_discovery(monkeypatch, corpus)
        s = make_settings(tmp_path / "store", tiny_clip_dir, tiny_clap_dir, batch_size=8)
        report = run_ingest_flow([str(corpus.root)], s)
        errors, embedded = outcomes(s.store, ("clip", "clap"))
        assert mismatches(corpus, errors, embedded) == []
        assert report.failed == len(errors)
    finally:
        corpus.cleanup()


# --------------------------------------------------------------------------- permissions, names


@pytest.mark.skipif(RUNNING_AS_ROOT, reason="this process ignores permission bits (root): chmod 000 does not "
                    "make a file unreadable; test_permission_denied_while_reading covers the handling")
def test_unreadable_file_and_folder_are_error_rows(settings, tmp_path):
    root = tmp_path / "perm"
    root.mkdir()
    (root / "ok.png").write_bytes(good_png())
    (root / "no-read.jpg").write_bytes(good_jpeg())
    (root / "locked").mkdir()
    (root / "locked" / "inside.png").write_bytes(good_png())
    os.chmod(root / "no-read.jpg", 0)
    os.chmod(root / "locked", 0)
    try:
        report = ingest([str(root)], settings)
    finally:
        os.chmod(root / "no-read.jpg", 0o644)
        os.chmod(root / "locked", 0o755)
    errors = {Path(r["uri"]).name: r for r in Store(settings.store).read("errors").to_pylist()}
    assert "permission denied" in errors["no-read.jpg"]["message"].lower()
    assert "permission denied" in errors["locked"]["message"].lower() and errors["locked"]["stage"] == "discover"
    assert report.embedded == 1


def test_permission_denied_while_reading(settings, tmp_path, monkeypatch):
    """EACCES injected where the file is opened, so the handling is tested as root too."""
    root = tmp_path / "perm"
    root.mkdir()
    (root / "ok.png").write_bytes(good_png())
    (root / "no-read.jpg").write_bytes(good_jpeg())
    real_open = os.open

    def refusing_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if os.fspath(path).endswith("no-read.jpg"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    report = ingest([str(root)], settings)
    errors = {Path(r["uri"]).name: r for r in Store(settings.store).read("errors").to_pylist()}
    assert errors["no-read.jpg"]["message"] == "permission denied while reading the file"
    assert errors["no-read.jpg"]["stage"] == "read" and report.embedded == 1


def test_a_root_whose_name_is_not_utf8_is_refused_up_front(tmp_path):
    from omnivec.sources import discover

    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9"
    os.mkdir(raw)
    with pytest.raises(SourceError, match="not valid UTF-8"):
        discover([os.fsdecode(raw)])


# --------------------------------------------------------------------------- the decode timeout


def test_a_stuck_image_decoder_costs_its_file_not_the_run(settings, tmp_path, monkeypatch, release):
    root = tmp_path / "imgs"
    root.mkdir()
    stuck = {good_jpeg((1, 1, 1)), good_jpeg((2, 2, 2))}
    for i, data in enumerate(sorted(stuck)):
        (root / f"stuck-{i}.jpg").write_bytes(data)
    (root / "a.jpg").write_bytes(good_jpeg((200, 0, 0)))
    (root / "b.png").write_bytes(good_png())
    (root / "c.txt").write_text("words that decode fine")
    real = batch.decode_image

    def spinning(data: bytes, *limits: int) -> Any:
        if data in stuck:
            release.wait(60)  # a decoder looping on a hostile file
        return real(data, *limits)

    monkeypatch.setattr(batch, "decode_image", spinning)
    s = settings.model_copy(update={"decode_timeout_s": 0.5})
    t0 = time.perf_counter()
    report = ingest([str(root)], s)
    assert time.perf_counter() - t0 < 30  # the stuck calls would take 60 s each
    errors = {Path(r["uri"]).name: r for r in Store(s.store).read("errors").to_pylist()}
    assert set(errors) == {"stuck-0.jpg", "stuck-1.jpg"}
    for row in errors.values():
        assert row["error_class"] == "DecodeTimeout" and row["stage"] == "decode"
        assert "decoding the file took longer than decode_timeout_s=0.5 s" in row["message"]
    embedded = {Path(r["uri"]).name for r in vectors_of(s.store, "clip", ["uri"]).to_pylist()}
    assert embedded == {"a.jpg", "b.png", "c.txt"} and report.failed == 2
    assert STRAGGLERS.count <= 2  # abandoned, still waiting: released at teardown


def test_a_decoder_stuck_mid_stream_drops_the_file_and_its_windows(av_settings, tmp_path, monkeypatch, release):
    import soundfile as sf

    import omnivec.audio as audio
    from fixtures.audio_files import sine

    root = tmp_path / "snd"
    root.mkdir()
    sf.write(root / "ok.wav", sine(3, 16000), 16000)
    sf.write(root / "stuck.wav", sine(25, 16000), 16000)  # three windows: stalls after the first
    real = audio.iter_mono

    def stalling(info: Any, target_rate: int) -> Any:
        for i, block in enumerate(real(info, target_rate)):
            if info.path.endswith("stuck.wav") and i == 6:  # 2 s blocks: inside the second window
                release.wait(60)
            yield block

    monkeypatch.setattr(audio, "iter_mono", stalling)
    s = av_settings.model_copy(update={"decode_timeout_s": 0.5})
    report = ingest([str(root)], s)
    errors = {Path(r["uri"]).name: r for r in Store(s.store).read("errors").to_pylist()}
    assert set(errors) == {"stuck.wav"} and errors["stuck.wav"]["error_class"] == "DecodeTimeout"
    assert "decoding one window took longer than decode_timeout_s=0.5 s" in errors["stuck.wav"]["message"]
    windows = vectors_of(s.store, "clap", ["uri"]).to_pylist()
    assert {Path(r["uri"]).name for r in windows} == {"ok.wav"}  # the first window is dropped too
    assert report.failed == 1


def test_decode_guard_passes_results_and_errors_through():
    guard = DecodeGuard(5.0)
    try:
        assert guard.call(lambda: 42, "x") == 42
        with pytest.raises(DecodeError, match="bad"):
            guard.call(lambda: (_ for _ in ()).throw(DecodeError("bad")), "x")
        with pytest.raises(KeyError):
            guard.call(lambda: {}["missing"], "x")
        assert list(guard.iterate(iter(range(5)), "w")) == [0, 1, 2, 3, 4]
        assert list(guard.iterate([7, 8], "w")) == [7, 8]
        assert guard.call(threading.get_ident, "x") != threading.get_ident()  # on its helper thread
    finally:
        guard.close()
    inline = DecodeGuard(0)
    assert inline.call(threading.get_ident, "x") == threading.get_ident()  # 0: no limit, no thread


def test_stuck_decoders_are_capped_per_process(monkeypatch, release):
    monkeypatch.setattr(batch, "MAX_STRAGGLERS", 1)
    first = DecodeGuard(0.2)
    with pytest.raises(DecodeTimeout, match="took longer than"):
        first.call(lambda: release.wait(60), "decoding the file")
    assert STRAGGLERS.count == 1
    second = DecodeGuard(0.2)
    t0 = time.perf_counter()
    with pytest.raises(DecodeTimeout, match="still stuck"):
        second.call(lambda: 1, "decoding the file")  # waits for room up to the timeout, then refuses
    assert time.perf_counter() - t0 >= 0.2
    release.set()
    assert second.call(lambda: 1, "decoding the file") == 1  # the straggler ended: room again
    second.close()
    first.close()


# --------------------------------------------------------------------------- decoder-level regressions


def test_special_files_are_refused_without_blocking(tmp_path):
    from omnivec.audio import probe
    from omnivec.media import read_file

    os.mkfifo(tmp_path / "pipe.jpg")
    os.mkfifo(tmp_path / "pipe.wav")
    os.symlink("/dev/zero", tmp_path / "zero.txt")
    for path, call in ((tmp_path / "pipe.jpg", lambda p: read_file(p, 1 << 20)), (tmp_path / "pipe.wav", probe),
                       (tmp_path / "zero.txt", lambda p: read_file(p, 1 << 20))):
        with pytest.raises(DecodeError, match="not a regular file") as info:
            call(str(path))  # before: a pipe blocked forever, /dev/zero was read until memory ran out
        assert info.value.stage == "read"


def test_audio_headers_no_recording_has_are_refused(tmp_path):
    from fixtures.hostile import wav_with_header
    from omnivec.audio import probe

    for rate in (1, 999, 768_001):
        (tmp_path / f"r{rate}.wav").write_bytes(wav_with_header(rate=rate))
        with pytest.raises(DecodeError, match="sample rate"):  # 1 Hz: a 1 s file became 4.4 hours of windows
            probe(str(tmp_path / f"r{rate}.wav"))
    (tmp_path / "ok.wav").write_bytes(wav_with_header(rate=1000))
    assert probe(str(tmp_path / "ok.wav")).sample_rate == 1000


def test_audio_blocks_are_bounded_over_all_channels(tmp_path, monkeypatch):
    import numpy as np
    import soundfile as sf

    import omnivec.audio as audio

    sf.write(tmp_path / "wide.wav", np.zeros((4000, 300), np.float32), 8000)
    monkeypatch.setattr(audio, "MAX_BLOCK_SAMPLES", 30_000)
    blocks = list(audio._blocks_soundfile(audio.probe(str(tmp_path / "wide.wav"))))
    assert sum(b.shape[0] for b in blocks) == 4000 and max(b.size for b in blocks) <= 30_000


def test_a_long_word_is_cut_without_tokenizing_it_whole():
    from omnivec.chunking import chunk_text

    calls: list[int] = []

    def quadratic(s: str) -> int:  # BPE tokenizers cost ~len(word)**2
        calls.append(len(s))
        return sum(len(w) for w in s.split())

    text = "start " + "abcdefghij" * 10_000 + " end"
    t0 = time.perf_counter()
    chunks = chunk_text(text, quadratic, max_tokens=75)
    assert time.perf_counter() - t0 < 5 and max(calls) <= 300  # before: one call on the 100 KB word
    assert "".join(c.text for c in chunks).replace(" ", "") == text.replace(" ", "")  # nothing lost
    assert all(quadratic(c.text) <= 75 for c in chunks)


def test_manifest_limits_and_caption_uris(tmp_path, monkeypatch):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    import omnivec.manifests as manifests
    from omnivec.manifests import read_caption, read_manifest, split_caption_uri

    monkeypatch.setattr(manifests, "MAX_MANIFEST_ROWS", 10)
    pq.write_table(pa.table({"caption": [f"c{i}" for i in range(11)]}), tmp_path / "m.parquet")
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"caption": f"c{i}"}) + "\n" for i in range(11)))
    (tmp_path / "m.csv").write_text("caption\n" + "".join(f"c{i}\n" for i in range(11)))
    for name in ("m.parquet", "m.jsonl", "m.csv"):
        with pytest.raises(DecodeError, match="over the 10-row limit"):
            read_manifest(str(tmp_path / name))
    # a JSONL file whose every row has its own key: columns are gathered in linear time
    monkeypatch.setattr(manifests, "MAX_MANIFEST_ROWS", 1_000_000)
    (tmp_path / "keys.jsonl").write_text("".join(json.dumps({f"k{i}": 1, "caption": "x"}) + "\n" for i in range(30000)))
    t0 = time.perf_counter()
    assert len(read_manifest(str(tmp_path / "keys.jsonl"))) == 30000
    assert time.perf_counter() - t0 < 10
    # '#' in the manifest's folder and '&' in a column name; a negative or odd row is no caption URI
    folder = tmp_path / "a#b"
    folder.mkdir()
    (folder / "m.jsonl").write_text(json.dumps({"caption&x": "hello"}) + "\n")
    (uri,) = [u for row in read_manifest(str(folder / "m.jsonl")) for _, u, _ in row.captions]
    assert split_caption_uri(uri) == (str(folder / "m.jsonl"), 0, "caption&x")
    assert read_caption(uri) == "hello"
    for bad in (f"{folder}/m.jsonl#row=-1&col=caption&x", f"{folder}/m.jsonl#row= 0&col=caption&x", "x#row=0&col=c"):
        assert split_caption_uri(bad) is None
        with pytest.raises(DecodeError):
            read_caption(bad)


def test_a_caption_over_the_text_limit_is_an_error_row(settings, tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    (root / "m.csv").write_text("caption\nshort one\n" + "word " * 40 + "\n")
    s = settings.model_copy(update={"max_text_bytes": 100})
    ingest([str(root)], s)
    (row,) = Store(s.store).read("errors").to_pylist()
    assert row["uri"].endswith("#row=1&col=caption") and "over the 100-byte limit" in row["message"]
