"""`omnivec api` as a user runs it: a real process on 127.0.0.1, its output, its exit codes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_settings
from fixtures.served import get

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> tuple[Path, list[str]]:
    from omnivec.pipeline.run import ingest
    from omnivec.sample import build_sample_corpus

    root = tmp_path_factory.mktemp("apicli")
    settings = make_settings(root / "store", tiny_clip_dir)
    assert ingest([str(build_sample_corpus(root / "corpus", audio=False))], settings).failed == 0
    return root / "store", ["--store", str(root / "store"), "--model", f"local-dir:{tiny_clip_dir}"]


def _api(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMNIVEC_SPACES__CLAP__ENABLED": "false",
           "OMNIVEC_SPACES__TEXT__ENABLED": "false"}
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "api", "--log-level", "warning", *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_busy_port_is_one_line_and_exit_2_before_anything_says_it_serves(store):
    _, flags = store
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = _api([*flags, "--port", str(port)])
        out, errs = proc.communicate(timeout=120)
    assert proc.returncode == 2, errs
    assert f"port {port} on 127.0.0.1 is in use; pick another with --port" in errs
    assert "omnivec api on" not in errs and "Traceback" not in errs and "loaded in" not in errs


def test_it_listens_before_it_says_so_with_the_precision_and_threads_asked_for(store):
    _, flags = store
    port = _free_port()
    proc = _api([*flags, "--port", str(port), "--precision", "fp32", "--threads", "1"])
    try:
        lines = []
        deadline = time.monotonic() + 120
        while not any(line.startswith("omnivec api on") for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, (proc.poll(), lines)
            lines.append(proc.stderr.readline().strip())  # type: ignore[union-attr]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # accepted at once: the socket listened before the line was printed
        warm = next(line for line in lines if line.startswith("space clip:"))
        assert "(fp32, 1 torch thread)" in warm, lines
        status, _, body = get(port, "/search?q=a+red+circle&k=2")
        assert status == 200 and body.count(b'"uri"') == 2
    finally:
        proc.send_signal(signal.SIGINT)
        _, errs = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in errs, errs  # Ctrl+C, as a shell reports it


def test_precision_reaches_the_encoders(store):
    _, flags = store
    port = _free_port()
    proc = _api([*flags, "--port", str(port), "--precision", "int8", "--threads", "2"])
    try:
        deadline = time.monotonic() + 120
        lines: list[str] = []
        while not any(line.startswith("omnivec api on") for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, (proc.poll(), lines)
            lines.append(proc.stderr.readline().strip())  # type: ignore[union-attr]
        assert any(line.startswith("space clip:") and "(int8, 2 torch threads)" in line for line in lines), lines
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    bad = _api([*flags, "--port", str(port), "--precision", "fp64"])
    _, errs = bad.communicate(timeout=120)
    assert bad.returncode == 2 and "precision" in errs and "Traceback" not in errs
