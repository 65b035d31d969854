"""Task runners of the flows: threads of the flow process (the default), or Dask workers.

With ``task_runner = "dask"`` the decode+encode batches run on Dask workers: a local cluster of
``workers`` processes, or an existing cluster at ``dask_address``. Each worker process loads a
space's model once (the encoder cache is per process) and keeps it for every later batch. Planning,
commits and tagging stay in the flow process: one writer per store.

A deployment's flow run picks its runner when the flow module is imported, from
``OMNIVEC_TASK_RUNNER`` and ``OMNIVEC_DASK_ADDRESS`` (the same variables the settings read).
"""

from __future__ import annotations

import os
from typing import Any

import flows.prefect_env  # noqa: F401  (must precede the prefect import)
from omnivec.config import Settings
from omnivec.errors import ConfigError


def api_url_for_workers() -> str | None:
    """The Prefect API the flow reports to, so that local Dask workers report their task runs there too
    (without it each worker process would start a temporary API of its own, invisible to the dashboard)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url:
        return str(url)
    from prefect.settings import PREFECT_SERVER_ALLOW_EPHEMERAL_MODE

    if not PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value():
        return None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the process-wide temporary API the flow will use as well
    server.start()
    return server.api_url


def dask_runner(workers: int, address: str | None = None, api_url: str | None = None) -> Any:
    """A DaskTaskRunner joining ``address``, or starting a local cluster of ``workers`` processes
    with one thread each (torch gets an even share of the cores). Workers of a cluster at ``address``
    must have PREFECT_API_URL set to the server the flow reports to."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ConfigError("task_runner = dask needs prefect-dask and distributed",
                          ["install them: .venv/bin/pip install prefect-dask 'dask[distributed]'",
                           "or run on threads: --task-runner threads"]) from None
    if address:
        return DaskTaskRunner(address=address)
    threads = max(1, (os.cpu_count() or 1) // workers)
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None, "env": env})


def task_runner_for(settings: Settings) -> Any:
    """The runner ``settings`` ask for."""
    if settings.task_runner == "dask":
        api_url = None if settings.dask_address else api_url_for_workers()
        return dask_runner(settings.workers, settings.dask_address, api_url)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=settings.workers)


def runner_from_env(default_workers: int = 2) -> Any:
    """The runner a deployment's flow run uses: from OMNIVEC_TASK_RUNNER / OMNIVEC_DASK_ADDRESS /
    OMNIVEC_WORKERS, else threads."""
    kind = os.environ.get("OMNIVEC_TASK_RUNNER", "threads").strip().lower() or "threads"
    try:
        workers = max(1, int(os.environ.get("OMNIVEC_WORKERS", default_workers)))
    except ValueError:
        workers = default_workers
    if kind == "dask":
        return dask_runner(workers, os.environ.get("OMNIVEC_DASK_ADDRESS") or None,
                           os.environ.get("PREFECT_API_URL") or None)
    if kind != "threads":
        raise ConfigError(f"OMNIVEC_TASK_RUNNER={kind!r} is not a task runner", ["use threads or dask"])
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=workers)


def runner_kind(runner: Any) -> str:
    return "dask" if type(runner).__name__ == "DaskTaskRunner" else "threads"


def as_is(value: Any) -> Any:
    """A task parameter marked so the thread runner does not walk it looking for futures (Prefect visits
    every element of a collection; ~10 ms per batch of work items). prefect-dask hands a marked value
    to the task unopened, so on Dask it is passed plain (it is pickled to the worker anyway)."""
    from prefect.context import FlowRunContext
    from prefect.utilities.annotations import quote

    ctx = FlowRunContext.get()
    return quote(value) if runner_kind(getattr(ctx, "task_runner", None)) == "threads" else value
