"""Exact search from memory gives the same top-k as LanceDB's scan, and sees new versions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from conftest import vtable
from omnivec.exact import CACHE
from omnivec.query import search_vector
from omnivec.store import Store


def _fill(store: Store, table: str, n: int, seed: int) -> np.ndarray:
    """Replace the table's rows with ``n`` random unit vectors over a mix of modalities and segments."""
    tbl = store.table(table)
    template = tbl.search().limit(1).to_list()[0]
    dim = len(template["vector"])
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rows = []
    for i in range(n):
        r = dict(template)
        item = f"{i // 3:032x}"
        r.update(item_id=item, vector_id=f"{item}:{i % 3 - 1}", segment=i % 3 - 1, uri=f"/data/f{i // 3}.x",
                 modality=("image", "text", "audio")[(i // 3) % 3], vector=vecs[i].tolist())
        rows.append(r)
    tbl.delete("true")
    tbl.add(pa.Table.from_pylist(rows, schema=tbl.schema))
    return vecs


@pytest.fixture
def filled(settings, corpus):
    from omnivec.pipeline.run import ingest

    ingest([str(corpus)], settings)
    store = Store(settings.store)
    table = vtable(store, "clip")
    _fill(store, table, 3000, seed=1)
    return store, table


def _scan(store, monkeypatch, *args, **kwargs):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OMNIVEC_EXACT_CACHE_MB", "0")
    try:
        return search_vector(store, "clip", *args, **kwargs)
    finally:
        monkeypatch.delenv("OMNIVEC_EXACT_CACHE_MB")


@pytest.mark.parametrize("modality", [None, "image", "audio"])
@pytest.mark.parametrize("per_file", [True, False])
def test_memory_matches_the_lancedb_scan(filled, monkeypatch, modality, per_file):
    store, table = filled
    rng = np.random.default_rng(7)
    for _ in range(5):
        q = rng.normal(size=32).astype(np.float32)
        q /= np.linalg.norm(q)
        got = search_vector(store, "clip", q, k=10, modality=modality, per_file=per_file)
        want = _scan(store, monkeypatch, q, k=10, modality=modality, per_file=per_file)
        assert [(h.item_id, h.segment) for h in got] == [(h.item_id, h.segment) for h in want]
        assert np.allclose([h.score for h in got], [h.score for h in want], atol=1e-5)
        assert all(h.segment >= 0 for h in got) and len(got) == 10
        if modality:
            assert {h.modality for h in got} == {modality}
    assert CACHE.get(store.table(table)) is not None  # the memory path was the one used


def test_a_new_version_is_seen_by_the_next_query(filled, monkeypatch):
    store, table = filled
    q = np.zeros(32, dtype=np.float32)
    q[0] = 1.0
    search_vector(store, "clip", q, k=3)  # cache the current version
    tbl = store.table(table)
    row = tbl.search().where("segment = 0").limit(1).to_list()[0]
    row.update(item_id="f" * 32, vector_id="f" * 32 + ":0", uri="/data/new.x", vector=q.tolist())
    tbl.add(pa.Table.from_pylist([row], schema=tbl.schema))
    hits = search_vector(store, "clip", q, k=3)
    assert hits[0].uri == "/data/new.x" and hits[0].score == pytest.approx(1.0, abs=1e-6)


def test_too_big_for_the_cap_falls_back_to_the_scan(filled, monkeypatch):
    store, table = filled
    monkeypatch.setenv("OMNIVEC_EXACT_CACHE_MB", "0.01")
    assert CACHE.get(store.table(table)) is None
    q = np.ones(32, dtype=np.float32) / np.sqrt(32)
    assert len(search_vector(store, "clip", q, k=5)) == 5
