"""Cheap no-op re-runs: over unchanged files a run costs stat calls. It loads no model (a space's identity
is known from its model files, libraries and encoder code without the weights), reads and decodes no
file, and skips the drift canary of a space it wrote nothing to. Whenever there is something to embed,
or the identity cannot be known cheaply, it behaves exactly as a run that loads every model first."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import omnivec.pipeline.batch as batch
from conftest import make_settings, vtable
from omnivec.config import load_settings
from omnivec.encoders import clear_cache, known_identity, load_count, load_encoder
from omnivec.encoders import identity as ident
from omnivec.encoders.open_clip import OpenClipEncoder
from omnivec.errors import ModelUnavailableError
from omnivec.pipeline.canary import SKIPPED_NO_WRITES
from omnivec.pipeline.run import ingest
from omnivec.pipeline.spaces import load_spaces
from omnivec.store import Store

ROOT = Path(__file__).resolve().parents[1]
SKIPPED = {"skipped": True, "reason": SKIPPED_NO_WRITES}


@pytest.fixture(autouse=True)
def fresh_process():
    """Each run after the first starts like a new process: no encoder loaded yet."""
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def file_access(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Every file a run (its batches and its drift canary) reads, and every decode."""
    seen: dict[str, list[Any]] = {"read": [], "decode": []}

    def counted(kind: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            seen[kind].append(args[0] if kind == "read" else 1)
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(batch, "read_file", counted("read", batch.read_file))
    monkeypatch.setattr(batch, "decode_image", counted("decode", batch.decode_image))
    monkeypatch.setattr(batch, "decode_text", counted("decode", batch.decode_text))
    return seen


def test_noop_rerun_loads_no_model_and_reads_no_file(settings, corpus, file_access):
    first = ingest([str(corpus)], settings)
    assert first.embedded == 24 and first.drift["clip"]["ok"]
    store = Store(settings.store)
    table = vtable(store, "clip")
    rows_before = store.count(table)
    clear_cache()  # the next run starts with no model loaded, as a new process would
    loads = load_count()
    file_access["read"].clear()
    file_access["decode"].clear()

    second = ingest([str(corpus)], settings)

    assert load_count() == loads  # no encoder loaded
    assert file_access == {"read": [], "decode": []}  # no file hashed or decoded, by the batches or the canary
    assert second.embedded == 0 and sum(c["unchanged"] for c in second.counts.values()) == 24
    assert second.drift == {"clip": SKIPPED} and not second.drifted
    assert f"`clip` ({SKIPPED_NO_WRITES})" in second.to_markdown()
    assert [r["space_id"] for r in store.space_rows("clip")] == [table.rsplit("_", 1)[-1]]  # the same space
    assert store.count(table) == rows_before


def test_one_changed_file_loads_the_model_and_embeds_only_that_file(settings, corpus, file_access):
    ingest([str(corpus)], settings)
    clear_cache()
    loads = load_count()
    doc = corpus / "texts" / "ocean.txt"
    doc.write_text("A lighthouse stands on the cliff above the stormy sea.\n")
    file_access["read"].clear()
    file_access["decode"].clear()

    report = ingest([str(corpus)], settings.model_copy(update={"canary_sample": 0}))

    assert load_count() == loads + 1  # loaded once, because there was a file to embed
    assert file_access == {"read": [str(doc)], "decode": [1]}
    assert report.embedded == 1 and report.counts["text"]["changed"] == 1
    assert sum(c["unchanged"] for c in report.counts.values()) == 23
    rows = [r for r in Store(settings.store).read(vtable(settings.store, "clip")).to_pylist() if r["uri"] == str(doc)]
    assert [r["text"] for r in rows] == ["A lighthouse stands on the cliff above the stormy sea."]


def test_canary_runs_when_vectors_are_written_and_is_skipped_when_none_are(settings, corpus):
    first = ingest([str(corpus)], settings)
    assert first.drift["clip"]["ok"] and first.drift["clip"]["items"] == 8
    clear_cache()
    noop = ingest([str(corpus)], settings)
    assert noop.drift == {"clip": SKIPPED}
    (corpus / "texts" / "later.txt").write_text("A note written after the first run.\n")
    clear_cache()
    later = ingest([str(corpus)], settings)
    assert later.embedded == 1
    assert later.drift["clip"]["ok"] and later.drift["clip"]["items"] == 8 and "skipped" not in later.drift["clip"]
    assert "Drift canary skipped" not in later.to_markdown()
    off = ingest([str(corpus)], settings.model_copy(update={"canary_sample": 0}))
    assert off.drift == {}  # the canary switched off: not even "skipped"


def test_identity_without_the_model_equals_the_loaded_one(tiny_clip_dir, tiny_clap_dir):
    settings = make_settings(Path("unused"), tiny_clip_dir, tiny_clap_dir, text=True)
    loaded = load_spaces(settings)  # loading records each identity
    assert all(st.available for st in loaded.values())
    clear_cache()
    loads = load_count()
    for name, st in loaded.items():
        got = known_identity(settings.spaces[name], settings.device)
        assert got is not None, name
        assert (got.space_id, got.dimension) == (st.space_id, st.dimension), name
        assert json.dumps(got.recipe, sort_keys=True) == json.dumps(st.recipe, sort_keys=True), name
    assert load_count() == loads  # known without loading any of them


def test_model_files_rewritten_in_place_are_a_new_space_as_before(settings, corpus, tmp_path):
    from omnivec.testing import make_tiny_open_clip

    folder = tmp_path / "model"
    shutil.copytree(settings.spaces["clip"].model[len("local-dir:"):], folder)
    s = make_settings(Path(settings.store), folder)
    first = ingest([str(corpus)], s)
    assert first.embedded == 24
    make_tiny_open_clip(folder, seed=5)  # same folder and config, new weights
    clear_cache()
    assert known_identity(s.spaces["clip"], s.device) is None  # the files changed: only a load can tell
    loads = load_count()
    second = ingest([str(corpus)], s)
    assert load_count() == loads + 1
    spaces = Store(s.store).space_rows("clip")
    assert len({r["space_id"] for r in spaces}) == 2
    assert second.embedded == 24  # every file goes into the new space, as when every run loaded its model
    assert [Store(s.store).count(r["table_name"]) for r in spaces] == [24, 24]


def test_identity_is_not_reused_across_library_versions_code_or_probed_devices(tiny_clip_dir, monkeypatch):
    cfg = make_settings(Path("unused"), tiny_clip_dir).spaces["clip"]
    load_encoder(cfg)
    clear_cache()
    assert known_identity(cfg) is not None
    assert known_identity(cfg, "cuda") is None  # a device that has to be probed: never from the cache
    assert known_identity(cfg.model_copy(update={"precision": "bf16"})) is None  # auto + bf16: probed too
    assert known_identity(cfg.model_copy(update={"chunk_overlap": 5})) is None  # other settings, never loaded

    real = ident._package_version
    monkeypatch.setattr(ident, "_package_version", lambda name: "99.0" if name == "open_clip_torch" else real(name))
    assert known_identity(cfg) is None
    monkeypatch.setattr(ident, "_package_version", real)
    assert known_identity(cfg) is not None
    monkeypatch.setitem(ident._CODE, "omnivec.encoders.open_clip", "edited")
    assert known_identity(cfg) is None


def test_hub_models_are_always_loaded(tmp_path):
    default = load_settings(overrides={"store": str(tmp_path / "store")}, env={})
    assert OpenClipEncoder.identity_inputs(default.spaces["clip"]) is None  # a pretrained tag: from the hub
    hub = default.spaces["clip"].model_copy(update={"model": "hf-hub:org/model", "pretrained": None})
    assert OpenClipEncoder.identity_inputs(hub) is None
    from omnivec.encoders.clap import ClapEncoder

    assert ClapEncoder.identity_inputs(default.spaces["clap"]) is None
    random_init = default.spaces["clip"].model_copy(update={"pretrained": "none"})
    assert OpenClipEncoder.identity_inputs(random_init) == {"random_init": True}


def test_a_model_that_fails_to_load_when_it_is_needed_is_reported_unavailable(settings, corpus, monkeypatch):
    ingest([str(corpus)], settings)
    clear_cache()
    assert known_identity(settings.spaces["clip"], settings.device) is not None

    def unavailable(self: Any, *args: Any, **kwargs: Any) -> None:
        raise ModelUnavailableError("open_clip model cannot be loaded: simulated", ["put it back"])

    monkeypatch.setattr(OpenClipEncoder, "__init__", unavailable)
    new = corpus / "texts" / "later.txt"
    new.write_text("A note written after the first run.\n")
    report = ingest([str(corpus)], settings)
    assert "simulated" in report.unavailable["clip"]
    assert report.embedded == 0 and report.counts["text"]["pending"] == 1
    assert sum(c["unchanged"] for c in report.counts.values()) == 24
    store = Store(settings.store)
    assert {r["uri"]: r["status"] for r in store.read("items").to_pylist()}[str(new)] == "pending"
    assert report.drift == {}  # as for any unavailable space: no canary, not even a skipped one
    monkeypatch.undo()
    clear_cache()
    later = ingest([str(corpus)], settings)
    assert not later.unavailable and later.embedded == 1 and later.counts["text"]["resumed"] == 1


def test_noop_rerun_in_a_new_process_imports_no_model_library(settings, corpus):
    ingest([str(corpus)], settings)
    code = ("import json, sys\n"
            "from omnivec.config import Settings\n"
            "from omnivec.pipeline.run import ingest\n"
            f"s = Settings.model_validate_json({settings.model_dump_json()!r})\n"
            f"r = ingest([{str(corpus)!r}], s)\n"
            "heavy = sorted(m for m in ('torch', 'open_clip', 'transformers') if m in sys.modules)\n"
            "print(json.dumps({'embedded': r.embedded, 'drift': r.drift, 'imported': heavy}))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "RUST_LOG": "error"})
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"embedded": 0, "drift": {"clip": SKIPPED}, "imported": []}


@pytest.mark.flow
def test_flow_noop_rerun_loads_no_model_and_reports_the_skipped_canary(prefect_harness, settings, corpus):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.ingest import ingest_flow

    first = ingest_flow(sources=[str(corpus)], settings=settings.model_dump())
    assert first.embedded == 24 and first.drift["clip"]["ok"]
    clear_cache()
    loads = load_count()
    state = ingest_flow(sources=[str(corpus)], settings=settings.model_dump(), return_state=True)
    report = state.result()
    assert load_count() == loads
    assert report.embedded == 0 and report.drift == {"clip": SKIPPED}
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    summary = next(a for a in arts if a.key == "ingest-summary")
    assert "Drift canary skipped" in summary.data and SKIPPED_NO_WRITES in summary.data
