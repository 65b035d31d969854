"""Symlinks: a link out of the source folders is not read (at discovery, nor when a file or a folder on
its path is swapped for one before it is read); links inside are; ``follow_links`` reads them all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

import omnivec.media as media
import omnivec.pipeline.run as run
from conftest import make_settings
from fixtures.audio_files import sine
from fixtures.hostile import OUTSIDE_SECRET, HostileCorpus
from omnivec.media import lies_within, open_regular
from omnivec.pipeline.run import ingest
from omnivec.query import search
from omnivec.sources import discover
from omnivec.store import Store

SECRET_WORD = OUTSIDE_SECRET.split()[0]


def _outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    (out / "dir").mkdir(parents=True)
    (out / "secret.txt").write_text(OUTSIDE_SECRET)
    (out / "dir" / "notes.txt").write_text(OUTSIDE_SECRET + " (in a folder)")
    (out / "m.csv").write_text(f"caption\n{OUTSIDE_SECRET} (a caption)\n")
    sf.write(out / "secret.wav", sine(3, 16000), 16000)
    return out


def _everything_stored(store_uri: str) -> str:
    """Every value of every table of the store, as one text (where a secret would show)."""
    store = Store(store_uri)
    parts = []
    for name in store.table_names():
        table = store.read(name)
        for column in table.column_names:
            if column != "vector":
                parts += [str(v) for v in table.column(column).to_pylist()]
    return "\n".join(parts)


def _uris(store_uri: str, table: str = "items") -> set[str]:
    return {r["uri"] for r in Store(store_uri).read(table, ["uri"]).to_pylist()}


def test_links_out_of_the_sources_are_skipped_and_counted_links_inside_are_read(tmp_path, tiny_clip_dir):
    outside = _outside(tmp_path)
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "good.txt").write_text("a red circle")
    (root / "sub" / "real.txt").write_text("a blue square")
    os.symlink("sub/real.txt", root / "alias.txt")  # inside: read
    os.symlink(outside / "secret.txt", root / "leak.txt")  # absolute link out
    os.symlink("../../outside/secret.txt", root / "sub" / "leak.md")  # relative link out
    os.symlink(outside / "m.csv", root / "leak.csv")  # a manifest whose captions would be stored
    (root / "members.csv").write_text("text\n../outside/dir/notes.txt\nsub/real.txt\n")
    settings = make_settings(tmp_path / "store", tiny_clip_dir)

    report = ingest([str(root)], settings)
    assert report.links_skipped == 3
    items = _uris(settings.store)
    assert {str(root / "good.txt"), str(root / "sub" / "real.txt"), str(root / "alias.txt")} <= items
    assert not any("leak" in u or "outside" in u for u in items)
    errors = {r["uri"]: r for r in Store(settings.store).read("errors").to_pylist()}
    member = str(outside / "dir" / "notes.txt")
    assert set(errors) == {member}  # a manifest names it: an errors row says why it is not read
    assert "outside the source folders" in errors[member]["message"]
    assert "--follow-links" in errors[member]["message"] and errors[member]["stage"] == "discover"
    assert SECRET_WORD not in _everything_stored(settings.store)
    hits = search(OUTSIDE_SECRET, k=20, settings=settings)
    assert hits and not any(h.uri.startswith(str(outside)) or "leak" in h.uri for h in hits)
    assert "symlinked file(s) point outside the source folders" in report.to_markdown()

    # asked for: the same links are read
    followed = make_settings(tmp_path / "store", tiny_clip_dir, follow_links=True)
    report = ingest([str(root)], followed)
    assert report.links_skipped == 0
    assert {str(root / "leak.txt"), str(root / "sub" / "leak.md"), member} <= _uris(followed.store)
    assert SECRET_WORD in _everything_stored(followed.store)

    # and not asked for again: what the links brought in is removed from the latest versions (the member
    # lies outside the walked folder, and items there are never deleted by a walk: it keeps its row)
    report = ingest([str(root)], followed.model_copy(update={"follow_links": False}))
    assert report.links_skipped == 3 and not any("leak" in u for u in _uris(followed.store))
    assert sum(c["deleted"] for c in report.counts.values()) == 3  # 2 links, 1 caption


def test_a_root_given_through_a_link_and_a_link_between_roots_are_read(tmp_path, tiny_clip_dir):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (b / "target.txt").write_text("a green triangle")
    os.symlink(b / "target.txt", a / "to-b.txt")  # leaves root a, lands in root b
    os.symlink(a, tmp_path / "a-link")
    disc = discover([tmp_path / "a-link", b])
    assert disc.links_skipped == 0
    assert {Path(f.uri).name for f in disc.files} == {"to-b.txt", "target.txt"}
    assert discover([tmp_path / "a-link"]).links_skipped == 1  # without b, the link leaves the sources
    report = ingest([str(tmp_path / "a-link"), str(b)], make_settings(tmp_path / "store", tiny_clip_dir))
    assert report.links_skipped == 0 and report.embedded == 2


def _swap_after_discovery(monkeypatch: pytest.MonkeyPatch, corpus: HostileCorpus) -> None:
    real = run.make_plan

    def make_plan(*args: Any, **kwargs: Any) -> Any:
        plan = real(*args, **kwargs)
        corpus.mutate()
        return plan

    monkeypatch.setattr(run, "make_plan", make_plan)


@pytest.mark.parametrize("proc", [True, False], ids=["descriptor", "realpath"])
def test_a_file_or_folder_swapped_for_a_link_out_after_discovery_is_not_read(tmp_path, tiny_clip_dir,
                                                                              tiny_clap_dir, monkeypatch, proc):
    if not proc:  # where the system cannot name a descriptor's path: the real path, just before the open
        monkeypatch.setattr(media, "_FD_PATHS", str(tmp_path / "no-proc"))
    outside = _outside(tmp_path)
    root = tmp_path / "corpus"
    (root / "dir").mkdir(parents=True)
    (root / "a.txt").write_text("a red circle")
    (root / "dir" / "notes.txt").write_text("a blue square")
    sf.write(root / "tone.wav", sine(3, 16000, 330.0), 16000)
    (root / "m.csv").write_text("caption\na harmless caption\n")
    (root / "kept.txt").write_text("a green triangle")
    corpus = HostileCorpus(root)

    def swap() -> None:
        for name, target in (("a.txt", outside / "secret.txt"), ("tone.wav", outside / "secret.wav"),
                             ("m.csv", outside / "m.csv")):
            (root / name).unlink()
            os.symlink(target, root / name)
        (root / "dir" / "notes.txt").unlink()
        (root / "dir").rmdir()
        os.symlink(outside / "dir", root / "dir")  # a folder on the path: dir/notes.txt now lies outside

    corpus.mutations.append(swap)
    _swap_after_discovery(monkeypatch, corpus)
    settings = make_settings(tmp_path / "store", tiny_clip_dir, tiny_clap_dir)
    report = ingest([str(root)], settings)
    assert corpus.mutated
    errors = {r["uri"]: r for r in Store(settings.store).read("errors").to_pylist()}
    swapped = {str(root / "a.txt"), str(root / "tone.wav"), str(root / "dir" / "notes.txt"),
               f"{root / 'm.csv'}#row=0&col=caption"}
    assert set(errors) == swapped
    for row in errors.values():
        assert row["stage"] == "read" and "outside the source folders" in row["message"], row
    assert _uris(settings.store) >= swapped | {str(root / "kept.txt")}
    vectors = {u for _, _, t in Store(settings.store).vector_tables() for u in _uris(settings.store, t)}
    assert vectors == {str(root / "kept.txt")}
    assert SECRET_WORD not in _everything_stored(settings.store)
    assert report.failed == 4


def test_the_descriptor_check_names_the_file_actually_opened(tmp_path):
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    (outside / "x.txt").write_text("x")
    (inside / "y.txt").write_text("y")
    os.symlink(outside / "x.txt", inside / "link.txt")
    roots = (str(inside.resolve()),)
    fd, _ = open_regular(str(inside / "y.txt"), roots)
    os.close(fd)
    with pytest.raises(media.DecodeError, match="outside the source folders"):
        open_regular(str(inside / "link.txt"), roots)
    fd, _ = open_regular(str(inside / "link.txt"), None)  # not checked: followed
    os.close(fd)
    assert lies_within("/a/b/c", ["/a/b"]) and lies_within("/a/b", ["/a/b"]) and lies_within("/x", ["/"])
    assert not lies_within("/a/bc", ["/a/b"]) and not lies_within("/a", ["/a/b"])


def test_cli_reports_links_skipped_and_follow_links_reads_them(tmp_path, tiny_clip_dir):
    outside = _outside(tmp_path)
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "good.txt").write_text("a red circle")
    os.symlink(outside / "secret.txt", root / "leak.txt")
    cwd = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMNIVEC_SPACES__TEXT__ENABLED": "false", "OMNIVEC_SPACES__CLAP__ENABLED": "false"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "flows.cli", "ingest", str(root), "--local",
                               "--model", f"local-dir:{tiny_clip_dir}", *args], capture_output=True, text=True,
                              cwd=cwd, env=env, timeout=300)

    done = cli("--store", str(tmp_path / "s1"), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["links_skipped"] == 1
    done = cli("--store", str(tmp_path / "s2"))
    assert done.returncode == 0, done.stderr
    said = " ".join((done.stdout + done.stderr).split())
    assert "1 symlinked file(s) point outside the source folders" in said and "--follow-links" in said
    done = cli("--store", str(tmp_path / "s3"), "--json", "--follow-links")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["links_skipped"] == 0
    assert str(root / "leak.txt") in _uris(str(tmp_path / "s3"))
    assert np.isfinite(json.loads(done.stdout)["seconds"])
