"""Re-embedding a space into a new model: complete, resumable after a kill, the old space intact."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_settings
from omnivec.pipeline.reembed import reembed
from omnivec.pipeline.run import ingest
from omnivec.query import search
from omnivec.store import Store
from omnivec.testing import make_tiny_open_clip


def _space_rows(store: Store, space_id: str) -> list[tuple[str, tuple[float, ...]]]:
    table = next(t for _, sid, t in store.vector_tables() if sid == space_id)
    return sorted((r["vector_id"], tuple(r["vector"])) for r in store.read(table, ["vector_id", "vector"]).to_pylist())


def test_reembed_fills_a_new_space_and_leaves_the_old(settings, corpus, tmp_path):
    ingest([str(corpus)], settings)
    store = Store(settings.store)
    old_id = store.space_rows("clip")[0]["space_id"]
    old_rows = _space_rows(store, old_id)
    victim = sorted((corpus / "images").iterdir())[0]
    victim.unlink()  # stored, but gone from disk: an errors row, not a crash
    new_model = make_tiny_open_clip(tmp_path / "new-model", seed=3)
    result = reembed(settings, "clip", f"local-dir:{new_model}")
    assert result["to_embed"] == 24 and result["failed"] == 1 and result["space_id"] != old_id
    assert len(_space_rows(store, result["space_id"])) == 23
    assert _space_rows(store, old_id) == old_rows  # untouched
    errors = {r["uri"]: r for r in store.read("errors").to_pylist()}
    assert "vanished" in errors[str(victim)]["message"] or "cannot read" in errors[str(victim)]["message"]
    new_settings = make_settings(Path(settings.store), new_model)
    assert search("a red circle", k=3, settings=new_settings)  # searchable with the new model
    assert search("a red circle", k=3, settings=settings)  # and the old one still
    again = reembed(settings, "clip", f"local-dir:{new_model}")
    assert again["to_embed"] == 1 and again["already_embedded"] == 23  # only the missing file is retried
    runs = {r["status"] for r in store.read("runs").to_pylist()}
    assert "reembed" in runs


def test_reembed_killed_midway_then_resumed_equals_a_clean_reembed(tmp_path, tiny_clip_dir):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(300):
        (docs / f"note-{i:03d}.txt").write_text(f"note number {i} about topic {i % 17}")
    base = make_settings(tmp_path / "base", tiny_clip_dir)
    ingest([str(docs)], base)
    for name in ("killed", "clean"):
        shutil.copytree(tmp_path / "base", tmp_path / name)
    new_model = make_tiny_open_clip(tmp_path / "new-model", seed=4)
    env = {**os.environ, "OMNIVEC_SPACES__TEXT__ENABLED": "false", "OMNIVEC_SPACES__CLAP__ENABLED": "false"}
    cmd = [sys.executable, "-m", "flows.cli", "reembed", "--space", "clip", "--model", f"local-dir:{new_model}",
           "--batch-size", "1", "--local", "--store", str(tmp_path / "killed")]
    proc = subprocess.Popen(cmd, env=env, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    killed_at = None
    deadline = time.monotonic() + 240
    store = Store(str(tmp_path / "killed"))
    while time.monotonic() < deadline and proc.poll() is None:
        tables = [t for _, sid, t in store.vector_tables() if store.count(t) and t.endswith(sid)]
        rows = {t: store.count(t) for t in tables}
        if len(rows) == 2 and min(rows.values()) >= 20:  # the new table has some, not all
            killed_at = min(rows.values())
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert killed_at is not None and killed_at < 300, "the reembed finished before it could be killed"
    resumed = subprocess.run(cmd[:-1] + [str(tmp_path / "killed"), "--json"], env=env, capture_output=True,
                             text=True, cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    # same batch size as the killed run: forwards over the same batches give bit-identical vectors
    clean = reembed(make_settings(tmp_path / "clean", tiny_clip_dir, batch_size=1), "clip", f"local-dir:{new_model}")
    a, b = Store(str(tmp_path / "killed")), Store(str(tmp_path / "clean"))
    rows_a, rows_b = _space_rows(a, clean["space_id"]), _space_rows(b, clean["space_id"])
    assert len(rows_a) == 300 and len({v for v, _ in rows_a}) == 300  # nothing duplicated
    assert rows_a == rows_b  # bit for bit


@pytest.mark.flow
def test_reembed_flow(prefect_harness, settings, corpus, tmp_path):
    from flows.reembed import run_reembed_flow

    ingest([str(corpus)], settings)
    new_model = make_tiny_open_clip(tmp_path / "flow-model", seed=6)
    out = run_reembed_flow(settings, "clip", f"local-dir:{new_model}")
    assert out["to_embed"] == 24 and out["failed"] == 0
    assert len(Store(settings.store).space_rows("clip")) == 2


def test_promote_then_rollback_moves_what_an_unpinned_name_uses(settings, corpus, tmp_path):
    from omnivec.config import load_settings

    ingest([str(corpus)], settings)
    store = Store(settings.store)
    old_id = store.space_rows("clip")[0]["space_id"]
    assert store.default_space("clip")["space_id"] == old_id  # the first space of a name
    new_model = make_tiny_open_clip(tmp_path / "promoted", seed=7)
    result = reembed(settings, "clip", f"local-dir:{new_model}", promote=True)
    assert store.default_space("clip")["space_id"] == result["space_id"]
    # nothing pinned: the name follows the store (the configured default, ViT-B-32, is not even available)
    follower = load_settings(env={}, overrides={"store": settings.store,
                                                 "spaces": {"clap": {"enabled": False}, "text": {"enabled": False}}})
    hits = search("a red circle", k=1, settings=follower)
    assert hits and hits[0].ranks == {"clip": 1}
    new_only = search("a red circle", k=3, settings=make_settings(Path(settings.store), new_model))
    assert [h.uri for h in search("a red circle", k=3, settings=follower)] == [h.uri for h in new_only]
    (corpus / "texts" / "late.txt").write_text("a file added after the promotion")
    ingest([str(corpus)], follower)  # unpinned ingest writes into the promoted space
    new_table = next(t for _, sid, t in store.vector_tables() if sid == result["space_id"])
    assert str(corpus / "texts" / "late.txt") in {r["uri"] for r in store.read(new_table, ["uri"]).to_pylist()}
    back = store.rollback("clip")
    assert back["space_id"] == old_id and store.default_space("clip")["space_id"] == old_id
    old_only = search("a red circle", k=3, settings=settings)
    assert [h.uri for h in search("a red circle", k=3, settings=follower)] == [h.uri for h in old_only]
