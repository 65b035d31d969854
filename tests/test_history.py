"""Time travel, restore, retiring spaces, and the spaces/runs listings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import vectors_of, vtable
from omnivec.errors import OmnivecError
from omnivec.pipeline.run import ingest
from omnivec.query import search
from omnivec.store import Store
from omnivec.store.history import restore


def _snapshot(hits):
    return [(h.uri, round(h.score, 6)) for h in hits]


def _rows(store, space):
    return sorted((r["vector_id"], tuple(r["vector"])) for r in vectors_of(store, space).to_pylist())


def test_as_of_search_returns_the_old_results(settings, corpus):
    first = ingest([str(corpus)], settings)
    before = _snapshot(search("a steam train", k=24, settings=settings))
    store = Store(settings.store)
    version_then = int(store.table(vtable(store, "clip")).version)
    time.sleep(0.05)
    moment = datetime.now(UTC)
    time.sleep(0.05)
    (corpus / "texts" / "trains.md").write_text("completely different words about cheese")
    next(iter(sorted((corpus / "images").iterdir()))).unlink()
    later = ingest([str(corpus)], settings)
    now = _snapshot(search("a steam train", k=24, settings=settings))
    assert now != before and len(now) == 23
    assert _snapshot(search("a steam train", k=24, settings=settings, as_of=first.run_name)) == before
    assert _snapshot(search("a steam train", k=24, settings=settings, as_of=str(version_then))) == before
    assert _snapshot(search("a steam train", k=24, settings=settings, as_of=moment.isoformat())) == before
    assert _snapshot(search("a steam train", k=24, settings=settings, as_of=later.run_name)) == now
    with pytest.raises(OmnivecError, match="no run named"):
        search("x", settings=settings, as_of="no-such-run")


def test_restore_is_a_new_version_equal_to_the_tag(settings, corpus):
    first = ingest([str(corpus)], settings)
    store = Store(settings.store)
    at_first = _rows(store, "clip")
    (corpus / "texts" / "ocean.txt").write_text("a new text about mountains")
    (corpus / "texts" / "extra.txt").write_text("one more file")
    ingest([str(corpus)], settings)
    changed = _rows(store, "clip")
    assert changed != at_first
    table = store.table(vtable(store, "clip"))
    version_before = int(table.version)
    tag, restored = restore(store, first.run_name)
    table.checkout_latest()
    assert int(table.version) > version_before  # rolled back forward: history is kept
    assert _rows(store, "clip") == at_first
    assert store.count("items") == 24
    old = store.db.open_table(table.name)
    old.checkout(version_before)  # the later state is still in history
    assert sorted((r["vector_id"], tuple(r["vector"])) for r in old.to_arrow().to_pylist()) == changed
    runs = {r["run_name"]: r for r in store.read("runs").to_pylist()}
    assert runs[tag]["status"] == "restored" and len(runs) == 3  # the run log is not rolled back
    assert tag in table.tags.list()


def test_retired_space_is_not_searched_until_activated(settings, corpus):
    ingest([str(corpus)], settings)
    store = Store(settings.store)
    sid = store.space_rows("clip")[0]["space_id"]
    store.set_space_status(sid[:6], "retired")
    with pytest.raises(OmnivecError, match="retired"):
        search("a red circle", settings=settings, space="clip")
    with pytest.raises(OmnivecError, match="retired"):  # the only space: nothing left to search
        search("a red circle", settings=settings)
    store.set_space_status(sid, "active")
    assert search("a red circle", k=1, settings=settings)


def test_cli_spaces_runs_restore_and_as_of(tmp_path, corpus, tiny_clip_dir):
    flags = ["--store", str(tmp_path / "store"), "--model", f"local-dir:{tiny_clip_dir}"]
    env = {**os.environ, "OMNIVEC_SPACES__TEXT__ENABLED": "false", "OMNIVEC_SPACES__CLAP__ENABLED": "false"}
    cwd = Path(__file__).resolve().parents[1]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True,
                              env=env, cwd=cwd, timeout=300)

    assert cli("ingest", str(corpus), *flags, "--local").returncode == 0
    (corpus / "texts" / "cooking.txt").unlink()
    assert cli("ingest", str(corpus), *flags, "--local").returncode == 0
    runs = json.loads(cli("runs", "--store", flags[1], "--json").stdout)
    assert len(runs) == 2 and runs[0]["counts"]["text"]["deleted"] == 1
    assert "items" in runs[1]["tagged_tables"]
    spaces = json.loads(cli("spaces", "--store", flags[1], "--json").stdout)
    assert [(s["name"], s["rows"], s["status"]) for s in spaces] == [("clip", 23, "active")]
    old = json.loads(cli("search", "bread", *flags, "--as-of", runs[1]["run_name"], "-k", "30", "--json").stdout)
    assert any(h["uri"].endswith("cooking.txt") for h in old)
    res = cli("restore", "--to", runs[1]["run_name"], "--store", flags[1])
    assert res.returncode == 0 and "restored" in res.stdout
    assert json.loads(cli("spaces", "--store", flags[1], "--json").stdout)[0]["rows"] == 24
    res = cli("spaces", "retire", spaces[0]["space_id"], "--store", flags[1])
    assert res.returncode == 0 and "retired" in res.stdout
    res = cli("search", "bread", *flags)
    assert res.returncode == 2 and "retired" in res.stderr and "Traceback" not in res.stderr


def test_a_retired_space_is_left_out_of_a_multi_space_search(tmp_path, corpus, tiny_clip_dir, tiny_clap_dir):
    from conftest import make_settings

    settings = make_settings(tmp_path / "store", tiny_clip_dir, tiny_clap_dir)
    ingest([str(corpus / "texts")], settings)
    assert set(search("bread", k=3, settings=settings)[0].ranks) == {"clip", "clap"}
    store = Store(settings.store)
    store.set_space_status(store.space_rows("clap")[0]["space_id"], "retired")
    hits = search("bread", k=3, settings=settings)
    assert hits and all(set(h.ranks) == {"clip"} for h in hits)


def test_drift_canary_is_quiet_then_fires_when_preprocessing_changes_behind_the_store(settings, corpus):
    from torchvision import transforms

    from omnivec.encoders import load_encoder

    first = ingest([str(corpus)], settings)
    assert first.drift["clip"]["ok"] and first.drift["clip"]["min_cosine"] >= 0.9999
    assert first.drift["clip"]["items"] == 8  # 4 images + 4 texts
    enc = load_encoder(settings.spaces["clip"], settings.device)
    original = enc.preprocess
    try:  # same recipe, same space_id, but images now lose their colour before the model sees them
        enc.preprocess = transforms.Compose([transforms.Grayscale(num_output_channels=3), original])
        noop = ingest([str(corpus)], settings)  # writes nothing: its canary is skipped, and says so
        (corpus / "texts" / "later.txt").write_text("A note written after the first run.\n")
        second = ingest([str(corpus)], settings)  # writes one file's vectors: the canary runs
    finally:
        enc.preprocess = original
    assert noop.embedded == 0 and not noop.drifted
    assert noop.drift == {"clip": {"skipped": True, "reason": "no vectors written in this run"}}
    assert second.embedded == 1
    assert second.drifted == ["clip"] and second.drift["clip"]["min_cosine"] < 0.999
    assert "Drift canary" in second.to_markdown()
    quiet = ingest([str(corpus)], settings.model_copy(update={"canary_sample": 0}))
    assert quiet.drift == {}


def test_as_of_before_a_space_existed_answers_from_the_spaces_of_then(settings, av_settings, corpus):
    first = ingest([str(corpus)], settings.model_copy(update={"store": av_settings.store}))  # clip only
    ingest([str(corpus)], av_settings)  # the clap space is added: its table is created now
    store = Store(av_settings.store)
    assert {name for name, _, _ in store.vector_tables()} == {"clip", "clap"}

    now = search("a red circle", k=30, settings=av_settings)
    assert "clap" in {n for h in now for n in h.ranks}
    then = search("a red circle", k=30, settings=av_settings, as_of=first.run_name)
    assert len(then) == 24 and {n for h in then for n in h.ranks} == {"clip"}
    assert then == search("a red circle", k=30, space="clip", settings=av_settings, as_of=first.run_name)
    with pytest.raises(OmnivecError, match="had no vectors as of"):
        search("a red circle", space="clap", settings=av_settings, as_of=first.run_name)
