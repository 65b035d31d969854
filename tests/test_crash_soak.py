"""Crash safety: ingests SIGKILLed at chosen store writes, then run again, end as one clean run.

Three trials of benchmarks/crash_soak.py (which runs 20+ at random moments), each aimed at a kill
point that once left the store unlike a clean run: between the errors and the items of a commit,
between dropping a vanished asset and dropping its fused vectors, and while tagging the run.
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

# (scenario, kill point): kind:table#k, during the write (0 ms in) or right after it
AIMS = [
    ("fresh", "merge:items#1@during+0"),  # vectors and errors of the first commit written, items not
    ("incremental", "delete:assets#1@after"),  # a vanished asset dropped, its fused vectors not yet
    ("fresh", "tag:items#1@during+0"),  # run row written, some tables tagged, the rest not
]


def test_killed_ingests_end_like_a_clean_run(tmp_path, tiny_clip_dir, tiny_clap_dir):
    t0 = time.monotonic()
    ws = soak.prepare_here(tmp_path / "soak", tiny_clip_dir, tiny_clap_dir, notes=8)
    for scenario, store in ws.clean.items():
        assert soak.invariants(store) == [], scenario
    # the killed runs start together (start-up dominates: imports and model loading)
    started = []
    for n, (scenario, aim) in enumerate(AIMS):
        store, trace = tmp_path / f"killed-{n}", tmp_path / f"killed-{n}.trace"
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
