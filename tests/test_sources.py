"""Tests for omnivec.sources: walking folders, globs, hidden files, symlinks, stable ids."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path

import pytest
from PIL import Image

from omnivec.errors import SourceError
from omnivec.sources import (
    Discovery,
    SourceFile,
    discover,
    item_id_for,
    iter_batches,
    modality_for,
)

# --------------------------------------------------------------------------- helpers


def make_image(path: Path, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (10, 120, 200)).save(path, fmt)
    return path


def make_text(path: Path, text: str = "some words\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A source folder with nested images/texts, unknown types and hidden entries."""
    root = tmp_path / "src"
    make_image(root / "a.jpg")
    make_image(root / "b.PNG", "PNG")
    make_text(root / "notes.txt")
    make_text(root / "readme.md", "# readme\n")
    make_image(root / "sub" / "deep" / "c.webp")
    make_text(root / "sub" / "d.markdown")
    make_image(root / "sub" / "e.tiff")
    make_text(root / "data.csv", "a,b\n1,2\n")  # unknown type
    make_text(root / "sub" / "Makefile", "all:\n")  # no extension
    make_image(root / ".hidden.jpg")  # hidden file
    make_text(root / ".git" / "HEAD.txt")  # inside a hidden folder
    make_image(root / "sub" / ".cache" / "thumb.png")  # hidden folder deeper down
    return root


def rels(disc: Discovery, root: Path) -> set[str]:
    return {Path(f.uri).relative_to(root).as_posix() for f in disc.files}


VISIBLE = {
    "a.jpg",
    "b.PNG",
    "notes.txt",
    "readme.md",
    "sub/deep/c.webp",
    "sub/d.markdown",
    "sub/e.tiff",
}
HIDDEN = {".hidden.jpg", ".git/HEAD.txt", "sub/.cache/thumb.png"}


def discover_with_timeout(paths, seconds: float = 10.0, **kwargs) -> Discovery:
    """Run discover in a daemon thread so a hang fails the test instead of freezing it."""
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["disc"] = discover(paths, **kwargs)
        except BaseException as exc:  # pragma: no cover - surfaced below
            result["exc"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"discover() did not finish within {seconds}s"
    if "exc" in result:
        raise result["exc"]  # type: ignore[misc]
    return result["disc"]  # type: ignore[return-value]


# --------------------------------------------------------------------------- modality_for / ids


@pytest.mark.parametrize(
    ("path", "modality"),
    [
        ("x.jpg", "image"),
        ("x.JPEG", "image"),
        ("/a/b/x.png", "image"),
        ("x.webp", "image"),
        ("x.gif", "image"),
        ("x.bmp", "image"),
        ("x.tif", "image"),
        ("x.TIFF", "image"),
        ("x.txt", "text"),
        ("x.md", "text"),
        ("x.Markdown", "text"),
        ("x.csv", None),
        ("archive.tar.gz", None),
        ("Makefile", None),
        ("folder.jpg/file", None),
        (".jpg", None),  # a hidden file named ".jpg" has no extension
    ],
)
def test_modality_for(path: str, modality: str | None) -> None:
    assert modality_for(path) == modality


def test_item_id_for_is_stable_32_hex() -> None:
    uri = "/data/photos/cat.jpg"
    first = item_id_for(uri)
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert item_id_for(uri) == first
    assert item_id_for(str(uri)) == first
    assert first == hashlib.sha256(uri.encode()).hexdigest()[:32]


def test_item_id_for_differs_between_uris() -> None:
    ids = {item_id_for(f"/data/{i}.jpg") for i in range(200)}
    assert len(ids) == 200
    assert item_id_for("/data/a.jpg") != item_id_for("/data/a.jpg/")


def test_item_id_for_handles_undecodable_file_names() -> None:
    uri = os.fsdecode(b"/data/caf\xe9.jpg")  # surrogate-escaped, as os.walk yields it
    ident = item_id_for(uri)
    assert re.fullmatch(r"[0-9a-f]{32}", ident)
    assert ident == item_id_for(uri)


def test_source_file_item_id_matches_item_id_for() -> None:
    f = SourceFile("/x/y.png", "image", 10, 0)
    assert f.item_id == item_id_for("/x/y.png")


# --------------------------------------------------------------------------- discover: walking


def test_discover_recursive_finds_images_and_texts(tree: Path) -> None:
    disc = discover([tree])
    assert rels(disc, tree) == VISIBLE
    assert disc.skipped == 2  # data.csv and Makefile; hidden entries are not counted
    assert disc.problems == []
    assert disc.roots == [str(tree)]
    by_rel = {Path(f.uri).relative_to(tree).as_posix(): f for f in disc.files}
    assert {r for r, f in by_rel.items() if f.modality == "image"} == {
        "a.jpg",
        "b.PNG",
        "sub/deep/c.webp",
        "sub/e.tiff",
    }
    assert {r for r, f in by_rel.items() if f.modality == "text"} == {
        "notes.txt",
        "readme.md",
        "sub/d.markdown",
    }


def test_discover_records_size_and_mtime(tree: Path) -> None:
    disc = discover([tree])
    assert disc.files
    for f in disc.files:
        st = os.stat(f.uri)
        assert os.path.isabs(f.uri)
        assert f.size == st.st_size > 0
        assert f.mtime_ns == st.st_mtime_ns


def test_discover_relative_path_gives_absolute_uris(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree.parent)
    disc = discover(["src"])
    assert disc.roots == [str(tree)]
    assert rels(disc, tree) == VISIBLE


def test_discover_skips_hidden_by_default(tree: Path) -> None:
    found = rels(discover([tree]), tree)
    assert found.isdisjoint(HIDDEN)


def test_discover_include_hidden(tree: Path) -> None:
    disc = discover([tree], include_hidden=True)
    assert rels(disc, tree) == VISIBLE | HIDDEN


def test_discover_explicit_hidden_root_is_walked(tmp_path: Path) -> None:
    root = tmp_path / ".private"
    make_image(root / "x.png")
    assert rels(discover([root]), root) == {"x.png"}


# --------------------------------------------------------------------------- discover: globs


def test_include_glob_without_slash_matches_file_name(tree: Path) -> None:
    disc = discover([tree], include=["*.jpg", "*.webp"])
    assert rels(disc, tree) == {"a.jpg", "sub/deep/c.webp"}
    # every other supported visible file was skipped by the glob, plus the two unknown types
    assert disc.skipped == len(VISIBLE) - 2 + 2


def test_include_glob_without_slash_matches_nested_name(tree: Path) -> None:
    assert rels(discover([tree], include=["c.webp"]), tree) == {"sub/deep/c.webp"}


def test_include_glob_with_slash_matches_path_relative_to_root(tree: Path) -> None:
    assert rels(discover([tree], include=["sub/deep/*"]), tree) == {"sub/deep/c.webp"}
    assert rels(discover([tree], include=["sub/*.tiff"]), tree) == {"sub/e.tiff"}
    # a pattern with "/" is not matched against the bare name
    assert rels(discover([tree], include=["deep/c.webp"]), tree) == set()


def test_exclude_glob_without_slash(tree: Path) -> None:
    disc = discover([tree], exclude=["*.txt", "*.md"])
    assert rels(disc, tree) == VISIBLE - {"notes.txt", "readme.md"}
    assert disc.skipped == 2 + 2


def test_exclude_glob_with_slash_drops_a_subtree(tree: Path) -> None:
    disc = discover([tree], exclude=["sub/*"])
    assert rels(disc, tree) == {"a.jpg", "b.PNG", "notes.txt", "readme.md"}


def test_exclude_folder_by_name(tree: Path) -> None:
    assert rels(discover([tree], exclude=["deep"]), tree) == VISIBLE - {"sub/deep/c.webp"}


def test_exclude_beats_include(tree: Path) -> None:
    disc = discover([tree], include=["*.jpg", "*.txt"], exclude=["notes.txt"])
    assert rels(disc, tree) == {"a.jpg"}


# --------------------------------------------------------------------------- discover: single files


def test_discover_single_file(tree: Path) -> None:
    path = tree / "sub" / "e.tiff"
    disc = discover([path])
    assert [f.uri for f in disc.files] == [str(path)]
    assert disc.files[0].modality == "image"
    assert disc.files[0].size == path.stat().st_size
    assert disc.roots == [str(path)]
    assert disc.skipped == 0


def test_discover_single_text_file(tree: Path) -> None:
    disc = discover([str(tree / "readme.md")])
    assert [(Path(f.uri).name, f.modality) for f in disc.files] == [("readme.md", "text")]


def test_discover_missing_path_raises(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        discover([tmp_path / "nope"])


def test_discover_unsupported_single_file_raises(tree: Path) -> None:
    with pytest.raises(SourceError, match="unsupported"):
        discover([tree / "data.csv"])


def test_discover_same_file_twice_is_one_item(tree: Path) -> None:
    path = tree / "a.jpg"
    disc = discover([path, path, str(tree / "sub" / ".." / "a.jpg")])
    assert [f.uri for f in disc.files] == [str(path)]


def test_discover_file_and_its_folder_give_one_item_each(tree: Path) -> None:
    disc = discover([tree, tree / "a.jpg", tree / "sub"])
    uris = [f.uri for f in disc.files]
    assert len(uris) == len(set(uris)) == len(VISIBLE)


def test_discover_several_roots(tmp_path: Path) -> None:
    one = make_image(tmp_path / "one" / "x.png").parent
    two = make_text(tmp_path / "two" / "y.txt").parent
    disc = discover([one, two])
    assert {Path(f.uri).name for f in disc.files} == {"x.png", "y.txt"}
    assert disc.roots == [str(one), str(two)]


def test_discover_empty_folder(tmp_path: Path) -> None:
    disc = discover([tmp_path])
    assert disc.files == [] and disc.skipped == 0 and disc.problems == []


# --------------------------------------------------------------------------- discover: symlinks


def test_symlink_loop_does_not_hang(tree: Path) -> None:
    os.symlink(tree, tree / "sub" / "loop")  # sub/loop -> the root, a cycle
    os.symlink(tree / "sub", tree / "sub" / "deep" / "up")  # another cycle
    disc = discover_with_timeout([tree])
    assert rels(disc, tree) == VISIBLE  # nothing found twice through the links


def test_symlinked_folder_is_not_followed(tmp_path: Path, tree: Path) -> None:
    outside = make_image(tmp_path / "elsewhere" / "far.jpg").parent
    os.symlink(outside, tree / "linked")
    assert "linked/far.jpg" not in rels(discover_with_timeout([tree]), tree)


def test_dangling_symlink_is_a_problem(tree: Path) -> None:
    link = tree / "x.jpg"
    os.symlink(tree / "does-not-exist.jpg", link)
    disc = discover([tree])
    assert str(link) not in {f.uri for f in disc.files}
    assert [uri for uri, _ in disc.problems] == [str(link)]
    assert "cannot stat" in disc.problems[0][1]
    assert rels(disc, tree) == VISIBLE  # the rest is still found


def test_dangling_symlink_given_directly_raises(tmp_path: Path) -> None:
    link = tmp_path / "x.jpg"
    os.symlink(tmp_path / "missing.jpg", link)
    with pytest.raises(SourceError, match="dangling"):
        discover([link])


# --------------------------------------------------------------------------- Discovery.owns


def test_owns_files_under_root_not_in_prefix_sibling(tmp_path: Path) -> None:
    photos = make_image(tmp_path / "a" / "photos" / "x.jpg").parent
    photos2 = make_image(tmp_path / "a" / "photos2" / "x.jpg").parent
    disc = discover([photos])
    assert disc.owns(str(photos / "x.jpg"))
    assert disc.owns(str(photos / "sub" / "gone.jpg"))  # deleted files under the root
    assert disc.owns(str(photos))
    assert not disc.owns(str(photos2 / "x.jpg"))
    assert not disc.owns(str(photos2))
    assert not disc.owns(str(tmp_path / "a" / "other.jpg"))


def test_owns_single_file_root(tmp_path: Path) -> None:
    path = make_image(tmp_path / "pic.jpg")
    disc = discover([path])
    assert disc.owns(str(path))
    assert not disc.owns(str(path) + "x")
    assert not disc.owns(str(tmp_path / "other.jpg"))


def test_owns_with_trailing_separator_root() -> None:
    disc = Discovery(roots=["/data/photos/"])
    assert disc.owns("/data/photos/x.jpg")
    assert not disc.owns("/data/photos2/x.jpg")


def test_owns_nothing_without_roots() -> None:
    assert not Discovery().owns("/anything.jpg")


# --------------------------------------------------------------------------- iter_batches


def test_iter_batches_splits_in_order() -> None:
    files = [SourceFile(f"/f{i}.txt", "text", 1, 0) for i in range(7)]
    batches = list(iter_batches(files, 3))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert [f for b in batches for f in b] == files
    assert list(iter_batches([], 3)) == []
