"""Store upkeep: compaction, ANN index, cleanup that keeps every tagged version."""

from __future__ import annotations

import pytest

from conftest import vtable
from omnivec.maintenance import maintain
from omnivec.pipeline.run import ingest
from omnivec.query import search
from omnivec.store import Store


def _churn(corpus, settings):
    """Three runs that change files: many fragments and versions, each run tagged."""
    runs = [ingest([str(corpus)], settings)]
    for i in range(2):
        (corpus / "texts" / f"new-{i}.txt").write_text(f"a new note number {i} about rivers")
        (corpus / "texts" / "ocean.txt").write_text(f"the ocean, edition {i}")
        runs.append(ingest([str(corpus)], settings))
    return runs


def test_maintain_compacts_indexes_and_keeps_tagged_versions(settings, corpus):
    runs = _churn(corpus, settings)
    store = Store(settings.store)
    table = vtable(store, "clip")
    counts_then = {}
    for r in runs:
        t = store.db.open_table(table)
        t.checkout(r.run_name)
        counts_then[r.run_name] = t.count_rows()
    before = search("a red circle", k=5, settings=settings, as_of=runs[0].run_name)
    # retention 0: every old version is past the cutoff, tagged ones included; they must survive
    result = {r.table: r for r in maintain(settings.store, retention_days=0, index_threshold=20)}
    vec = result[table]
    assert vec.fragments_after == 1 < vec.fragments_before
    assert vec.versions_after < vec.versions_before
    assert vec.vector_index == "created"
    assert result["items"].versions_after < result["items"].versions_before
    for r in runs:  # every run's snapshot still opens and reads the same
        t = store.db.open_table(table)
        t.checkout(r.run_name)
        assert t.count_rows() == counts_then[r.run_name]
    after = search("a red circle", k=5, settings=settings, as_of=runs[0].run_name)
    assert [h.uri for h in after] == [h.uri for h in before]
    latest = search("rivers", k=3, settings=settings)
    assert latest and store.count(table) == counts_then[runs[-1].run_name]
    again = {r.table: r for r in maintain(settings.store, retention_days=0, index_threshold=20)}
    assert again[table].vector_index == "current" and again[table].fragments_after == 1


def test_maintain_refreshes_the_index_for_new_rows(settings, corpus):
    ingest([str(corpus / "images")], settings)
    maintain(settings.store, retention_days=30, index_threshold=10)
    ingest([str(corpus)], settings)  # adds text rows to the indexed table
    store = Store(settings.store)
    tbl = store.table(vtable(store, "clip"))
    assert any(i.num_unindexed_rows for i in tbl.list_indices())
    result = {r.table: r for r in maintain(settings.store, retention_days=30, index_threshold=10)}
    assert result[vtable(store, "clip")].vector_index == "refreshed"
    tbl.checkout_latest()
    assert not any(i.num_unindexed_rows for i in tbl.list_indices())


@pytest.mark.flow
def test_maintain_flow_publishes_before_after(prefect_harness, settings, corpus):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.maintain import maintain_flow

    _churn(corpus, settings)
    rows = maintain_flow(store=settings.store, retention_days=0, index_threshold=1000)
    assert {r["table"] for r in rows} == set(Store(settings.store).table_names())
    assert all(r["versions_after"] <= r["versions_before"] for r in rows)
    assert sum(r["versions_before"] - r["versions_after"] for r in rows) > 0
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["maintain-tables"])))
    assert arts and "versions_before" in str(arts[0].data)


def test_maintain_on_a_full_disk_is_one_clear_error(settings, corpus, monkeypatch):
    """Simulated: compaction raises LanceDB's ENOSPC error; the store keeps its versions."""
    import errno

    import omnivec.maintenance as m
    from omnivec.errors import StoreError

    ingest([str(corpus)], settings)
    before = {n: Store(settings.store).table(n).version for n in Store(settings.store).table_names()}

    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(m, "maintain_table", full)
    with pytest.raises(StoreError) as exc:
        maintain(settings.store)
    assert "no space left" in str(exc.value).lower() and settings.store in str(exc.value)
    after = Store(settings.store)
    assert {n: after.table(n).version for n in after.table_names()} == before
