"""A run commits at least every `commit_every_s`, so a long run killed half way keeps most of its work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import make_settings
from omnivec.config import load_settings
from omnivec.pipeline import commit
from omnivec.pipeline.batch import BatchResult
from omnivec.pipeline.commit import Committer
from omnivec.pipeline.run import ingest
from omnivec.store import Store
from omnivec.store.schema import ERRORS, ITEMS

ROOT = Path(__file__).resolve().parents[1]


def _result(n: int) -> BatchResult:
    """A batch result of one text file with no vectors (only its `items` row)."""
    row = {"item_id": f"{n:016x}", "uri": f"/notes/{n}.txt", "modality": "text", "content_hash": "ab" * 32,
           "size": 3, "mtime_ns": 1, "status": "ok", "first_run": "r", "last_run": "r",
           "updated_at": datetime.now(UTC)}
    return BatchResult("text", pa.Table.from_pylist([row], schema=ITEMS), ERRORS.empty_table())


def test_a_flush_is_due_once_the_interval_has_passed_with_something_buffered(tmp_path, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(commit.time, "monotonic", lambda: now[0])
    store = Store(tmp_path / "store", create=True)
    committer = Committer(store, {}, flush_rows=4096, commit_every_s=30)
    assert not committer.due  # nothing buffered: never due, however long ago the last flush was
    now[0] += 100
    assert not committer.due
    committer.add(_result(1))  # 100 s since the last flush, something buffered: written now
    assert store.count("items") == 1 and committer.pending_items == 0
    now[0] += 29
    committer.add(_result(2))  # 29 s after that flush: stays buffered
    assert store.count("items") == 1 and committer.pending_items == 1
    now[0] += 1
    assert committer.due
    committer.add(_result(3))  # 30 s: both written
    assert store.count("items") == 3 and committer.pending_items == 0


@pytest.mark.parametrize("path", ["local", pytest.param("flow", marks=pytest.mark.flow)])
def test_a_run_with_a_short_interval_commits_many_times(path, request, tmp_path, tiny_clip_dir):
    if path == "flow":
        request.getfixturevalue("prefect_harness")
        from flows.ingest import ingest_flow
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(12):
        (docs / f"note-{i:02d}.txt").write_text(f"note {i} about topic {i % 5}")
    versions = {}
    for every in (30.0, 0.0):
        s = make_settings(tmp_path / f"store-{every}", tiny_clip_dir, batch_size=2, workers=1, commit_every_s=every)
        assert s.commit_every_s == every
        report = ingest([str(docs)], s) if path == "local" else ingest_flow(sources=[str(docs)],
                                                                            settings=s.model_dump())
        assert report.counts["text"]["new"] == 12
        versions[every] = len(Store(s.store).table("items").list_versions())
    # 6 batches: one commit at the end with the default interval, one per batch with 0
    assert versions[0.0] >= versions[30.0] + 5, versions


def test_the_setting_comes_from_the_environment_and_is_checked(tmp_path):
    assert load_settings(env={"OMNIVEC_COMMIT_EVERY_S": "2.5"}).commit_every_s == 2.5
    assert load_settings(env={}).commit_every_s == 30.0
    from omnivec.errors import ConfigError

    with pytest.raises(ConfigError, match="commit_every_s"):
        load_settings(env={"OMNIVEC_COMMIT_EVERY_S": "-1"})


def test_a_local_run_killed_half_way_keeps_its_commits_and_the_next_run_skips_them(tmp_path, tiny_clip_dir):
    docs = tmp_path / "docs"
    docs.mkdir()
    total = 400
    for i in range(total):
        (docs / f"note-{i:03d}.txt").write_text(f"note {i} about topic {i % 11}, item {i * 7 % 13}")
    store = tmp_path / "store"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OMNIVEC_")},
           "OMNIVEC_COMMIT_EVERY_S": "0.2", "OMNIVEC_SPACES__TEXT__ENABLED": "false",
           "OMNIVEC_SPACES__CLAP__ENABLED": "false", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "flows.cli", "ingest", str(docs), "--store", str(store), "--local",
           "--model", f"local-dir:{tiny_clip_dir}", "--batch-size", "1", "--workers", "1", "--json"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if (store / "items.lance").exists() and Store(store).count("items"):
            os.kill(proc.pid, signal.SIGKILL)  # as soon as the first commit is visible
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, err[-2000:])
    committed = Store(store).count("items")
    assert 0 < committed < total, committed

    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    text = next(r for r in json.loads(done.stdout.splitlines()[-1])["modalities"] if r["modality"] == "text")
    assert text["unchanged"] == committed  # not embedded again
    assert text["new"] == total - committed
    assert Store(store).count("items") == total
