"""A score is the cosine similarity in every state of a table: exact scan, from memory, with an ANN
index (whose own distance is neither exact nor a cosine), as of an earlier run, with refinement."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import make_settings, vectors_of
from omnivec.encoders import load_encoder
from omnivec.maintenance import maintain
from omnivec.pipeline.run import ingest
from omnivec.query import AnnParams, search, search_vector
from omnivec.query_assets import search_assets
from omnivec.store import Store

QUERIES = ["a red circle", "a blue square on white", "trains in the snow"]


def brute_force(store_path: str, vec: np.ndarray, k: int) -> dict[str, float]:
    """uri -> best cosine of its segments, from the stored vectors with numpy; the k best."""
    t = vectors_of(store_path, "clip", ["uri", "segment", "vector"]).to_pylist()
    best: dict[str, float] = {}
    for r in t:
        if r["segment"] < 0:
            continue
        v = np.asarray(r["vector"], dtype=np.float64)
        cos = float(v @ vec / (np.linalg.norm(v) * np.linalg.norm(vec)))
        best[r["uri"]] = max(best.get(r["uri"], -2.0), cos)
    return dict(sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:k])


def check(store_path: str, hits: list, vec: np.ndarray, k: int) -> None:
    want = brute_force(store_path, vec, k)
    got = {h.uri: h.score for h in hits}
    assert list(got) == list(want)
    for uri, score in want.items():
        assert got[uri] == pytest.approx(score, abs=2e-6)


@pytest.mark.parametrize("exact_cache_mb", ["1024", "0"])  # exact from memory, and Lance's own scan
def test_scores_are_cosines_before_and_after_the_index(settings, corpus, monkeypatch, exact_cache_mb):
    monkeypatch.setenv("OMNIVEC_EXACT_CACHE_MB", exact_cache_mb)
    report = ingest([str(corpus)], settings)
    encoder = load_encoder(settings.spaces["clip"], "cpu")
    vecs = {q: encoder.embed_query("text", q) for q in QUERIES}
    assert len({v.tobytes() for v in vecs.values()}) == len(QUERIES)  # the queries really differ
    k = 24  # every file: the whole ranking is compared, so an approximate index cannot drop one

    before = {q: search_vector(Store(settings.store), "clip", v, k=k) for q, v in vecs.items()}
    for q, v in vecs.items():
        check(settings.store, before[q], v, k)

    upkeep = {u.table: u for u in maintain(settings.store, index_threshold=1)}
    assert {u.vector_index for t, u in upkeep.items() if t.startswith("vectors_")} == {"created"}
    store = Store(settings.store)
    for q, v in vecs.items():
        after = search_vector(store, "clip", v, k=k)
        check(settings.store, after, v, k)
        assert [h.score for h in after] == pytest.approx([h.score for h in before[q]], abs=2e-6)
        refined = search_vector(store, "clip", v, k=k, ann=AnnParams(ef=64, refine_factor=2))
        check(settings.store, refined, v, k)
        then = search_vector(store, "clip", v, k=k, as_of=report.run_name)
        check(settings.store, then, v, k)
    for h in search(QUERIES[0], k=5, space="clip", settings=settings):  # one list: the score is the cosine
        assert -1.0 <= h.score <= 1.0 and h.score == h.scores["clip"]
    assert search(QUERIES[0], k=1, space="clip", settings=settings)[0].score == pytest.approx(
        before[QUERIES[0]][0].score, abs=2e-6)


def test_asset_scores_are_cosines_with_an_index(tmp_path, tiny_clip_dir, corpus):
    settings = make_settings(tmp_path / "store", tiny_clip_dir)
    for img in (corpus / "images").iterdir():  # a caption beside each picture: one asset each
        (corpus / "images" / f"{img.stem}.txt").write_text(f"a picture of a {img.stem.replace('-', ' ')}")
    shutil.rmtree(corpus / "texts")
    ingest([str(corpus)], settings)
    store = Store(settings.store)
    [table] = [t for t in store.table_names() if t.startswith("assets_")]
    rows = store.read(table, ["key", "vector"]).to_pylist()
    encoder = load_encoder(settings.spaces["clip"], "cpu")
    q = encoder.embed_query("text", "a red circle")
    want = sorted(((float(np.dot(r["vector"], q) / np.linalg.norm(r["vector"]) / np.linalg.norm(q)), r["key"])
                   for r in rows), reverse=True)[:5]

    def got() -> list[tuple[float, str]]:
        return [(h.score, h.key) for h in search_assets("a red circle", k=5, space="clip", settings=settings)]

    assert [k for _, k in got()] == [k for _, k in want]
    upkeep = {u.table: u for u in maintain(settings.store, index_threshold=1)}
    assert upkeep[table].vector_index == "created"
    after = got()
    assert sorted(k for _, k in after) == sorted(k for _, k in want)
    for score, key in after:
        assert score == pytest.approx(dict((k, s) for s, k in want)[key], abs=2e-6)
