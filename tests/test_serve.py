"""`omnivec serve` against a real `prefect server start` on 127.0.0.1: deploy with schedules,
trigger a run, the served process executes it, the store changes, the artifacts are readable."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from omnivec.store import Store

pytestmark = pytest.mark.flow
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_serve_runs_a_scheduled_deployment_on_a_real_server(tmp_path, corpus, tiny_clip_dir):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    base_env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    base_env |= {"PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    prefect_bin = str(Path(sys.executable).parent / "prefect")
    server = subprocess.Popen([prefect_bin, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=base_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    served = None
    try:
        http = httpx.Client(base_url=api, timeout=10)
        _wait(lambda: http.get("/health").json() is True, 180, "the Prefect server")
        store = tmp_path / "store"
        env = base_env | {"PREFECT_API_URL": api, "PREFECT_RUNNER_POLL_FREQUENCY": "2",
                          "OMNIVEC_SPACES__TEXT__ENABLED": "false", "OMNIVEC_SPACES__CLAP__ENABLED": "false"}
        served = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve", str(corpus), "--store", str(store),
             "--model", f"local-dir:{tiny_clip_dir}", "--cron", "0 0 1 1 *"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)

        def deployment() -> dict | None:
            found = http.post("/deployments/filter", json={"deployments": {"name": {"any_": ["ingest"]}}}).json()
            return found[0] if found else None

        _wait(deployment, 180, "the ingest deployment")
        schedules = _wait(lambda: http.get(f"/deployments/{deployment()['id']}/schedules").json(), 60,
                          "the ingest deployment's schedule")  # registered right after the deployment
        assert [s["schedule"]["cron"] for s in schedules] == ["0 0 1 1 *"] and schedules[0]["active"]
        names = _wait(lambda: {"ingest", "maintain", "reembed"} <= (
            found := {d["name"] for d in http.post("/deployments/filter", json={}).json()}) and found, 60,
            "all three deployments")
        assert {"ingest", "maintain", "reembed"} <= names
        attempts: list[str] = []

        def create_run() -> dict | None:
            current = deployment()  # looked up again: the served process may still be re-registering it
            if current is None:
                return None
            resp = http.post(f"/deployments/{current['id']}/create_flow_run", json={})
            if resp.status_code >= 300:
                attempts.append(f"{resp.status_code}: {resp.text[:300]}")  # e.g. while serve is still registering
                return None
            return resp.json()

        try:
            run = _wait(create_run, 60, "a flow run of the ingest deployment")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; responses: {attempts}") from None

        def finished() -> dict | None:
            state = http.get(f"/flow_runs/{run['id']}").json()["state"]
            return state if state and state["type"] in ("COMPLETED", "FAILED", "CRASHED") else None

        state = _wait(finished, 240, "the triggered ingest run")
        assert state["type"] == "COMPLETED", state
        assert Store(str(store)).count("items") == 24
        arts = http.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}).json()
        assert {"ingest-summary", "ingest-modalities"} <= {a["key"] for a in arts}
    finally:
        if served is not None:
            _stop(served)
        _stop(server)


def test_prefect_yaml_parses_and_points_at_real_flows():
    import importlib

    import yaml

    spec = yaml.safe_load((ROOT / "deploy" / "prefect.yaml").read_text())
    names = {d["name"]: d for d in spec["deployments"]}
    assert set(names) == {"ingest", "maintain", "reembed"}
    for d in names.values():
        path, _, func = d["entrypoint"].partition(":")
        assert (ROOT / path).is_file(), path
        module = importlib.import_module(path[:-3].replace("/", "."))
        flow = getattr(module, func)
        assert flow.name == d["name"]  # the flow the deployment names exists under that name
        assert d["work_pool"]["name"] == "omnivec"
        params = set(flow.parameters.properties)
        assert set(d.get("parameters", {})) <= params, (d["name"], params)
    assert [s["cron"] for s in names["ingest"]["schedules"]] == ["*/30 * * * *"]
    assert "schedules" not in names["reembed"]  # manual
