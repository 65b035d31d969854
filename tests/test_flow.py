"""The real Prefect flow under a temporary Prefect API (one per test session)."""

from __future__ import annotations

import pytest

from conftest import vectors_of, vtable
from fixtures.bad_files import write_bad_corpus
from omnivec.store import Store

pytestmark = pytest.mark.flow


def test_ingest_flow_completes_with_bad_files_and_publishes_artifacts(prefect_harness, settings, corpus):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.ingest import ingest_flow

    expected_errors = write_bad_corpus(corpus / "bad")
    state = ingest_flow(sources=[str(corpus)], settings=settings.model_dump(), return_state=True)
    assert state.is_completed(), state
    report = state.result()
    assert report.failed == len(expected_errors)
    assert report.embedded == 24 + 3
    store = Store(settings.store)
    assert store.count("errors") == len(expected_errors)
    assert report.run_name in store.table(vtable(store, "clip")).tags.list()

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(state.state_details.flow_run_id)
        assert flow_run.name == report.run_name  # dashboard and store use one name
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id])))
    by_key = {a.key: a for a in arts if a.key}
    assert {"ingest-summary", "ingest-modalities", "ingest-errors"} <= set(by_key)
    import json

    error_rows = json.loads(by_key["ingest-errors"].data)
    assert len(error_rows) == len(expected_errors)
    assert {r["uri"].rsplit("/", 1)[-1] for r in error_rows} == {p.rsplit("/", 1)[-1] for p in expected_errors}
    assert "failed" in by_key["ingest-summary"].data and report.run_name in by_key["ingest-summary"].data
    progress = [a for a in arts if a.type == "progress"]
    assert progress and float(progress[0].data) == 100.0


def test_flow_rerun_is_a_noop(prefect_harness, settings, corpus):
    from flows.ingest import run_ingest_flow

    first = run_ingest_flow([str(corpus)], settings)
    second = run_ingest_flow([str(corpus)], settings)
    assert first.embedded == 24 and second.embedded == 0
    assert sum(c["unchanged"] for c in second.counts.values()) == 24
    assert Store(settings.store).count(vtable(settings.store, "clip")) == 24


def test_commit_retries_a_transient_io_error_and_counts_once(prefect_harness, settings, corpus, monkeypatch):
    from flows.ingest import run_ingest_flow
    from omnivec.store.store import Store as StoreClass

    real = StoreClass.upsert
    failures = {"items": 1}

    def flaky(self, name, rows, *args, **kwargs):  # type: ignore[no-untyped-def]
        if failures.get(name):
            failures[name] -= 1  # the vectors are already written: the retry repeats them, keyed
            raise OSError("connection reset by peer (simulated object-store hiccup)")
        return real(self, name, rows, *args, **kwargs)

    monkeypatch.setattr(StoreClass, "upsert", flaky)
    report = run_ingest_flow([str(corpus)], settings)
    assert failures["items"] == 0  # the failure did happen
    assert report.embedded == 24 and report.counts["image"]["new"] == 18  # counted once, not twice
    store = Store(settings.store)
    assert store.count("items") == 24
    rows = vectors_of(store, "clip", ["vector_id"]).to_pylist()
    assert len(rows) == len({r["vector_id"] for r in rows}) == 24


def test_commit_does_not_retry_a_logic_error(prefect_harness, settings, corpus, monkeypatch):
    from flows.ingest import ingest_flow
    from omnivec.store.store import Store as StoreClass

    real = StoreClass.upsert
    calls = {"items": 0}

    def broken(self, name, rows, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "items":
            calls["items"] += 1
            raise ValueError("a bug, not a hiccup")
        return real(self, name, rows, *args, **kwargs)

    monkeypatch.setattr(StoreClass, "upsert", broken)
    state = ingest_flow(sources=[str(corpus / "texts")], settings=settings.model_dump(), return_state=True)
    assert state.is_failed()
    assert calls["items"] == 1  # the commit ran once: no retry of a non-I/O error
