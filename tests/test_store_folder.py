"""A store folder holds only omnivec's tables and its lock file: any other folder is refused as a store,
and nothing in it is touched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from omnivec.errors import StoreError
from omnivec.store import Store

ROOT = Path(__file__).resolve().parents[1]


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every entry under ``folder``: a file's bytes, None for a folder."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def users_folder(root: Path) -> Path:
    import lance

    folder = root / "mine"
    lance.write_dataset(pa.table({"id": [1, 2, 3]}), str(folder / "photos.lance"))  # someone's own Lance table
    (folder / "drafts.lance").mkdir()  # a folder named like a table, without versions
    (folder / "drafts.lance" / "chapter1.md").write_text("it was a dark night")
    (folder / "notes.txt").write_text("keep me")
    (folder / "sub").mkdir()
    (folder / "sub" / "a.jpg").write_bytes(b"\xff\xd8 not really")
    return folder


def test_ingest_into_a_folder_that_is_not_a_store_refuses_and_changes_nothing(tmp_path, tiny_clip_dir):
    folder = users_folder(tmp_path)
    before = tree(folder)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("a red circle")
    env = {**os.environ, "COLUMNS": "200", "OMNIVEC_SPACES__TEXT__ENABLED": "false",
           "OMNIVEC_SPACES__CLAP__ENABLED": "false"}
    for args in (["ingest", str(docs), "--local", "--model", f"local-dir:{tiny_clip_dir}"], ["status"]):
        res = subprocess.run([sys.executable, "-m", "flows.cli", *args, "--store", str(folder)], capture_output=True,
                             text=True, cwd=ROOT, env=env, timeout=300)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert f"{folder} is not an omnivec store" in res.stderr and "drafts.lance" in res.stderr
    assert tree(folder) == before  # byte for byte; no lock file either


def test_a_store_folder_is_new_empty_or_holds_only_omnivecs_entries(tmp_path):
    assert Store(tmp_path / "new", create=True).table_names() == []
    (tmp_path / "empty").mkdir()
    assert Store(tmp_path / "empty").table_names() == []
    store = Store(tmp_path / "store", create=True)
    store.upsert("items", pa.Table.from_pylist([{"item_id": "ab" * 8, "uri": "/x", "modality": "text"}],
                                               schema=store.ensure("items").schema))
    (tmp_path / "store" / ".omnivec-writer.lock").write_text("{}")
    assert Store(tmp_path / "store").count("items") == 1
    for stray in ("notes.txt", "photos.lance", "vectors_clip.lance"):
        path = tmp_path / "store" / stray
        path.mkdir() if stray.endswith(".lance") else path.write_text("x")
        with pytest.raises(StoreError, match=f"is not an omnivec store: it holds {stray}"):
            Store(tmp_path / "store")
        path.rmdir() if stray.endswith(".lance") else path.unlink()
    os.symlink(tmp_path / "empty", tmp_path / "store" / "errors.lance")  # a link, even with a table's name
    with pytest.raises(StoreError, match="errors.lance"):
        Store(tmp_path / "store", create=True)


def test_remove_unfinished_tables_removes_only_omnivecs_tables_without_version_or_data(tmp_path):
    store = Store(tmp_path / "store", create=True)
    store.ensure("items")
    unfinished = tmp_path / "store" / "errors.lance" / "_transactions"  # a creation that was killed
    unfinished.mkdir(parents=True)
    orphaned = tmp_path / "store" / "vectors_clip_0123456789ab.lance" / "data"  # versions gone: damage
    orphaned.mkdir(parents=True)
    (orphaned / "0001.lance").write_bytes(b"LANC")
    assert store.remove_unfinished_tables() == ["errors"]
    assert not unfinished.exists() and (orphaned / "0001.lance").read_bytes() == b"LANC"
    assert store.table_names() == ["items"]
