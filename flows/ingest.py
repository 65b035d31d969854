"""The `ingest` flow: discover -> plan -> batched decode+encode tasks -> commit -> tag -> report.

Run it from the CLI (`omnivec ingest PATH`), from Python (:func:`run_ingest_flow`), or as a
deployment. With no PREFECT_API_URL it runs on Prefect's temporary local API.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import PrefectFuture

import flows.prefect_env  # noqa: F401  (must precede the prefect import)
from flows import temporary_server
from flows.runners import as_is, runner_from_env, runner_kind, task_runner_for
from omnivec.config import Settings, load_settings
from omnivec.pipeline.batch import BatchResult
from omnivec.pipeline.commit import Committer
from omnivec.pipeline.report import RunReport
from omnivec.pipeline.run import batches, new_run, tables_of
from omnivec.pipeline.spaces import resolve_spaces
from omnivec.progress import reporter
from omnivec.store.lock import writer_lock
from omnivec.store.store import Store
from tasks.ingest import commit_task, embed_batch_task, finish_task, plan_task


def _run_name() -> str:
    return f"ingest-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


@flow(name="ingest", flow_run_name=_run_name, log_prints=False, validate_parameters=True,
      task_runner=runner_from_env())
def ingest_flow(sources: list[str], settings: dict[str, Any] | None = None,
                retry_errors: bool = False, pinned: list[str] | None = None) -> RunReport:
    """Ingest files under ``sources`` into the store named by ``settings`` (defaults, config
    file and OMNIVEC_* environment when None). ``pinned``: spaces whose model the caller chose;
    the others follow the store's default space of their name."""
    from prefect.context import FlowRunContext
    from prefect.runtime import flow_run

    logger = get_run_logger()
    if settings is not None:
        s = Settings.model_validate(settings)
        s._pinned = set(pinned or [])
    else:
        s = load_settings()
    _check_runner(s, logger, FlowRunContext.get())
    temporary_server.apply(logger)
    Store(s.store, create=True)
    with writer_lock(s.store, f"ingest flow {flow_run.get_name() or ''}", on_wait=logger.warning):
        s = resolve_spaces(s, Store(s.store, create=True))
        ctx = new_run(s, sources, run_name=flow_run.get_name() or None)
        discovery, states, plan = plan_task(ctx, retry_errors)
        committer = Committer(Store(s.store, create=True), tables_of(states), commit_every_s=s.commit_every_s)
        total = plan.total_work
        progress_id = cast(UUID, create_progress_artifact(0.0, key="ingest-progress",  # sync here
                                                          description=f"{total} files to read"))
        progress = reporter()
        progress.start(total, "ingest")
        done = 0
        shown = time.monotonic()
        window: list[PrefectFuture[BatchResult]] = []
        def drain(fut: PrefectFuture[BatchResult]) -> None:
            nonlocal done, shown
            result = fut.result()
            committer.add(result, flush=False)
            done += result.items.num_rows
            progress.advance(result.items.num_rows)
            if committer.due:
                commit_task(committer)
            if total and time.monotonic() - shown >= PROGRESS_EVERY_S:  # each update is an API call
                update_progress_artifact(progress_id, 100.0 * done / total)
                shown = time.monotonic()

        try:
            for modality, number, items in batches(plan, s):
                task = embed_batch_task.with_options(task_run_name=f"embed-{modality}-{number:04d}")
                window.append(task.submit(as_is(items), as_is(s), as_is(states), ctx.run_id))
                if len(window) > s.workers:
                    drain(window.pop(0))
            for fut in window:
                drain(fut)
            if committer.pending_items:
                commit_task(committer)
        finally:
            progress.stop()
        report = finish_task(ctx, committer, as_is(discovery), as_is(plan), as_is(states))
        update_progress_artifact(progress_id, 100.0)
        create_markdown_artifact(report.to_markdown(), key="ingest-summary",
                                 description=f"omnivec ingest {ctx.run_name}")
        rows = report.rows()
        if rows:
            create_table_artifact(rows, key="ingest-modalities", description="per-modality counts")
        if report.failed:
            create_table_artifact(_error_rows(s.store, ctx.run_id), key="ingest-errors",
                                  description=f"files that failed in {ctx.run_name} (first {ERROR_ROWS})")
        for space in report.drifted:
            logger.warning("drift canary: space %s min cosine %s over %s stored segments", space,
                           report.drift[space]["min_cosine"], report.drift[space]["segments"])
        for space, reason in sorted(report.canary_skipped.items()):
            logger.info("drift canary skipped for space %s: %s", space, reason)
        logger.info("embedded %d, failed %d, unchanged %d, deleted %d in %.1f s",
                    report.embedded, report.failed,
                    sum(c["unchanged"] for c in report.counts.values()),
                    sum(c["deleted"] for c in report.counts.values()), report.wall_seconds)
        return report


ERROR_ROWS = 200
PROGRESS_EVERY_S = 2.0  # the progress artifact is updated at most this often (and at the end)


def _error_rows(store_uri: str, run_id: str) -> list[dict[str, Any]]:
    """The errors this run recorded, for the dashboard (`omnivec errors` lists them all)."""
    from omnivec.store.store import sql_in

    tbl = Store(store_uri).table("errors")
    if tbl is None:
        return []
    cols = ["uri", "modality", "space", "stage", "error_class", "message", "attempts"]
    rows = tbl.search().where(sql_in("run_id", [run_id])).select(cols).limit(ERROR_ROWS).to_list()
    return [{c: (r[c][:300] if c == "message" and r[c] else r[c]) for c in cols} for r in rows]


def _check_runner(s: Settings, logger: Any, ctx: Any) -> None:
    """Say which runner the batches use, and when it is not the one the settings ask for (a deployment
    takes its runner from OMNIVEC_TASK_RUNNER in the environment of the process that runs it)."""
    have = runner_kind(getattr(ctx, "task_runner", None))
    if have != s.task_runner:
        logger.warning("settings ask for task_runner=%s but this flow run uses %s: set OMNIVEC_TASK_RUNNER=%s "
                       "(and OMNIVEC_DASK_ADDRESS) in the environment of the process that runs the flow",
                       s.task_runner, have, s.task_runner)
    else:
        logger.info("batches run on %s%s", have, f" at {s.dask_address}" if have == "dask" and s.dask_address else "")


def run_ingest_flow(sources: list[str], settings: Settings, retry_errors: bool = False) -> RunReport:
    """Run the flow on the task runner ``settings`` ask for (threads, or Dask workers)."""
    runner = task_runner_for(settings)
    with temporary_server.for_flow_runs():
        return ingest_flow.with_options(task_runner=runner)(
            sources=[str(p) for p in sources], settings=settings.model_dump(), retry_errors=retry_errors,
            pinned=sorted(settings._pinned),
        )
