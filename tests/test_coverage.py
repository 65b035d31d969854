"""A file's `items` row is its commit point: vectors written by a run that died before writing the
items rows are never answered, and the next writer (an ingest of any folder, maintain, reembed)
deletes them. The death is a BaseException raised where the items merge would start, the same state
a SIGKILL there leaves (benchmarks/crash_soak.py kills real processes in that window)."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pytest

from omnivec.encoders import load_encoder
from omnivec.maintenance import maintain
from omnivec.pipeline.run import ingest
from omnivec.query import search, search_vector
from omnivec.store import Store
from omnivec.store.coverage import Committed, committed, keys
from omnivec.store.history import parse_as_of


class Killed(BaseException):
    """The process died here."""


def die_before_items(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Store.upsert

    def upsert(self: Store, name: str, rows: pa.Table, *args: object, **kwargs: object) -> int | None:
        if name == "items":
            raise Killed
        return original(self, name, rows, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "upsert", upsert)


def uncovered(store_path: str) -> dict[str, list[str]]:
    """vector table -> uris of its rows that no items row (same item_id and content hash) covers."""
    store = Store(store_path)
    have = {(r["item_id"], r["content_hash"]) for r in store.read("items", ["item_id", "content_hash"]).to_pylist()}
    out = {}
    for _, _, table in store.vector_tables():
        rows = store.read(table, ["item_id", "content_hash", "uri"]).to_pylist()
        bad = sorted({r["uri"] for r in rows if (r["item_id"], r["content_hash"]) not in have})
        if bad:
            out[table] = bad
    return out


def all_uris(settings, query: str = "a red circle", **kw) -> set[str]:  # type: ignore[no-untyped-def]
    return {h.uri for h in search(query, k=100, space="clip", settings=settings, **kw)}


@pytest.fixture
def ghost(settings, corpus, monkeypatch):  # type: ignore[no-untyped-def]
    """A store whose first run committed 18 images, then a run over new texts died between its vector
    and its items writes. Yields (settings, the ghost uris, the first run's name)."""
    texts = corpus / "texts"
    moved = corpus.parent / "later-texts"
    shutil.move(str(texts), str(moved))
    first = ingest([str(corpus)], settings)
    shutil.move(str(moved), str(texts))
    die_before_items(monkeypatch)
    with pytest.raises(Killed):
        ingest([str(corpus)], settings)
    monkeypatch.undo()
    ghosts = uncovered(settings.store)
    assert len(ghosts) == 1 and len(next(iter(ghosts.values()))) == 6  # the six texts: vectors, no items rows
    return settings, set(next(iter(ghosts.values()))), first.run_name


@pytest.mark.parametrize("exact_cache_mb", ["1024", "0"])  # from memory, and Lance's scan
def test_vectors_without_items_rows_are_never_answered(ghost, monkeypatch, exact_cache_mb):
    monkeypatch.setenv("OMNIVEC_EXACT_CACHE_MB", exact_cache_mb)
    settings, ghosts, _ = ghost
    got = all_uris(settings)
    assert len(got) == 18 and not got & ghosts
    for text in ("trains", "cooking and recipes"):  # a query that is close to a ghost text is no different
        assert not all_uris(settings, text) & ghosts
    assert not {h.uri for h in search("trains", k=100, space="clip", hybrid=True, settings=settings)} & ghosts


def test_with_an_index_and_as_of_its_version_nothing_uncommitted_is_answered(ghost, monkeypatch):
    settings, ghosts, first = ghost
    store = Store(settings.store)
    [table] = [t for _, _, t in store.vector_tables()]
    version = int(store.table(table).version)  # the version holding the ghosts
    assert not all_uris(settings, as_of=str(version)) & ghosts
    assert all_uris(settings, as_of=first) == all_uris(settings) and len(all_uris(settings, as_of=first)) == 18
    # an index built on a table that still holds them (the index does not know about items)
    from lancedb.index import IvfHnswSq

    store.table(table).create_index("vector", config=IvfHnswSq(distance_type="cosine"))
    vec = load_encoder(settings.spaces["clip"], "cpu").embed_query("text", "trains")
    hits = search_vector(Store(settings.store), "clip", vec, k=30)
    assert len(hits) == 18 and not {h.uri for h in hits} & ghosts


def test_the_next_ingest_of_another_folder_removes_them(ghost, tmp_path):
    settings, ghosts, _ = ghost
    other = tmp_path / "other"
    other.mkdir()
    (other / "note.txt").write_text("an unrelated note")
    ingest([str(other)], settings)
    assert uncovered(settings.store) == {}
    assert len(all_uris(settings)) == 19  # 18 images and the note; the ghosts are gone, nothing else


def test_maintain_removes_them(ghost):
    settings, ghosts, _ = ghost
    maintain(settings.store)
    assert uncovered(settings.store) == {}
    assert len(all_uris(settings)) == 18


def test_the_next_ingest_of_the_same_folder_commits_them(ghost, corpus):
    settings, ghosts, _ = ghost
    report = ingest([str(corpus)], settings)
    assert report.counts["text"]["new"] == 6
    assert uncovered(settings.store) == {}
    assert ghosts <= all_uris(settings, "trains")


def test_a_changed_file_whose_items_row_was_not_written_is_not_answered(settings, corpus, monkeypatch):
    ingest([str(corpus)], settings)
    target = corpus / "texts" / "trains.md"
    target.write_text("a red circle, drawn large")
    die_before_items(monkeypatch)
    with pytest.raises(Killed):
        ingest([str(corpus)], settings)
    monkeypatch.undo()
    assert uncovered(settings.store) != {}  # its new vectors, with the new content hash, wait for the items row
    assert str(target) not in all_uris(settings, "a red circle, drawn large")
    ingest([str(corpus)], settings)
    assert uncovered(settings.store) == {}
    hits = search("a red circle, drawn large", k=1, space="clip", settings=settings)
    assert hits[0].uri == str(target) and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_keys_tell_pairs_apart():
    ids = pa.array(["0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"])
    hashes = pa.array(["a" * 64, "b" * 64])
    k, valid = keys(ids, hashes)
    assert valid.all() and k[0] != k[1]
    c = Committed(ids, hashes)
    swapped = c.covers([ids[0].as_py(), ids[1].as_py()], [hashes[1].as_py(), hashes[0].as_py()])
    assert c.covers(ids, hashes).tolist() == [True, True] and swapped.tolist() == [False, False]
    assert Committed(pa.array([], pa.string()), pa.array([], pa.string())).covers(ids, hashes).tolist() == [False] * 2
    # ids and hashes that differ only in their last digits (as generated ones do) are told apart too
    many = pa.array([f"{i:032x}" for i in range(1000)])
    many_hashes = pa.array([f"{i * 7919:064x}" for i in range(1000)])
    assert len(np.unique(Committed(many, many_hashes).keys)) == 1000  # no two share a key
    odd = Committed(many.slice(0, 999), many_hashes.slice(0, 999))
    assert odd.covers(many, many_hashes).tolist() == [True] * 999 + [False]
    assert odd.covers(["x"], [None]).tolist() == [False]  # not hex, null hash: simply not committed


def test_committed_pairs_are_read_once_per_items_version(settings, corpus):
    ingest([str(corpus)], settings)
    store = Store(settings.store)
    items = store.table("items")
    assert committed(items) is committed(store.table("items"))


def test_as_of_with_unicode_digits_is_a_clear_error():
    from omnivec.errors import OmnivecError

    for value in ("²", "١٢", "3²"):
        with pytest.raises(OmnivecError):
            parse_as_of(value)
    assert parse_as_of("12") == 12
