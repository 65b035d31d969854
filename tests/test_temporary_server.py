"""The temporary Prefect API server a flow run starts beside the ingest runs at idle CPU priority, and
dies with the command that started it, however that command dies."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flows import temporary_server
from omnivec.errors import ConfigError
from omnivec.store import Store

pytestmark = [pytest.mark.flow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE and /proc are Linux")]


def _policies() -> dict[int, set[int]]:
    """{server pid: the scheduling classes of its threads}"""
    out = {}
    for pid in temporary_server.temporary_servers():
        out[pid] = {os.sched_getscheduler(int(t)) for t in os.listdir(f"/proc/{pid}/task")}
    return out


def test_a_flow_run_moves_the_temporary_server_to_idle_priority_and_back(prefect_harness, settings, tmp_path,
                                                                          monkeypatch):
    from flows.ingest import ingest_flow
    from flows.maintain import maintain_flow

    servers = temporary_server.temporary_servers()
    assert len(servers) == 1  # the session's harness server, a child of this process
    pid = servers[0]
    assert b"prefect" in Path(f"/proc/{pid}/cmdline").read_bytes()

    Store(settings.store, create=True)
    monkeypatch.setenv(temporary_server.ENV, "normal")
    maintain_flow(store=settings.store)
    assert _policies() == {pid: {os.SCHED_OTHER}}

    monkeypatch.delenv(temporary_server.ENV)  # the default
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("a red circle on a white page")
    state = ingest_flow(sources=[str(docs)], settings=settings.model_dump(), return_state=True)
    assert state.is_completed(), state
    assert state.result().embedded == 1
    assert _policies() == {pid: {os.SCHED_IDLE}}
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # this process (the ingest) is untouched

    monkeypatch.setenv(temporary_server.ENV, "normal")  # put back: the other tests' server runs as before
    assert temporary_server.set_priority()[pid] > 0
    assert _policies() == {pid: {os.SCHED_OTHER}}


def test_no_temporary_server_no_change_and_a_bad_value_is_refused(monkeypatch):
    monkeypatch.setattr(temporary_server, "temporary_servers", lambda: [])
    assert temporary_server.set_priority("idle") == {}
    monkeypatch.setenv(temporary_server.ENV, "lowest")
    with pytest.raises(ConfigError, match="idle, normal"):
        temporary_server.wanted()


def test_flow_runs_against_a_temporary_server_send_no_heartbeats(prefect_harness, monkeypatch):
    """Its server dies with this process, so heartbeats could never mark a crashed run; stopping the
    heartbeat thread cost every flow run ~0.5 s."""
    from prefect import flow
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    @flow
    def heartbeat_setting() -> int | None:
        return get_current_settings().flows.heartbeat_frequency

    default = heartbeat_setting()
    assert default is not None  # Prefect's default sends them
    with temporary_server.for_flow_runs():
        assert heartbeat_setting() is None  # the harness server is a child of this process
    assert heartbeat_setting() == default
    monkeypatch.setattr(temporary_server, "temporary_servers", lambda: [])
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}), temporary_server.for_flow_runs():
        assert get_current_settings().flows.heartbeat_frequency == default  # a server that outlives us


# ----------------------------------------------------------------------------------------------
# the temporary server dies with the command that started it
# ----------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _mine(home: Path) -> list[int]:
    """Live processes (not zombies) whose environment names this test's PREFECT_HOME."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"PREFECT_HOME={home}".encode() in (entry / "environ").read_bytes().split(b"\0") \
                    and " Z " not in (entry / "stat").read_text().split(")", 1)[1][:4]:
                out.append(int(entry.name))
        except OSError:
            continue
    return out


def _cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # Prefect starts a temporary server
    env.update({"PREFECT_HOME": str(home), "OMNIVEC_SPACES__TEXT__ENABLED": "false",
                "OMNIVEC_SPACES__CLAP__ENABLED": "false", "PYTHONPATH": str(ROOT)})
    return env


def _listening_server(cli: subprocess.Popen[bytes], timeout: float = 180) -> tuple[int, int]:
    """(pid, port) of the CLI's temporary server once it accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert cli.poll() is None, "the command ended before its server listened"
        for pid in temporary_server.descendants(cli.pid):
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            except OSError:
                continue
            if temporary_server.MARK in args:
                port = int(args[args.index("--port") + 1])
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    return pid, port
        time.sleep(0.2)
    raise AssertionError("no temporary server listened")


def _wait_gone(pids: Callable[[], list[int]], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := pids()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_a_killed_flow_takes_its_temporary_server_with_it_and_a_normal_run_leaves_nothing(tmp_path, tiny_clip_dir):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(40):
        (docs / f"note-{i}.txt").write_text(f"note {i} about topic {i % 7}")
    cmd = [sys.executable, "-m", "flows.cli", "ingest", str(docs), "--model", f"local-dir:{tiny_clip_dir}",
           "--batch-size", "1"]

    home = tmp_path / "normal"
    done = subprocess.run([*cmd, "--store", str(tmp_path / "s1")], env=_cli_env(home), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "embedded 40" in done.stdout
    assert _wait_gone(lambda: _mine(home), 10) == []  # no server, no watchdog

    home = tmp_path / "killed"
    cli = subprocess.Popen([*cmd, "--store", str(tmp_path / "s2")], env=_cli_env(home), cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        server, port = _listening_server(cli)
        pidfd = os.pidfd_open(server)  # readable once that very process has ended (a reused pid is not it)
        before = _mine(home)
        assert {cli.pid, server} < set(before), before  # the command, its server and the watchdog
        os.kill(cli.pid, signal.SIGKILL)  # the command only, not its process group
        cli.wait()
        assert select.select([pidfd], [], [], 20)[0], "the temporary server outlived the killed command"
        os.close(pidfd)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        assert _wait_gone(lambda: _mine(home), 10) == []
    finally:
        if cli.poll() is None:
            cli.kill()
        for pid in _mine(home):  # a failed run: leave nothing behind
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _stand_in() -> subprocess.Popen[bytes]:
    """A process whose command line carries the server's mark (a sleeping Python), once it has it."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", temporary_server.MARK])
    while temporary_server.MARK.encode() not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
        time.sleep(0.01)  # between fork and exec it still has ours
    return proc


def test_only_a_temporary_server_is_watched_and_only_once(monkeypatch):
    monkeypatch.setattr(temporary_server, "_watched", {})
    plain = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    server = _stand_in()
    try:
        assert temporary_server.watch(plain.pid) is False  # not a temporary server: never watched
        assert temporary_server.watch(server.pid) is True
        assert temporary_server.watch(server.pid) is False  # one watchdog per server
        write_end, dog = temporary_server._watched[server.pid]
        time.sleep(0.5)
        assert server.poll() is None and dog.poll() is None  # not before this process is gone
        os.close(write_end)  # what the kernel does when this process dies, however it dies
        assert server.wait(timeout=20) == -signal.SIGTERM
        assert dog.wait(timeout=10) == 0
        assert plain.poll() is None
    finally:
        for p in (plain, server):
            p.kill()
            p.wait()


# a command that starts a stand-in server, watches it, forks a child that outlives it, and waits
_FORKING_COMMAND = """
import os, subprocess, sys, time
from flows import temporary_server
server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", temporary_server.MARK])
assert temporary_server.watch(server.pid, verified=True)
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
print(server.pid, child, flush=True)
time.sleep(120)
"""


def test_a_forked_child_does_not_keep_a_killed_commands_server_alive(tmp_path):
    command = subprocess.Popen([sys.executable, "-c", _FORKING_COMMAND], cwd=ROOT, stdout=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert command.stdout is not None
    server, child = (int(x) for x in command.stdout.readline().split())
    pidfd = os.pidfd_open(server)
    try:
        time.sleep(0.5)
        assert not select.select([pidfd], [], [], 0)[0]  # the command lives: so does its server
        os.kill(command.pid, signal.SIGKILL)
        command.wait()
        assert select.select([pidfd], [], [], 20)[0], "the forked child kept the server alive"
        os.kill(child, 0)  # the child is still there: it simply holds no write end
    finally:
        os.close(pidfd)
        for pid in (server, child):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def test_the_watchdog_leaves_when_the_server_ends_first(monkeypatch):
    monkeypatch.setattr(temporary_server, "_watched", {})
    server = _stand_in()
    assert temporary_server.watch(server.pid, verified=True)
    write_end, dog = temporary_server._watched[server.pid]
    server.terminate()  # the command stopped its server (a normal exit)
    server.wait()
    assert dog.wait(timeout=10) == 0
    os.close(write_end)


def test_against_a_server_of_ones_own_nothing_is_watched_or_imported(monkeypatch):
    """Prefect starts no temporary server then, and its server module costs seconds to import."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delitem(sys.modules, temporary_server.SERVER_MODULE, raising=False)
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        temporary_server.install()
    assert temporary_server.SERVER_MODULE not in sys.modules
