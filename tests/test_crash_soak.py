"""Crash safety: writers SIGKILLed at chosen store writes, then run again, end as one clean run.

Aimed trials of benchmarks/crash_soak.py (which runs 20+ at random moments): ingests killed at points
that once left the store unlike a clean run (between the errors and the items of a commit, between
dropping a vanished asset and dropping its fused vectors, while tagging the run), an ingest killed
between a commit's vector merge and its items merge (no search hit, and after the next writer no
vector row, without its `items` row), and a maintain, a reembed and a restore killed mid-way.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import make_settings
from omnivec.pipeline.run import ingest
from omnivec.store import Store
from omnivec.store.schema import ITEMS, RUNS, asset_vectors_schema

ROOT = Path(__file__).resolve().parents[1]


def _soak():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("crash_soak", ROOT / "benchmarks" / "crash_soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["crash_soak"] = module
    spec.loader.exec_module(module)
    return module


soak = _soak()
targets = sys.modules["soak_targets"]

# (scenario, kill point): kind:table#k, during the write (0 ms in) or right after it
AIMS = [
    ("fresh", "merge:items#1@during+0"),  # vectors and errors of the first commit written, items not
    ("incremental", "delete:assets#1@after"),  # a vanished asset dropped, its fused vectors not yet
    ("fresh", "tag:items#1@during+0"),  # run row written, some tables tagged, the rest not
]


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_clip_dir, tiny_clap_dir):  # type: ignore[no-untyped-def]
    """Corpus, base store and clean stores of every scenario (ingests, maintain, reembed, restore)."""
    return soak.prepare_here(tmp_path_factory.mktemp("soak"), tiny_clip_dir, tiny_clap_dir, notes=8)


def _killed(ws, scenario: str, aim: str, name: str):  # type: ignore[no-untyped-def]
    """A copy of the scenario's starting store, and the launch of its command killed at ``aim``."""
    store, trace = ws.root / "killed" / name, ws.root / "killed" / f"{name}.trace"
    store.parent.mkdir(exist_ok=True)
    soak.start_store(ws, scenario, store)
    proc, point = soak.start_aimed(ws, store, trace, aim, scenario=scenario)
    launch = soak.finish_child(proc, trace, time.monotonic(), point, timeout=300)
    assert launch.killed, (point, launch.what, launch.stderr)
    assert launch.category == "mid-write" or point.endswith("after"), launch.what
    return store, launch


def test_killed_ingests_end_like_a_clean_run(ws):
    t0 = time.monotonic()
    for scenario, store in ws.clean.items():
        assert soak.invariants(store) == [], scenario
    # the killed runs start together (start-up dominates: imports and model loading)
    started = []
    for n, (scenario, aim) in enumerate(AIMS):
        store, trace = ws.root / f"killed-{n}", ws.root / f"killed-{n}.trace"
        soak.start_store(ws, scenario, store)
        proc, point = soak.start_aimed(ws, store, trace, aim)
        started.append((scenario, store, trace, proc, point))
    results = []
    for scenario, store, trace, proc, point in started:
        launch = soak.finish_child(proc, trace, t0, point, timeout=300)
        assert launch.killed, (point, launch.what, launch.stderr)
        assert launch.category == "mid-write" or point.endswith("after"), launch.what
        ingest([str(ws.corpus)], soak.settings_for(ws, store))  # the next run finishes the job
        results.append((point, launch.what, soak.check(ws, store, ws.clean[scenario])))
    assert all(not problems for _, _, problems in results), results


def test_an_ingest_killed_between_vectors_and_items_shows_and_leaves_no_uncommitted_rows(ws):
    store, launch = _killed(ws, "incremental", "merge:vectors#1@after", "window")
    assert launch.window and launch.what.startswith("commit: after merge vectors_"), launch.what
    assert targets.uncommitted(store)  # the state under test: vector rows ahead of their items rows
    assert targets.ghost_hits(store, soak.settings_for(ws, store), soak.QUERY) == []
    for how in ("ingest", "maintain"):  # the next writer, whatever it is, removes them
        assert targets.next_writer_cleans(store, lambda p: soak.settings_for(ws, p), ws.other, how) == [], how
    ingest([str(ws.corpus)], soak.settings_for(ws, store))
    assert soak.check(ws, store, ws.clean["incremental"]) == []


@pytest.mark.parametrize(("target", "aim"), [
    ("maintain", "index:vectors_clip#1@during+0"),  # compacted, the ANN index half built
    ("reembed", "merge:vectors_clip#4@during+0"),  # three items in the new space, the fourth mid-merge
    ("restore", "restore:items#1@after"),  # assets and errors restored, items and the rest not
])
def test_a_killed_command_run_again_ends_like_a_clean_run(ws, target, aim):
    store, launch = _killed(ws, target, aim, target)
    assert soak.check(ws, store, ws.clean[target], target)  # killed mid-way: not yet what a clean run leaves
    soak.run_here(ws, target, store)  # the same command again, to completion
    assert soak.check(ws, store, ws.clean[target], target) == []
    if target == "restore":
        assert targets.equal_to_tag(store, ws.restore_to) == []


def test_a_table_whose_creation_was_killed_is_created_by_the_next_run(tmp_path, tiny_clip_dir):
    """A writer killed inside a table's creation can leave its folder with no committed version (seen
    in 3 of 10 kills of a loop of creations). It must not make the store unusable."""
    settings = make_settings(tmp_path / "store", tiny_clip_dir)
    store = Store(settings.store, create=True)
    for name in ("items", "errors"):
        os.makedirs(os.path.join(settings.store, f"{name}.lance", "_transactions"))
    assert store.table_names() == [] and store.table("items") is None and store.count("items") == 0
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("a red circle")
    ingest([str(docs)], settings)
    assert Store(settings.store).count("items") == 1
    assert soak.invariants(Path(settings.store)) == []


def test_a_table_left_without_its_key_gets_it_back(tmp_path):
    """Creating a table and declaring its key are two commits; a kill between them (the soak's
    "create assets_clip" kill found it) is repaired by the next write to the table."""
    store = Store(tmp_path / "store", create=True)
    store.db.create_table("items", schema=ITEMS)
    row = pa.Table.from_pylist([{"item_id": "ab" * 8, "uri": "/x", "modality": "text"}], schema=ITEMS)
    store.upsert("items", row)
    assets = asset_vectors_schema(4)
    store.db.create_table("assets_clip_0123456789ab", schema=assets)  # a table outside the fixed schemas
    store.upsert("assets_clip_0123456789ab", pa.Table.from_pylist(
        [{"asset_id": "cd" * 8, "key": "/x", "vector": [0.5] * 4}], schema=assets), key="asset_id")
    for name, key in (("items", "item_id"), ("assets_clip_0123456789ab", "asset_id")):
        meta = store.table(name).schema.field(key).metadata or {}
        assert any(b"unenforced-primary-key" in k for k in meta), name


def test_a_run_killed_while_tagging_gets_its_tags(tmp_path, tiny_clip_dir, monkeypatch):
    settings = make_settings(tmp_path / "store", tiny_clip_dir)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("a red circle")
    ingest([str(docs)], settings)
    store = Store(settings.store)

    def killed_while_tagging(st, run_id, run_name, *a, **kw):  # type: ignore[no-untyped-def]
        versions = st.versions()
        st.upsert("runs", pa.Table.from_pylist([{"run_id": run_id, "run_name": run_name, "status": "completed",
                                                 "versions": json.dumps(versions)}], schema=RUNS))
        st.table("items").tags.create(run_name, versions["items"])
        raise KeyboardInterrupt  # stands for the SIGKILL: one table tagged, the others not

    (docs / "b.txt").write_text("a blue square")
    monkeypatch.setattr("omnivec.pipeline.run.record_run", killed_while_tagging)
    with pytest.raises(KeyboardInterrupt):
        ingest([str(docs)], settings)
    monkeypatch.undo()
    killed = store.read("runs").to_pylist()[-1]
    assert "runs: run " + killed["run_name"] in " ".join(soak.invariants(Path(settings.store)))
    ingest([str(docs)], settings)  # the next writer completes the tags, at the versions the run recorded
    versions = json.loads(killed["versions"])
    for name in versions:
        if name != "runs":
            assert store.table(name).tags.list()[killed["run_name"]]["version"] == versions[name], name
    assert killed["run_name"] in store.table("runs").tags.list()
    assert soak.invariants(Path(settings.store)) == []
