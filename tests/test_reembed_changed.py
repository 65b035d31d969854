"""A reembed skips files whose content changed since their ingest: their vectors would not match their
`items` row (the file's commit point). They get an errors row until `omnivec ingest` catches up."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_settings
from omnivec.pipeline.reembed import CHANGED, reembed
from omnivec.pipeline.run import ingest
from omnivec.store import Store
from omnivec.testing import make_tiny_open_clip


def _vectors(store: Store, space_id: str) -> dict[str, str]:
    """item_id -> content_hash of the space's vector rows"""
    table = next(t for _, sid, t in store.vector_tables() if sid == space_id)
    return {r["item_id"]: r["content_hash"] for r in store.read(table, ["item_id", "content_hash"]).to_pylist()}


def _run(kind: str, settings, model: str):  # type: ignore[no-untyped-def]
    if kind == "local":
        return reembed(settings, "clip", model)
    from flows.reembed import run_reembed_flow

    return run_reembed_flow(settings, "clip", model)


@pytest.mark.parametrize("kind", ["local", pytest.param("flow", marks=pytest.mark.flow)])
def test_reembed_skips_a_file_changed_since_its_ingest(kind, request, tmp_path, tiny_clip_dir):
    if kind == "flow":
        request.getfixturevalue("prefect_harness")
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in (("a", "a red circle"), ("b", "a blue square"), ("c", "a green triangle")):
        (docs / f"{name}.txt").write_text(text)
    settings = make_settings(tmp_path / "store", tiny_clip_dir, batch_size=1)
    ingest([str(docs)], settings)
    store = Store(settings.store)
    items = {r["uri"]: r for r in store.read("items").to_pylist()}
    changed = docs / "b.txt"
    changed.write_text("a blue square, rewritten after the ingest")
    model = f"local-dir:{make_tiny_open_clip(tmp_path / 'new-model', seed=5)}"

    result = _run(kind, settings, model)
    assert result["to_embed"] == 3 and result["failed"] == 1
    vectors = _vectors(store, result["space_id"])
    assert set(vectors) == {items[str(docs / n)]["item_id"] for n in ("a.txt", "c.txt")}
    assert all(vectors[i] == r["content_hash"] for r in items.values() if (i := r["item_id"]) in vectors)
    errors = store.read("errors").to_pylist()
    assert [(e["uri"], e["stage"], e["message"], e["space"]) for e in errors] == \
        [(str(changed), "reembed", CHANGED, "clip")]
    assert errors[0]["content_hash"] != items[str(changed)]["content_hash"]  # the content it found

    report = ingest([str(docs)], settings)  # the ingest catches up with the file, and clears the row
    assert report.counts["text"]["changed"] == 1
    assert store.count("errors") == 0
    again = _run(kind, settings, model)
    assert again["to_embed"] == 1 and again["failed"] == 0 and again["already_embedded"] == 2
    now = {r["item_id"]: r["content_hash"] for r in store.read("items").to_pylist()}
    assert _vectors(store, result["space_id"]) == now


def test_a_file_touched_but_not_changed_is_reembedded(tmp_path, tiny_clip_dir):
    """Only the content counts: a new mtime with the same bytes is the item's content."""
    import os

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("a red circle")
    settings = make_settings(tmp_path / "store", tiny_clip_dir)
    ingest([str(docs)], settings)
    os.utime(docs / "a.txt", (1e9, 1e9))
    result = reembed(settings, "clip", f"local-dir:{make_tiny_open_clip(Path(tmp_path) / 'm', seed=6)}")
    assert result["failed"] == 0 and len(_vectors(Store(settings.store), result["space_id"])) == 1
