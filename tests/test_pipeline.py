"""The ingest pipeline without Prefect: real LanceDB tables, a tiny real open_clip model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from conftest import make_settings, vectors_of, vtable
from omnivec.pipeline.run import ingest
from omnivec.query import search, search_vector
from omnivec.store import Store


def vectors(store_dir: Path) -> dict[str, dict]:
    rows = vectors_of(str(store_dir), "clip").to_pylist()
    return {r["vector_id"]: r for r in rows}


def test_stored_vectors_equal_direct_open_clip(settings, corpus, tiny_clip_dir):
    ingest([str(corpus)], settings)
    stored = vectors(Path(settings.store))
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tiny_clip_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tiny_clip_dir}")
    model.eval()
    images = sorted((corpus / "images").iterdir())
    texts = sorted((corpus / "texts").iterdir())
    with torch.inference_mode():
        img = model.encode_image(torch.stack([preprocess(Image.open(p).convert("RGB")) for p in images]),
                                 normalize=True).numpy()
        txt = model.encode_text(tokenizer([p.read_text().strip() for p in texts]), normalize=True).numpy()
    by_uri = {r["uri"]: np.asarray(r["vector"]) for r in stored.values()}
    assert len(by_uri) == len(images) + len(texts) == len(stored)  # short texts: one chunk each
    for path, ref in [*zip(images, img, strict=True), *zip(texts, txt, strict=True)]:
        got = by_uri[str(path)]
        cos = float(got @ ref / (np.linalg.norm(got) * np.linalg.norm(ref)))
        assert cos >= 0.9999, (path, cos)
        assert abs(np.linalg.norm(got) - 1.0) < 1e-5


def test_search_equals_numpy_brute_force(settings, corpus):
    ingest([str(corpus)], settings)
    store = Store(settings.store)
    rows = vectors_of(store, "clip").to_pylist()
    matrix = np.stack([r["vector"] for r in rows]).astype(np.float32)
    rng = np.random.default_rng(7)
    for _ in range(5):
        q = rng.normal(size=matrix.shape[1]).astype(np.float32)
        q /= np.linalg.norm(q)
        expected = [rows[i]["vector_id"] for i in np.argsort(-(matrix @ q))[:5]]
        got = search_vector(store, "clip", q, k=5, per_file=False)
        assert [f"{h.item_id}:{h.segment}" for h in got] == expected
        scores = [h.score for h in got]
        np.testing.assert_allclose(scores, np.sort(matrix @ q)[::-1][:5], atol=1e-5)
    only_images = search_vector(store, "clip", q, k=50, modality="image")
    assert only_images and {h.modality for h in only_images} == {"image"}


def test_text_search_finds_exact_text(settings, corpus):
    ingest([str(corpus)], settings)
    text = (corpus / "texts" / "ocean.txt").read_text().strip()
    hits = search(text, k=1, settings=settings)
    assert hits[0].uri == str(corpus / "texts" / "ocean.txt")
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_idempotent_rerun_changes_nothing(settings, corpus):
    first = ingest([str(corpus)], settings)
    store = Store(settings.store)
    counts = {t: store.count(t) for t in ("items", vtable(store, "clip"))}
    before = vectors(Path(settings.store))
    second = ingest([str(corpus)], settings)
    assert second.embedded == 0 and first.embedded == 24
    assert sum(c["unchanged"] for c in second.counts.values()) == 24
    assert {t: store.count(t) for t in ("items", vtable(store, "clip"))} == counts
    assert vectors(Path(settings.store)).keys() == before.keys()


def test_changed_file_replaces_its_vectors(settings, corpus):
    ingest([str(corpus)], settings)
    doc = corpus / "texts" / "dogs.txt"
    long_text = " ".join(f"word{i} about dogs and cats" for i in range(60))  # several chunks
    doc.write_text(long_text)
    report = ingest([str(corpus)], settings)
    assert report.counts["text"]["changed"] == 1
    rows = [r for r in vectors(Path(settings.store)).values() if r["uri"] == str(doc)]
    assert len(rows) > 1
    item = [r for r in Store(settings.store).read("items").to_pylist() if r["uri"] == str(doc)][0]
    assert {r["content_hash"] for r in rows} == {item["content_hash"]}
    covered = "".join(long_text[r["char_start"]:r["char_end"]] for r in sorted(rows, key=lambda r: r["segment"]))
    assert all(w in covered for w in long_text.split())  # nothing truncated
    # shrink it again: the extra chunks must go, not linger as duplicates
    doc.write_text("short text about dogs")
    ingest([str(corpus)], settings)
    rows = [r for r in vectors(Path(settings.store)).values() if r["uri"] == str(doc)]
    assert len(rows) == 1 and rows[0]["text"] == "short text about dogs"


def test_touched_but_identical_file_is_not_reencoded(settings, corpus):
    ingest([str(corpus)], settings)
    img = corpus / "images" / "red-circle.png"
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))
    report = ingest([str(corpus)], settings)
    assert report.embedded == 0
    assert report.counts["image"]["unchanged"] == 18
    item = [r for r in Store(settings.store).read("items").to_pylist() if r["uri"] == str(img)][0]
    assert item["mtime_ns"] == st.st_mtime_ns + 10_000_000_000  # stat refreshed: next run is a stat


def test_deleted_file_leaves_latest_version_but_stays_in_history(settings, corpus):
    first = ingest([str(corpus)], settings)
    victim = sorted((corpus / "images").glob("blue-*"))[0]
    victim.unlink()
    report = ingest([str(corpus)], settings)
    assert report.counts["image"]["deleted"] == 1
    store = Store(settings.store)
    assert str(victim) not in {r["uri"] for r in vectors_of(store, "clip").to_pylist()}
    assert str(victim) not in {r["uri"] for r in store.read("items").to_pylist()}
    old = store.db.open_table(vtable(store, "clip"))
    old.checkout(first.run_name)  # the first run's tag still holds it
    assert str(victim) in set(old.to_arrow().column("uri").to_pylist())


def test_other_roots_are_not_deleted(settings, corpus, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "note.txt").write_text("a separate folder")
    ingest([str(corpus)], settings)
    ingest([str(other)], settings)
    uris = {r["uri"] for r in Store(settings.store).read("items").to_pylist()}
    assert str(other / "note.txt") in uris and len(uris) == 25


def test_run_is_tagged_and_recorded(settings, corpus):
    report = ingest([str(corpus)], settings)
    store = Store(settings.store)
    for name in ("items", vtable(store, "clip"), "runs", "spaces"):
        assert report.run_name in store.table(name).tags.list()
    runs = store.read("runs").to_pylist()
    assert [r["run_name"] for r in runs] == [report.run_name]
    meta = store.table(vtable(store, "clip")).schema.metadata
    assert b"omnivec.recipe" in meta and b"omnivec.space_id" in meta


def test_model_unavailable_leaves_items_pending_then_embeds(tmp_path, corpus, tiny_clip_dir):
    missing = tmp_path / "model-not-yet-here"
    settings = make_settings(tmp_path / "store", missing)
    report = ingest([str(corpus)], settings)
    assert "clip" in report.unavailable and "local-dir" in report.unavailable["clip"]
    assert report.embedded == 0
    store = Store(settings.store)
    statuses = {r["status"] for r in store.read("items").to_pylist()}
    assert statuses == {"pending"} and store.count("items") == 24
    shutil.copytree(tiny_clip_dir, missing)
    later = ingest([str(corpus)], settings)
    assert not later.unavailable and later.embedded == 24
    assert later.counts["image"]["resumed"] == 18
    assert {r["status"] for r in store.read("items").to_pylist()} == {"ok"}
    assert store.count(vtable(store, "clip")) == 24


def test_default_model_offline_is_reported_unavailable(tmp_path, corpus):
    from omnivec.config import load_settings

    settings = load_settings(overrides={"store": str(tmp_path / "store")}, env={})
    report = ingest([str(corpus / "texts")], settings)
    reason = report.unavailable["clip"]
    assert "ViT-B-32" in reason and "local-dir" in reason and "Hugging Face cache" in reason
    assert {r["status"] for r in Store(settings.store).read("items").to_pylist()} == {"pending"}


def test_a_new_model_is_a_new_space_beside_the_old(settings, corpus, tmp_path):
    from omnivec.errors import SpaceMismatchError
    from omnivec.testing import make_tiny_open_clip

    ingest([str(corpus)], settings)
    other = make_tiny_open_clip(tmp_path / "other-model", seed=1)
    changed = make_settings(Path(settings.store), other)
    with pytest.raises(SpaceMismatchError, match="space_id"):  # not embedded with this model yet
        search("red", settings=changed)
    ingest([str(corpus)], changed)  # a new space, its own table; the old one is untouched
    store = Store(settings.store)
    spaces = store.space_rows("clip")
    assert len(spaces) == 2 and len({r["space_id"] for r in spaces}) == 2
    assert [store.count(r["table_name"]) for r in spaces] == [24, 24]
    old = search("a red circle", k=3, settings=settings)
    new = search("a red circle", k=3, settings=changed)
    assert old[0].uri and new[0].uri and old[0].score != new[0].score  # both searchable, each in its own space
    third = make_settings(Path(settings.store), make_tiny_open_clip(tmp_path / "third", seed=2))
    with pytest.raises(SpaceMismatchError) as info:
        search("red", settings=third)
    assert all(r["space_id"] in str(info.value) for r in spaces)  # lists the spaces that exist


def test_weights_changed_in_place_make_a_new_space_id(settings, corpus, tiny_clip_dir, tmp_path):
    import shutil

    from omnivec.encoders import clear_cache
    from omnivec.pipeline.spaces import load_spaces
    from omnivec.testing import make_tiny_open_clip

    folder = tmp_path / "model"
    shutil.copytree(tiny_clip_dir, folder)
    s = make_settings(tmp_path / "store2", folder)
    first = load_spaces(s)["clip"].space_id
    make_tiny_open_clip(folder, seed=5)  # same folder, same config, new weights
    clear_cache()
    assert load_spaces(s)["clip"].space_id != first


def test_failed_model_load_leaves_logging_alone():
    """open_clip reports a failed download with logging.error, which installs a root handler through
    basicConfig; that would reformat every later log line (Prefect's included). Checked in a fresh
    process, since pytest's own root handlers would hide it."""
    import subprocess
    import sys

    code = ("import logging\nfrom omnivec.config import load_settings\n"
            "from omnivec.pipeline.spaces import load_spaces\n"
            "states = load_spaces(load_settings(env={}))\n"
            "assert states['clip'].unavailable\n"
            "print(len(logging.getLogger().handlers))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "0"
