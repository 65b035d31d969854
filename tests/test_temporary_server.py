"""The temporary Prefect API server a flow run starts beside the ingest runs at idle CPU priority."""

from __future__ import annotations

import os
import sys
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
