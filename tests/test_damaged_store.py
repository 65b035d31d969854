"""A damaged store: every command answers as on the whole store, or ends in one line naming the damaged
table and the store (exit 2; HTTP 503 with a JSON detail), and nothing it does destroys the damaged files."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import make_settings
from omnivec.store import Store

ROOT = Path(__file__).resolve().parents[1]
ENV = {"COLUMNS": "200", "OMNIVEC_SPACES__CLAP__ENABLED": "false", "OMNIVEC_SPACES__TEXT__ENABLED": "false"}
# (how, which table); "vectors" is the clip space's vector table
DAMAGES = [("truncate", "vectors"), ("truncate", "items"), ("zero", "items"), ("zero", "vectors"),
           ("delete", "vectors"), ("delete", "items"), ("random-manifest", "vectors"),
           ("manifest-length", "vectors"), ("truncate-manifest", "items"), ("no-versions", "vectors"),
           ("no-versions", "items")]


def damage(table_dir: Path, how: str) -> None:
    """Damage a table folder the way a disk, a copy or a person can."""
    data = sorted(glob.glob(str(table_dir / "data" / "*.lance")))
    latest = min(glob.glob(str(table_dir / "_versions" / "*.manifest")) or [""])  # newest first by name
    if how == "truncate":
        os.truncate(data[0], os.path.getsize(data[0]) // 2)
    elif how == "zero":
        Path(data[0]).write_bytes(bytes(os.path.getsize(data[0])))
    elif how == "delete":
        shutil.rmtree(table_dir)
    elif how == "random-manifest":
        Path(latest).write_bytes(os.urandom(os.path.getsize(latest)))
    elif how == "manifest-length":  # the first bytes: a length Lance trusts (it panics on it)
        with open(latest, "r+b") as fh:
            fh.write(b"\xff\xff\xff\x7f" * 4)
    elif how == "truncate-manifest":
        os.truncate(latest, os.path.getsize(latest) // 2)
    elif how == "no-versions":
        shutil.rmtree(table_dir / "_versions")
    else:
        raise ValueError(how)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the sha256 of its bytes ({} when it is gone)."""
    out = {}
    for path in sorted(folder.rglob("*")) if folder.exists() else []:
        if path.is_file():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def cli(args: list[str]) -> tuple[int, str, str]:
    from flows.cli import app

    result = CliRunner().invoke(app, args, env=ENV)
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> dict[str, Any]:
    """A store ingested from shape images and texts (one file fails), and each command's answer on it."""
    from omnivec.pipeline.run import ingest
    from omnivec.sample import build_sample_corpus

    root = tmp_path_factory.mktemp("whole")
    corpus = build_sample_corpus(root / "corpus", audio=False)
    (corpus / "texts" / "not-text.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    settings = make_settings(root / "store", tiny_clip_dir, batch_size=8)
    ingest([str(corpus)], settings)
    flags = ["--model", f"local-dir:{tiny_clip_dir}"]
    store = Store(settings.store)
    item = next(r for r in store.read("items").to_pylist() if r["modality"] == "image")
    answers = {}
    for name, args in _queries(flags).items():
        code, out, _ = cli([*args, "--store", settings.store])
        assert code == 0, name
        answers[name] = json.loads(out)
    return {"store": Path(settings.store), "corpus": corpus, "flags": flags, "answers": answers, "item": item,
            "settings": settings, "vectors": next(t for _, _, t in store.vector_tables())}


def _queries(flags: list[str]) -> dict[str, list[str]]:
    return {"search": ["search", "a red circle", "--json", *flags], "errors": ["errors", "--json"],
            "spaces": ["spaces", "--json"], "runs": ["runs", "--json"]}


def _damaged_copy(whole: dict[str, Any], tmp_path: Path, how: str, which: str) -> tuple[Path, str]:
    store = tmp_path / "store"
    shutil.copytree(whole["store"], store)
    table = whole["vectors"] if which == "vectors" else which
    before = snapshot(store / f"{table}.lance")
    damage(store / f"{table}.lance", how)
    assert snapshot(store / f"{table}.lance") != before  # the damage is real
    return store, table


@pytest.mark.parametrize(("how", "which"), DAMAGES)
def test_every_command_answers_or_names_the_damaged_table(whole, tmp_path, how, which):
    store, table = _damaged_copy(whole, tmp_path, how, which)
    named = f"table {table} of store {store} is damaged"
    evidence = snapshot(store / f"{table}.lance")

    code, out, err = cli(["status", "--json", "--store", str(store)])
    info = json.loads(out)
    assert code == 2 and [p["table"] for p in info["problems"]] == [table], info["problems"]
    assert info["problems"][0]["problems"] and info["problems"][0]["remedies"]

    for name, args in _queries(whole["flags"]).items():
        code, out, err = cli([*args, "--store", str(store)])
        if code == 0:
            assert json.loads(out) == whole["answers"][name], name  # answered as on the whole store
        else:
            assert code == 2 and named in err and "Traceback" not in err, (name, err)

    for args in (["ingest", str(whole["corpus"]), "--local", *whole["flags"]], ["maintain", "--local"]):
        code, out, err = cli([*args, "--store", str(store)])
        assert code in (0, 2) and "Traceback" not in err, (args[0], code, err)
        assert code == 0 or named in err, (args[0], err)
        if args[0] == "ingest":
            assert code == 2  # an ingest reads every table: it must stop before writing anything
    assert snapshot(store / f"{table}.lance") == evidence  # nothing removed or rewrote the damaged table


@pytest.mark.parametrize(("how", "which"), DAMAGES)
def test_the_api_answers_or_says_503_and_healthz_reports_the_damage(whole, tmp_path, how, which):
    from omnivec.api import create_app

    store, table = _damaged_copy(whole, tmp_path, how, which)
    item = whole["item"]["item_id"]
    settings = whole["settings"].model_copy(update={"store": str(store)})
    settings._pinned = whole["settings"]._pinned
    whole_app = TestClient(create_app(whole["settings"], token=""))
    client = TestClient(create_app(settings, token=""), raise_server_exceptions=False)
    health = client.get("/healthz")
    assert health.status_code == 503 and health.json()["status"] == "damaged"
    assert [p["table"] for p in health.json()["problems"]] == [table]
    for path in ("/search?q=a+red+circle&k=5", f"/items/{item}", f"/media/{item}?size=64"):
        got = client.get(path)
        assert got.status_code in (200, 503), (path, got.status_code, got.text)
        if got.status_code == 503:
            assert f"table {table} of store {store} is damaged" in got.json()["detail"]
        else:
            want = whole_app.get(path)
            assert want.status_code == 200 and got.content == want.content, path
    picture = next(Path(whole["corpus"]).rglob("*.png")).read_bytes()
    got = client.post("/search", files={"file": ("q.png", picture, "image/png")}, data={"k": "5"})
    assert got.status_code in (200, 503), (got.status_code, got.text)  # the store's fault, not the upload's
    if got.status_code == 503:
        assert f"table {table} of store {store} is damaged" in got.json()["detail"]
    else:
        want = whole_app.post("/search", files={"file": ("q.png", picture, "image/png")}, data={"k": "5"})
        assert want.status_code == 200 and got.json()["hits"] == want.json()["hits"]


def test_the_real_command_ends_in_one_line_naming_table_and_store(whole, tmp_path):
    store, table = _damaged_copy(whole, tmp_path, "manifest-length", "vectors")
    env = {**os.environ, **ENV}
    for args in (["search", "a red circle", *whole["flags"]], ["status"]):
        res = subprocess.run([sys.executable, "-m", "flows.cli", *args, "--store", str(store)], capture_output=True,
                             text=True, cwd=ROOT, env=env, timeout=300)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        text = res.stderr if args[0] == "search" else res.stdout
        assert f"table {table} of store {store} is damaged" in text or f"  {table}: its latest version" in text


def test_a_damaged_new_version_is_repaired_by_the_restore_status_names(whole, tmp_path):
    """A data file written by the second run is cut short: status names the first run, whose version
    of the table is intact; `restore --to` it makes the store whole again (as new versions)."""
    from omnivec.pipeline.run import ingest

    corpus = tmp_path / "corpus"
    shutil.copytree(whole["corpus"], corpus)
    settings = make_settings(tmp_path / "store", Path(whole["flags"][1].removeprefix("local-dir:")), batch_size=8)
    first = ingest([str(corpus)], settings)
    (corpus / "texts" / "new.txt").write_text("a brand new note about rivers")
    ingest([str(corpus)], settings)
    table = whole["vectors"]
    files = sorted(glob.glob(f"{settings.store}/{table}.lance/data/*.lance"), key=os.path.getmtime)
    assert len(files) == 2
    os.truncate(files[-1], os.path.getsize(files[-1]) // 2)
    code, out, _ = cli(["status", "--json", "--store", settings.store])
    problems = json.loads(out)["problems"]
    assert code == 2 and [p["table"] for p in problems] == [table]
    assert f"omnivec restore --to {first.run_name}" in problems[0]["remedies"][0]
    code, out, err = cli(["restore", "--to", first.run_name, "--store", settings.store])
    assert code == 0, err
    code, out, _ = cli(["status", "--json", "--store", settings.store])
    assert code == 0 and json.loads(out)["problems"] == []
    code, out, _ = cli(["search", "a red circle", "--json", "--store", settings.store, *whole["flags"]])
    assert code == 0 and json.loads(out)


def test_status_counts_vector_rows_without_an_items_row(whole, tmp_path):
    from omnivec.store.store import sql_in

    store_dir = tmp_path / "store"
    shutil.copytree(whole["store"], store_dir)
    store = Store(store_dir)
    text_item = next(r for r in store.read("items").to_pylist() if r["modality"] == "text" and r["status"] == "ok")
    rows = store.count(whole["vectors"], sql_in("item_id", [text_item["item_id"]]))
    assert rows >= 1
    store.delete("items", sql_in("item_id", [text_item["item_id"]]))  # as a run stopped before its items commit
    code, out, _ = cli(["status", "--json", "--store", str(store_dir)])
    info = json.loads(out)
    assert code == 0 and info["problems"] == [] and info["orphans"] == {whole["vectors"]: rows}
    code, out, _ = cli(["status", "--store", str(store_dir)])
    assert code == 0 and f"note: {rows} rows of {whole['vectors']} belong to no row of items" in out


def test_healthz_checks_once_per_state_of_the_store(whole, tmp_path, monkeypatch):
    from omnivec.store import health

    store_dir = tmp_path / "store"
    shutil.copytree(whole["store"], store_dir)
    calls = []
    real = health.check_store
    monkeypatch.setattr(health, "check_store", lambda st: calls.append(1) or real(st))
    cache = health.HealthCache(ttl=3600)
    store = Store(store_dir)
    assert not cache.get(store).damaged and not cache.get(store).damaged
    assert len(calls) == 1  # same versions: the cached answer
    store.delete("errors", "true")  # a new version of a table
    assert not cache.get(store).damaged and len(calls) == 2
    damage(store_dir / f"{whole['vectors']}.lance", "truncate")  # no version changes...
    assert not cache.get(store).damaged and len(calls) == 2
    with pytest.raises(Exception, match="is damaged"):
        store.read(whole["vectors"])  # ...until a read meets the damage
    assert cache.get(store).damaged and len(calls) == 3
    expired = health.HealthCache(ttl=0)  # and at least every ttl seconds
    assert expired.get(store).damaged and expired.get(store).damaged and len(calls) == 5


def test_a_missing_vector_table_is_damage_not_an_empty_space(av_settings, corpus):
    """With two spaces that embed text, a deleted clip table must not leave clap answering alone."""
    from omnivec.errors import DamagedTableError
    from omnivec.pipeline.run import ingest
    from omnivec.query import search

    ingest([str(corpus)], av_settings)
    store = Store(av_settings.store)
    tables = {name: table for name, _, table in store.vector_tables()}
    assert set(tables) == {"clip", "clap"} and len(search("a red circle", k=3, settings=av_settings)) == 3
    shutil.rmtree(Path(av_settings.store) / f"{tables['clip']}.lance")
    with pytest.raises(DamagedTableError, match=f"table {tables['clip']} of store .* is damaged: it is missing"):
        search("a red circle", k=3, settings=av_settings)
    assert search("a red circle", k=3, settings=av_settings, space="clap")  # the intact space still answers
