"""A full disk: the ingest stops with one clear error (exit code 2, the store named, "no space
left"), the store keeps its last good version (every table readable, the previous run's tag intact,
search works), and once space is freed the next run completes and equals a clean run.

The first test puts the store on a real small filesystem (a tmpfs mounted for the test; skipped,
with the reason, where mounting is not permitted). The second is a SIMULATION for such machines: the
table library's merge is made to fail with the error it raises on a full disk.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from conftest import make_settings
from omnivec.errors import StoreError
from omnivec.pipeline.run import ingest
from omnivec.query import search
from omnivec.store import Store

ROOT = Path(__file__).resolve().parents[1]


def _soak():  # type: ignore[no-untyped-def]
    """benchmarks/crash_soak.py, for its store checks (every table readable, no duplicates, equal to a clean run)."""
    import importlib.util

    if "crash_soak" not in sys.modules:
        spec = importlib.util.spec_from_file_location("crash_soak", ROOT / "benchmarks" / "crash_soak.py")
        assert spec is not None and spec.loader is not None
        sys.modules["crash_soak"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["crash_soak"])
    return sys.modules["crash_soak"]


soak = _soak()
# what LanceDB raises when a commit cannot be written for lack of space (seen on a full tmpfs)
LANCE_ENOSPC = ("lance error: LanceError(IO): Generic LocalFileSystem error: Unable to copy data to file: "
                "No space left on device (os error 28)")


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command here: the real disk-full test needs a small tmpfs "
                    "(test_disk_full_simulated covers the error path)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a small tmpfs is not permitted here ({done.stderr.strip() or done.returncode}): "
                    "the real disk-full test needs one (test_disk_full_simulated covers the error path)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a file until the filesystem has no page left."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for chunk in (1 << 20, 1 << 12):
            block = b"\0" * chunk
            while True:
                try:
                    fh.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return filler


def add_files(corpus: Path) -> None:
    """Version 2 of the corpus: new texts, an image, a changed text, a deleted one."""
    from fixtures.bad_files import good_jpeg

    for i in range(5):
        (corpus / "texts" / f"new-{i}.txt").write_text(f"a new note {i} about a red circle and more")
    (corpus / "images" / "new.jpg").write_bytes(good_jpeg((1, 2, 3)))
    (corpus / "texts" / "ocean.txt").write_text("Storm waves break on the harbour wall.")
    os.utime(corpus / "texts" / "ocean.txt", (1e9, 1e9))
    (corpus / "texts" / "dogs.txt").unlink()


def hits(settings: Any, **kw: Any) -> list[tuple[str, float]]:
    return [(h.uri, round(h.score, 5)) for h in search("a red circle", k=10, settings=settings, **kw)]


def tables_at(store: Store, tag: str) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for name in store.table_names():
        tbl = store.db.open_table(name)
        if tag in tbl.tags.list():
            tbl.checkout(tag)
            out[name] = sorted(tbl.to_arrow().to_pylist(), key=repr)
    return out


def readable(store: Store) -> None:
    """Every table at its latest version and at every tag."""
    for name in store.table_names():
        store.read(name)
        for tag in store.table(name).tags.list():
            tbl = store.db.open_table(name)
            tbl.checkout(tag)
            tbl.to_arrow()


def test_disk_full_on_a_real_small_filesystem(small_disk, tmp_path, corpus, tiny_clip_dir):
    settings = make_settings(small_disk / "store", tiny_clip_dir, batch_size=1)
    clean = make_settings(tmp_path / "clean", tiny_clip_dir, batch_size=1)
    first = ingest([str(corpus)], settings)
    ingest([str(corpus)], clean)
    store = Store(settings.store)
    before = tables_at(store, first.run_name)
    found_before = hits(settings)
    add_files(corpus)
    filler = fill(small_disk)

    env = {**os.environ, "OMNIVEC_SPACES__TEXT__ENABLED": "false", "OMNIVEC_SPACES__CLAP__ENABLED": "false"}
    res = subprocess.run([sys.executable, "-m", "flows.cli", "ingest", str(corpus), "--store", settings.store,
                          "--model", f"local-dir:{tiny_clip_dir}", "--batch-size", "1", "--local"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    message = " ".join(res.stderr.split())
    assert res.returncode == 2, res.stderr
    assert "no space left on device" in message and settings.store in message, res.stderr
    assert "Traceback" not in res.stderr

    store = Store(settings.store)  # the store still opens, at its last good version
    readable(store)
    assert tables_at(store, first.run_name) == before  # the previous run's tag is intact
    assert hits(settings, as_of=first.run_name) == found_before
    assert hits(settings)  # and a search works

    filler.unlink()  # space freed: the same command completes ...
    res = subprocess.run(res.args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    ingest([str(corpus)], clean)
    # ... and the store equals a clean run of the same two corpus versions
    assert soak.invariants(Path(settings.store)) == []
    assert soak.compare(Path(settings.store), Path(clean.store)) == []
    assert hits(settings) == hits(clean)


def test_disk_full_simulated(tmp_path, corpus, tiny_clip_dir, monkeypatch, capsys):
    """SIMULATION (no real full disk): every merge after the first fails as LanceDB fails on a full disk,
    so the run stops part-way through its commit, after the vectors, before the items."""
    import lancedb.table

    from flows.cli_common import _guard

    settings = make_settings(tmp_path / "store", tiny_clip_dir, batch_size=1)
    clean = make_settings(tmp_path / "clean", tiny_clip_dir, batch_size=1)
    first = ingest([str(corpus)], settings)
    ingest([str(corpus)], clean)
    store = Store(settings.store)
    before = tables_at(store, first.run_name)
    add_files(corpus)

    merge = lancedb.table.LanceTable._do_merge
    calls = {"n": 0}

    def full_after_one(self: Any, *a: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError(LANCE_ENOSPC)
        return merge(self, *a, **kw)

    monkeypatch.setattr(lancedb.table.LanceTable, "_do_merge", full_after_one)
    with pytest.raises(StoreError) as caught:
        ingest([str(corpus)], settings)
    assert "no space left on device" in str(caught.value) and settings.store in str(caught.value)
    with pytest.raises(typer.Exit) as stopped:  # what the command line makes of it
        _guard(lambda: ingest([str(corpus)], settings))
    assert stopped.value.exit_code == 2 and "no space left on device" in " ".join(capsys.readouterr().err.split())
    monkeypatch.undo()

    store = Store(settings.store)
    readable(store)
    assert tables_at(store, first.run_name) == before
    assert hits(settings)
    ingest([str(corpus)], settings)
    ingest([str(corpus)], clean)
    assert soak.invariants(Path(settings.store)) == []
    assert soak.compare(Path(settings.store), Path(clean.store)) == []
    assert hits(settings) == hits(clean)
