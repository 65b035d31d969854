"""Exact search from memory gives the same top-k as LanceDB's scan, and sees new versions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from conftest import vtable
from omnivec.exact import CACHE
from omnivec.query import search_vector
from omnivec.store import Store
from omnivec.testing import commit_items


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
    commit_items(store, rows)
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
    commit_items(store, [row])
    hits = search_vector(store, "clip", q, k=3)
    assert hits[0].uri == "/data/new.x" and hits[0].score == pytest.approx(1.0, abs=1e-6)


def test_too_big_for_the_cap_falls_back_to_the_scan(filled, monkeypatch):
    store, table = filled
    monkeypatch.setenv("OMNIVEC_EXACT_CACHE_MB", "0.01")
    assert CACHE.get(store.table(table)) is None
    q = np.ones(32, dtype=np.float32) / np.sqrt(32)
    assert len(search_vector(store, "clip", q, k=5)) == 5


def _near_ties(store: Store, table: str, n: int, seed: int) -> None:
    """Rows in groups of near-duplicates: within a group, cosines to a nearby query differ by
    ~1e-5..1e-4, below bfloat16's resolution (~4e-3 near 1) yet far above float32 rounding (~1e-7),
    so only the float32 re-scoring can order them, and it orders them the same way as a full float32 pass."""
    tbl = store.table(table)
    template = tbl.search().limit(1).to_list()[0]
    dim = len(template["vector"])
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // 50, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vecs = np.repeat(centres, 50, axis=0) + rng.normal(scale=2e-3, size=(n, dim))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    rows = []
    for i in range(n):
        r = dict(template)
        item = f"{i:032x}"
        r.update(item_id=item, vector_id=f"{item}:0", segment=0, uri=f"/data/g{i}.x",
                 modality=("image", "text")[i % 2], vector=vecs[i].tolist())
        rows.append(r)
    tbl.delete("true")
    tbl.add(pa.Table.from_pylist(rows, schema=tbl.schema))
    commit_items(store, rows)


def _matrix(store: Store, table: str, monkeypatch, mode: str):  # type: ignore[no-untyped-def]
    from omnivec.exact import ExactCache

    monkeypatch.setenv("OMNIVEC_EXACT_FIRST_PASS", mode)
    m = ExactCache().get(store.table(table))
    assert m is not None
    return m


def test_the_bfloat16_first_pass_gives_the_float32_top_k(filled, monkeypatch):
    store, table = filled
    _near_ties(store, table, 5000, seed=3)
    low = _matrix(store, table, monkeypatch, "bf16")
    full = _matrix(store, table, monkeypatch, "off")
    assert low.first_pass == "bfloat16" and full.first_pass == "float32"
    rng = np.random.default_rng(11)
    for i in range(40):  # queries next to a group: its 50 members are near-ties for the top places
        q = low.vectors[rng.integers(len(low.vectors))] + rng.normal(scale=0.02, size=low.vectors.shape[1])
        q = (q / np.linalg.norm(q)).astype(np.float32)
        for n, modality in ((10, None), (25, "image"), (5, "text")):
            got_rows, got_scores = low.best(q, n, modality)
            want_rows, want_scores = full.best(q, n, modality)
            assert got_rows.tolist() == want_rows.tolist(), (i, n, modality)
            assert np.allclose(got_scores, want_scores, atol=1e-6)
    # the search through the first pass equals LanceDB's scan
    q = low.vectors[7]
    hits = search_vector(store, "clip", q, k=10)
    assert [h.item_id for h in hits] == [h.item_id for h in _scan(store, monkeypatch, q, k=10)]


def test_the_rescoring_margin_is_what_keeps_it_exact(filled, monkeypatch):
    """Without the error margin, the bfloat16 pass alone picks the wrong near-ties: the test above
    can fail."""
    import omnivec.exact as exact

    store, table = filled
    _near_ties(store, table, 5000, seed=3)
    low = _matrix(store, table, monkeypatch, "bf16")
    full = _matrix(store, table, monkeypatch, "off")
    monkeypatch.setattr(exact, "error_bound", lambda dim, norms: 0.0)
    rng = np.random.default_rng(11)
    differ = 0
    for _ in range(20):
        q = low.vectors[rng.integers(len(low.vectors))] + rng.normal(scale=0.02, size=low.vectors.shape[1])
        q = (q / np.linalg.norm(q)).astype(np.float32)
        differ += low.best(q, 10, None)[0].tolist() != full.best(q, 10, None)[0].tolist()
    assert differ > 0


def test_a_first_pass_outside_the_error_bound_is_not_used(filled, monkeypatch):
    from omnivec.exact import Matrix

    store, table = filled
    _near_ties(store, table, 5000, seed=3)
    real = Matrix.approximate
    monkeypatch.setattr(Matrix, "approximate", lambda self, q: real(self, q) + 0.05)  # a broken kernel
    assert _matrix(store, table, monkeypatch, "bf16").first_pass == "float32"


def test_a_cache_too_small_for_both_copies_keeps_float32(filled, monkeypatch):
    store, table = filled
    _near_ties(store, table, 5000, seed=3)
    monkeypatch.setenv("OMNIVEC_EXACT_CACHE_MB", str(5000 * 33 * 4 * 1.2 / 2**20))  # float32 fits, not + bf16
    assert _matrix(store, table, monkeypatch, "bf16").first_pass == "float32"


def test_auto_uses_bfloat16_only_on_a_cpu_with_bfloat16_arithmetic(filled, monkeypatch):
    import omnivec.exact as exact

    store, table = filled
    _near_ties(store, table, 5000, seed=3)
    monkeypatch.setattr(exact, "bf16_hardware", lambda: False)
    assert _matrix(store, table, monkeypatch, "auto").first_pass == "float32"
    monkeypatch.setattr(exact, "bf16_hardware", lambda: True)
    assert _matrix(store, table, monkeypatch, "auto").first_pass == "bfloat16"
    assert _matrix(store, table, monkeypatch, "off").first_pass == "float32"
