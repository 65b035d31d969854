"""The temporary Prefect API server that runs beside the ingest: its CPU priority, and its end with the command.

With no ``PREFECT_API_URL``, Prefect starts a temporary API server as a child process of the command
(``prefect_test_harness`` does the same). It shares the machine's cores with the model: ~20 ms of CPU
per second even when idle, and ~20 ms more for every task run it records. At normal priority that
CPU is taken from torch's threads while they keep every core busy, and a parallel region waits for
its slowest thread, so the forward pass loses more time than the server uses (ViT-B-32 on 2 cores:
the flow's median extra wall time over the core pipeline was 2.6% with the server at normal
priority and 0.3% with it at idle priority, the two alternating in one process over 6 rounds).

Each flow run therefore moves every thread of that child server to ``SCHED_IDLE`` (Linux): it then
runs on CPU the ingest leaves free (between batches, while files are read and decoded, during
commits), and the flow's calls to it still get answers (an idle-class thread is not starved, it
gets a small share). Threads the server starts later inherit the class. A server that is not a
child of this process (``prefect server start``, Prefect Cloud) is left alone; for a server on
the same machine, ``chrt --idle 0 prefect server start`` does the same.

``OMNIVEC_TEMPORARY_SERVER=normal`` keeps (or puts back) normal priority.

Flow runs that omnivec starts against such a server (:func:`for_flow_runs`) also send no heartbeats.
Prefect's heartbeats let a server that outlives a process mark its crashed runs; a temporary server
dies with the process, so it can never use them. And the heartbeat thread sleeps in 1 s steps,
so stopping it held up the end of every flow run by 0.5 s on average (0.67 s measured).

**The server dies with the command.** Prefect stops its temporary server at a normal exit, but a
command killed by a signal (SIGKILL, an unhandled SIGTERM or SIGHUP) leaves it running, reparented to
init (~250 MB, still listening). So each such server gets a watchdog (:func:`watch`) as soon as it
is started: a tiny process (this file run as a script, standard library only) that holds the read
end of a pipe whose only write end this process holds (close-on-exec, and closed in forked children).
However this process ends, the kernel closes that end; the watchdog reads EOF and ends the server
(SIGTERM, SIGKILL after 5 s). It signals through a pidfd opened while the server was still our
unreaped child, so a reused pid is never signalled, and it exits on its own once the server is
gone. It runs in its own session, so a signal to the command's process group does not end it first.
(``PR_SET_PDEATHSIG`` would not do: it fires when the *thread* that started the server exits.)
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ENV = "OMNIVEC_TEMPORARY_SERVER"
MARK = "prefect.server.api.server:create_app"  # in the command line of Prefect's temporary server


def wanted() -> str:
    from omnivec.config import env

    return str(env(ENV))


def temporary_servers() -> list[int]:
    """Process ids of Prefect API servers that are children (or grandchildren) of this process."""
    found = []
    for pid in descendants(os.getpid()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if MARK in cmdline:
            found.append(pid)
    return found


def set_priority(policy: str | None = None) -> dict[int, int]:
    """Put every thread of each temporary server in ``policy`` (``idle`` or ``normal``; default from
    the environment). Returns {server pid: threads changed}; empty off Linux or with no such server."""
    policy = policy or wanted()
    if not hasattr(os, "sched_setscheduler"):
        return {}
    target = os.SCHED_IDLE if policy == "idle" else os.SCHED_OTHER
    done: dict[int, int] = {}
    for pid in temporary_servers():
        changed = 0
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                if os.sched_getscheduler(tid) != target:
                    os.sched_setscheduler(tid, target, os.sched_param(0))
                    changed += 1
            except (ProcessLookupError, PermissionError):  # a thread that ended; a class we may not leave
                continue
        done[pid] = changed
    return done


@contextlib.contextmanager
def for_flow_runs() -> Iterator[None]:
    """Around a flow call: no heartbeats when its API is (or will be) a temporary server of this process."""
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    install()
    if PREFECT_API_URL.value() and not temporary_servers():  # a server that outlives us: keep them
        yield
        return
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def descendants(pid: int) -> list[int]:
    """Process ids of every child of ``pid`` (started by any of its threads), and theirs, from /proc."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids: list[int] = []
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                kids += [int(k) for k in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
        except OSError:
            pass
        out += kids
        todo += kids
    return out


def apply(logger: object) -> None:
    """Called at the start of each flow run: watch the temporary servers (one started before
    :func:`install`, by a flow called directly), set their priority and say what changed."""
    install()
    for pid in temporary_servers():
        watch(pid)
    policy = wanted()
    for pid, changed in set_priority(policy).items():
        if changed:
            logger.info("temporary Prefect server (pid %d): %d threads moved to %s priority (%s)",  # type: ignore[attr-defined]
                        pid, changed, policy, ENV)


# ----------------------------------------------------------------------------------------------
# the watchdog: a temporary server dies with the command that started it
# ----------------------------------------------------------------------------------------------

GRACE_S = 5.0  # from SIGTERM to SIGKILL
SERVER_MODULE = "prefect.server.api.server"  # where Prefect's temporary server is started
# server pid -> (the write end of its watchdog's pipe, held here only; the watchdog, reaped when it ends)
_watched: dict[int, tuple[int, subprocess.Popen[bytes]]] = {}


def install() -> None:
    """Give every temporary server Prefect starts from now on a watchdog, as soon as it is started."""
    if not hasattr(os, "pidfd_open"):
        return
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value() and SERVER_MODULE not in sys.modules:
        return  # a server of the user's: Prefect starts none here (and that module takes seconds to import)
    from prefect.server.api.server import SubprocessASGIServer

    start = getattr(SubprocessASGIServer, "_run_uvicorn_command", None)
    if start is None or getattr(start, "_omnivec_watched", False):
        return

    def run_watched(self: SubprocessASGIServer) -> subprocess.Popen[bytes]:
        proc: subprocess.Popen[bytes] = start(self)
        watch(proc.pid, verified=True)  # our child, not yet reaped: its pid cannot be reused
        return proc

    run_watched._omnivec_watched = True  # type: ignore[attr-defined]
    SubprocessASGIServer._run_uvicorn_command = run_watched  # type: ignore[method-assign]


def watch(pid: int, verified: bool = False) -> bool:
    """Start a watchdog that ends temporary server ``pid`` once this process is gone. ``verified``:
    the caller knows ``pid`` is that server (else its command line must say so). Returns whether
    a watchdog was started (not off Linux, not twice, not for a process that is gone)."""
    if pid in _watched or not hasattr(os, "pidfd_open"):
        return False
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if not verified and not _is_server(pid):  # checked after the pidfd pins the process
            return False
        _forget_in_forks()
        read_end, write_end = os.pipe()  # both close-on-exec: no other program gets the write end
        try:
            script = str(Path(__file__).resolve())
            dog = subprocess.Popen([sys.executable, "-I", "-S", script, str(read_end), str(pidfd)],
                                   pass_fds=(read_end, pidfd), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError:
            os.close(write_end)
            return False
        finally:
            os.close(read_end)
    finally:
        os.close(pidfd)
    _watched[pid] = (write_end, dog)
    return True


def _is_server(pid: int) -> bool:
    try:
        return MARK.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


_fork_hook: list[bool] = []


def _forget_in_forks() -> None:
    if not _fork_hook:
        os.register_at_fork(after_in_child=_forget)
        _fork_hook.append(True)


def _forget() -> None:
    """In a forked child: drop the write ends, so that only the command itself keeps its servers."""
    for fd, _ in _watched.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _watched.clear()


def _watchdog(pipe_fd: int, pidfd: int, grace_s: float = GRACE_S) -> None:
    """Wait for EOF on ``pipe_fd`` (the command is gone), then end the server; return early if the
    server ends first."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    poller = select.poll()
    poller.register(pipe_fd, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    while True:
        ready = dict(poller.poll())
        if pidfd in ready:
            return  # the server ended (the command stopped it)
        if pipe_fd in ready and not os.read(pipe_fd, 64):
            break
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            signal.pidfd_send_signal(pidfd, sig)
        except ProcessLookupError:
            return
        if select.select([pidfd], [], [], grace_s)[0]:
            return


if __name__ == "__main__":
    _watchdog(int(sys.argv[1]), int(sys.argv[2]))
