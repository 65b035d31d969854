"""Bad files become `errors` rows with a readable reason; good files still get vectors."""

from __future__ import annotations

from pathlib import Path

from conftest import vectors_of
from fixtures.bad_files import write_bad_corpus
from omnivec.pipeline.run import ingest
from omnivec.store import Store


def test_every_bad_file_is_an_error_row_and_good_files_are_embedded(settings, tmp_path):
    expected = write_bad_corpus(tmp_path / "bad")
    report = ingest([str(tmp_path / "bad")], settings)
    store = Store(settings.store)
    errors = {r["uri"]: r for r in store.read("errors").to_pylist()}
    assert set(errors) == set(expected)
    for uri, words in expected.items():
        assert words.lower() in errors[uri]["message"].lower(), (uri, errors[uri]["message"])
        assert errors[uri]["attempts"] == 1 and errors[uri]["run_id"] == report.run_id
    embedded = {r["uri"] for r in vectors_of(store, "clip").to_pylist()}
    assert embedded == {str(tmp_path / "bad" / n) for n in ("good.jpg", "good.png", "good.txt")}
    assert report.failed == len(expected)
    statuses = {r["uri"]: r["status"] for r in store.read("items").to_pylist()}
    assert all(statuses[u] == "error" for u in expected)


def test_failed_files_are_not_retried_until_changed_or_asked(settings, tmp_path):
    expected = write_bad_corpus(tmp_path / "bad")
    ingest([str(tmp_path / "bad")], settings)
    again = ingest([str(tmp_path / "bad")], settings)
    assert again.failed == 0 and again.embedded == 0  # quarantined, unchanged: a stat each
    retried = ingest([str(tmp_path / "bad")], settings, retry_errors=True)
    assert retried.failed == len(expected)
    attempts = {r["uri"]: r["attempts"] for r in Store(settings.store).read("errors").to_pylist()}
    assert set(attempts.values()) == {2}


def test_fixed_file_clears_its_error(settings, tmp_path):
    write_bad_corpus(tmp_path / "bad")
    ingest([str(tmp_path / "bad")], settings)
    fixed = tmp_path / "bad" / "latin1.txt"
    fixed.write_text("café au lait", encoding="utf-8")
    report = ingest([str(tmp_path / "bad")], settings)
    assert report.counts["text"]["changed"] == 1
    store = Store(settings.store)
    assert str(fixed) not in {r["uri"] for r in store.read("errors").to_pylist()}
    assert str(fixed) in {r["uri"] for r in vectors_of(store, "clip").to_pylist()}


def test_file_that_turns_corrupt_loses_its_stale_vectors(settings, tmp_path):
    root = tmp_path / "c"
    write_bad_corpus(root)
    ingest([str(root)], settings)
    good = root / "good.png"
    good.write_bytes(good.read_bytes()[:30])
    ingest([str(root)], settings)
    store = Store(settings.store)
    assert str(good) not in {r["uri"] for r in vectors_of(store, "clip").to_pylist()}
    assert str(good) in {r["uri"] for r in store.read("errors").to_pylist()}


def test_unreadable_file_and_dangling_link(settings, tmp_path):
    import os

    root = tmp_path / "perm"
    root.mkdir()
    (root / "ok.txt").write_text("fine")
    os.symlink(root / "nowhere.jpg", root / "dangling.jpg")
    report = ingest([str(root)], settings)
    errors = {Path(r["uri"]).name: r for r in Store(settings.store).read("errors").to_pylist()}
    assert errors["dangling.jpg"]["stage"] == "discover"
    assert report.embedded == 1


def test_a_discovery_error_goes_when_its_problem_does(settings, tmp_path):
    """A dangling link's error row stays while the link dangles and goes once it is removed; a run
    over another folder leaves the rows of this one alone."""
    import os

    root, other = tmp_path / "links", tmp_path / "other"
    root.mkdir()
    other.mkdir()
    (root / "ok.txt").write_text("fine")
    (other / "b.txt").write_text("also fine")
    os.symlink(root / "nowhere.jpg", root / "dangling.jpg")
    os.symlink(root / "gone.txt", root / "mended.txt")

    def discover_errors() -> set[str]:
        rows = Store(settings.store).read("errors").to_pylist()
        return {Path(r["uri"]).name for r in rows if r["stage"] == "discover"}

    ingest([str(root)], settings)
    assert discover_errors() == {"dangling.jpg", "mended.txt"}
    ingest([str(root)], settings)  # nothing changed: both stay
    assert discover_errors() == {"dangling.jpg", "mended.txt"}
    (root / "dangling.jpg").unlink()
    (root / "gone.txt").write_text("the link's target now exists")
    ingest([str(other)], settings)  # another folder: not this one's business
    assert discover_errors() == {"dangling.jpg", "mended.txt"}
    report = ingest([str(root)], settings)
    assert discover_errors() == set()
    assert report.embedded == 2  # the mended link and its target
    assert Store(settings.store).count("errors") == 0
