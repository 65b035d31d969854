"""Tasks of the ingest flow. Each wraps one core step; a batch task covers a whole batch.

Tasks receive settings, work items and paths, never a loaded model or an open table; models
come from the per-process encoder cache. Caching is off: every input is cheap to recompute and
some (plans, batches) are large to hash.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

import flows.prefect_env  # noqa: F401  (must precede the prefect import)
from omnivec.config import Settings
from omnivec.errors import OmnivecError
from omnivec.pipeline.batch import BatchResult, process_batch
from omnivec.pipeline.commit import Committer
from omnivec.pipeline.plan import Plan, WorkItem
from omnivec.pipeline.report import RunReport
from omnivec.pipeline.run import RunContext, finish, prepare
from omnivec.pipeline.spaces import SpaceState
from omnivec.sources import Discovery


@task(name="discover-and-plan", cache_policy=NO_CACHE, retries=0)
def plan_task(ctx: RunContext, retry_errors: bool = False) -> tuple[Discovery, dict[str, SpaceState], Plan]:
    """Walk the sources, load each space's model, and compare with the store."""
    logger = get_run_logger()
    discovery, states, plan = prepare(ctx, retry_errors)
    for name, st in states.items():
        if st.unavailable:
            logger.warning("space %s unavailable; its items stay pending:\n%s", name, st.unavailable)
        else:
            logger.info("space %s: space_id %s, dimension %s", name, st.space_id, st.dimension)
    for modality in sorted(plan.work):
        logger.info("%s: %d to read (%s), %d unchanged", modality, len(plan.work[modality]),
                    ", ".join(f"{k} {v}" for k, v in sorted(
                        {kind: plan.count(kind)[modality] for kind in ("new", "changed", "resumed")}.items())),
                    plan.unchanged[modality])
    logger.info("%d files found, %d skipped, %d deleted", len(discovery.files), discovery.skipped,
                len(plan.deleted))
    return discovery, states, plan


@task(name="embed-batch", cache_policy=NO_CACHE, retries=0)
def embed_batch_task(items: list[WorkItem], settings: Settings, states: dict[str, SpaceState],
                     run_id: str) -> BatchResult:
    """Read, hash, decode and embed one batch; failures come back as error rows."""
    result = process_batch(items, settings, states, run_id)
    if result.counts["failed"]:
        get_run_logger().warning("%d of %d %s files failed (see the errors table)",
                                 result.counts["failed"], len(items), result.modality)
    return result


def transient_io(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a commit on I/O trouble (object storage, network file systems), never on anything else:
    bad files never raise here (they are `errors` rows), and a logic error would fail every time."""
    try:
        state.result()
    except (OSError, TimeoutError) as exc:
        return not isinstance(exc, OmnivecError)
    except Exception:  # noqa: BLE001 - not transient
        return False
    return False


@task(name="commit", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[1, 4, 16],
      retry_condition_fn=transient_io)
def commit_task(committer: Committer) -> int:
    """Write the buffered batch results in one merge per table (the only writer of the run); a flush
    that fails part-way is safe to repeat, so transient I/O errors are retried with backoff."""
    pending = committer.pending_items
    committer.flush()
    return pending


@task(name="finish-and-tag", cache_policy=NO_CACHE, retries=0)
def finish_task(ctx: RunContext, committer: Committer, discovery: Discovery, plan: Plan,
                states: dict[str, SpaceState]) -> RunReport:
    """Remove deleted files, write the run row, and tag every table's version with the run name."""
    return finish(ctx, committer, discovery, plan, states)
