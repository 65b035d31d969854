"""CPU priority of the temporary Prefect API server that runs beside the ingest.

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
"""

from __future__ import annotations

import contextlib
import os
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
    """Called at the start of each flow run: set the priority and say what changed."""
    policy = wanted()
    for pid, changed in set_priority(policy).items():
        if changed:
            logger.info("temporary Prefect server (pid %d): %d threads moved to %s priority (%s)",  # type: ignore[attr-defined]
                        pid, changed, policy, ENV)
