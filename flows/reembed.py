"""The `reembed` flow: every stored item of a space's modalities into a new space (model).

Batches run as the same `embed-<modality>-<n>` tasks the ingest flow uses; each batch is committed
as it completes, so a killed reembed resumes where it stopped.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

import flows.prefect_env  # noqa: F401  (must precede the prefect import)
from flows import temporary_server
from flows.ingest import PROGRESS_EVERY_S
from flows.runners import as_is, runner_from_env, task_runner_for
from omnivec.config import Settings, load_settings
from omnivec.pipeline.commit import Committer
from omnivec.pipeline.reembed import (
    ReembedPlan,
    drop_changed,
    plan_reembed,
    reembed_batches,
    summary,
    target_settings,
)
from omnivec.pipeline.run import new_run
from omnivec.progress import reporter
from omnivec.store.history import record_run
from omnivec.store.lock import writer_lock
from omnivec.store.store import Store
from tasks.ingest import commit_task, embed_batch_task


@task(name="plan-reembed", cache_policy=NO_CACHE, retries=0)
def plan_reembed_task(settings: Settings, space: str) -> ReembedPlan:
    """Load the new model, register its space, list the stored items it still lacks."""
    plan = plan_reembed(settings, space)
    get_run_logger().info("space %s -> new space_id %s: %d items to embed, %d already done", space,
                          plan.target.space_id, len(plan.work), plan.already)
    return plan


def _run_name(parameters: dict[str, Any] | None = None) -> str:
    return f"reembed-{datetime.now(UTC):%Y%m%d-%H%M%S}"


@flow(name="reembed", flow_run_name=_run_name, log_prints=False, task_runner=runner_from_env())
def reembed_flow(space: str, model: str, pretrained: str | None = None,
                 settings: dict[str, Any] | None = None, promote: bool = False) -> dict[str, Any]:
    """Re-embed the stored items of ``space`` with ``model``/``pretrained`` into a new space;
    ``promote`` makes it the default of its name once complete (the old stays, for rollback)."""
    from prefect.runtime import flow_run

    s = Settings.model_validate(settings) if settings is not None else load_settings()
    temporary_server.apply(get_run_logger())
    with writer_lock(Store(s.store).uri, f"reembed {space}", on_wait=get_run_logger().warning):
        target = target_settings(s, space, model, pretrained)
        plan = plan_reembed_task(target, space)
        assert plan.target.table is not None
        ctx = new_run(target, [], run_name=flow_run.get_name() or None)
        committer = Committer(Store(s.store), {space: plan.target.table}, write_items=False)
        total = len(plan.work)
        progress_id = cast(UUID, create_progress_artifact(0.0, key="reembed-progress",  # sync here
                                                          description=f"{total} items"))
        bar = reporter()
        bar.start(total, f"reembed {space}")
        done = 0
        shown = time.monotonic()
        window = []
        try:
            for modality, number, items in reembed_batches(plan, target.space_batch_size(space)):
                task_ = embed_batch_task.with_options(task_run_name=f"embed-{modality}-{number:04d}")
                window.append((task_.submit(as_is(items), as_is(target), as_is({space: plan.target}), ctx.run_id),
                               items))
                if len(window) > s.workers:
                    fut, batch = window.pop(0)
                    result = drop_changed(fut.result(), batch, space, ctx.run_id)
                    committer.add(result, flush=False)
                    done += commit_task(committer)
                    bar.advance(result.items.num_rows)
                    if time.monotonic() - shown >= PROGRESS_EVERY_S:  # each update is an API call
                        update_progress_artifact(progress_id, 100.0 * done / max(total, 1))
                        shown = time.monotonic()
            for fut, batch in window:
                result = drop_changed(fut.result(), batch, space, ctx.run_id)
                committer.add(result, flush=False)
                done += commit_task(committer)
                bar.advance(result.items.num_rows)
        finally:
            bar.stop()
        update_progress_artifact(progress_id, 100.0)
        out = summary(plan, committer, 0.0)
        if promote:
            committer.store.promote(out["space_id"])
            get_run_logger().info("space %s: %s is now the default (rollback: omnivec spaces rollback %s)",
                                  space, out["space_id"], space)
        record_run(committer.store, ctx.run_id, ctx.run_name, ctx.started_at, "reembed", [], out["counts"])
        create_markdown_artifact(
            f"# omnivec reembed `{space}`\n\nNew space_id `{out['space_id']}` (table `{out['table']}`): "
            f"{out['to_embed']} items embedded this run, {out['already_embedded']} already done, "
            f"{out['failed']} failed (see the errors table). The old space is unchanged.", key="reembed-summary")
        return out | {"run_name": ctx.run_name, "promoted": promote}


def run_reembed_flow(settings: Settings, space: str, model: str, pretrained: str | None = None,
                     promote: bool = False) -> dict[str, Any]:
    runner = task_runner_for(settings)
    with temporary_server.for_flow_runs():
        return reembed_flow.with_options(task_runner=runner)(space=space, model=model, pretrained=pretrained,
                                                             settings=settings.model_dump(), promote=promote)
