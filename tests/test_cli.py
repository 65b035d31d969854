"""The `omnivec` command driven as a user would: real processes, real output, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.bad_files import write_bad_corpus

OMNIVEC = [sys.executable, "-m", "flows.cli"]
ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", "OMNIVEC_SPACES__TEXT__ENABLED": "false", **(env or {})}
    return subprocess.run([*OMNIVEC, *args], capture_output=True, text=True, cwd=ROOT, env=full_env,
                          timeout=timeout)


@pytest.fixture
def cli_store(tmp_path, corpus, tiny_clip_dir, tiny_clap_dir):
    expected = write_bad_corpus(corpus / "bad")
    store = tmp_path / "store"
    flags = ["--store", str(store), "--model", f"local-dir:{tiny_clip_dir}", "--clap-model", str(tiny_clap_dir)]
    return store, flags, expected


@pytest.mark.flow
def test_cli_ingest_through_prefect_then_query(prefect_harness, cli_store, corpus):
    from prefect.settings import PREFECT_API_URL

    store, flags, expected = cli_store
    api = {"PREFECT_API_URL": PREFECT_API_URL.value()}
    res = run(["ingest", str(corpus), *flags, "--json"], env=api)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["failed"] == len(expected) and report["embedded"] == 27
    assert "Traceback" not in res.stderr

    res = run(["search", "a red circle", *flags, "-k", "3", "--json"])
    assert res.returncode == 0, res.stderr
    hits = json.loads(res.stdout)
    assert len(hits) == 3
    assert all({"uri", "modality", "score", "space"} <= set(h) for h in hits)
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]

    img = corpus / "images"
    target = sorted(img.glob("green-square.*"))[0]
    res = run(["search", "--image", str(target), *flags, "-k", "1", "--modality", "image", "--json"])
    assert json.loads(res.stdout)[0]["uri"] == str(target)

    res = run(["status", "--store", str(store), "--json"])
    info = json.loads(res.stdout)
    vectors = {sp["name"]: sp["vectors"] for sp in info["spaces"]}
    assert info["errors"] == len(expected) and vectors == {"clip": 27, "clap": 7}  # clap: the 7 texts
    assert "prefect" not in res.stderr.lower()

    res = run(["errors", "--store", str(store), "--json"])
    assert {r["uri"] for r in json.loads(res.stdout)} == set(expected)

    res = run(["ingest", str(corpus), *flags, "--local"])  # plain output, second run: no work
    assert res.returncode == 0 and "embedded 0, failed 0" in res.stdout


def test_cli_strict_exits_1_on_failures(cli_store, corpus):
    _, flags, _ = cli_store
    res = run(["ingest", str(corpus / "bad"), *flags, "--local", "--strict"])
    assert res.returncode == 1
    assert "failed 6" in res.stdout


def test_cli_user_errors_exit_2_without_traceback(tmp_path, tiny_clip_dir):
    res = run(["ingest", str(tmp_path / "missing"), "--store", str(tmp_path / "s"), "--local"])
    assert res.returncode == 2 and "no such file or folder" in res.stderr
    assert "Traceback" not in res.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("hello")
    res = run(["ingest", str(tmp_path / "docs"), "--store", str(blocker / "store"), "--local"])
    assert res.returncode == 2 and "cannot be created" in res.stderr and "Traceback" not in res.stderr
    res = run(["search", "x", "--store", str(tmp_path / "nothing-here")])
    assert res.returncode == 2 and "no store at" in res.stderr
    res = run(["ingest", str(tmp_path / "docs"), "--store", str(tmp_path / "s"), "--model", "ViT-B-99", "--local"])
    assert res.returncode == 2 and "ViT-B-32" in res.stderr  # suggests close names
    assert "Traceback" not in res.stderr


@pytest.mark.flow
def test_cli_on_ephemeral_prefect_prints_nothing_alarming(tmp_path, tiny_clip_dir, tiny_clap_dir):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("hello world")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.pop("PREFECT_SERVER_ANALYTICS_ENABLED", None)  # the CLI must turn analytics off itself
    env["COLUMNS"] = "200"
    env["OMNIVEC_SPACES__TEXT__ENABLED"] = "false"
    res = subprocess.run([*OMNIVEC, "ingest", str(docs), "--store", str(tmp_path / "s"),
                          "--model", f"local-dir:{tiny_clip_dir}", "--clap-model", str(tiny_clap_dir)],
                         capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "embedded 1, failed 0" in res.stdout
    text = (res.stdout + res.stderr).lower()
    for alarming in ("traceback", "telemetry", "analytics", "error"):
        assert alarming not in text.replace("errors in store", "").replace("omnivec errors", ""), alarming


def test_a_remedy_naming_a_settings_table_reaches_stderr_verbatim(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    res = run(["search", "x", "--space", "clap", "--clap-model", str(tmp_path / "nowhere"), "--store", str(store)])
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "or switch the space off: [spaces.clap] enabled = false" in res.stderr  # rich markup would eat it


def test_a_file_named_like_markup_prints_verbatim_in_errors(tmp_path, tiny_clip_dir):
    store = tmp_path / "store"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "[bold]x.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))  # a PNG named .txt: an errors row
    res = run(["ingest", str(docs), "--store", str(store), "--model", f"local-dir:{tiny_clip_dir}", "--local"])
    assert res.returncode == 0, res.stderr
    res = run(["errors", "--store", str(store)])
    assert res.returncode == 0 and "[bold]x.txt" in res.stdout


def test_an_empty_store_path_is_refused_by_every_command(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("hello")
    runner = CliRunner()
    commands = [["ingest", str(docs), "--local"], ["search", "x"], ["status"], ["errors"], ["spaces"], ["runs"],
                ["maintain", "--local"], ["restore", "--to", "ingest-1"], ["spaces", "retire", "abcd"],
                ["reembed", "--space", "clip", "--model", "RN50", "--local"], ["serve", str(docs)], ["api"]]
    for command in commands:
        result = runner.invoke(app, [*command, "--store", ""], env={"COLUMNS": "200"})
        assert result.exit_code == 2 and result.exception is None or isinstance(result.exception, SystemExit), command
        assert "the store path is empty" in result.stderr, (command, result.stderr)
    assert sorted(os.listdir(docs)) == ["a.txt"]
    res = run(["status", "--store", ""])  # the real process, too
    assert res.returncode == 2 and "the store path is empty" in res.stderr and "Traceback" not in res.stderr


def test_unknown_environment_keys_and_bad_retention_are_refused(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    res = run(["status", "--store", str(store)], env={"OMNIVEC_STOER": str(tmp_path / "other")})
    assert res.returncode == 2 and "OMNIVEC_STOER" in res.stderr and "did you mean OMNIVEC_STORE?" in res.stderr
    for days in ("inf", "1e9", "nan"):
        res = run(["maintain", "--local", "--retention-days", days, "--store", str(store)])
        assert res.returncode == 2 and "--retention-days" in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert days == "nan" or "out of range: give 0 to 36500 days" in res.stderr  # nan: the option's own check
    assert os.listdir(store) == []  # refused before the store was locked
    res = run(["maintain", "--local", "--retention-days", "36500", "--store", str(store)])
    assert res.returncode == 0, res.stderr
