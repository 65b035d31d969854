"""An ingest run as plain functions: prepare -> batches -> process/commit -> finish.

The Prefect flow (flows/ingest.py) orchestrates exactly these steps as tasks; :func:`ingest`
composes them without Prefect, for notebooks and as the reference behaviour.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from omnivec.config import Settings
from omnivec.pipeline.assets import update_assets
from omnivec.pipeline.batch import BatchResult, process_batch
from omnivec.pipeline.canary import check_drift
from omnivec.pipeline.commit import Committer
from omnivec.pipeline.plan import Plan, WorkItem, make_plan
from omnivec.pipeline.report import RunReport
from omnivec.pipeline.spaces import SpaceState, identify_spaces, load_deferred, register_spaces, resolve_spaces
from omnivec.progress import reporter
from omnivec.sources import Discovery, discover, item_id_for, modality_for
from omnivec.store.coverage import remove_uncommitted
from omnivec.store.history import record_run, repair_run_tags
from omnivec.store.lock import writer_lock
from omnivec.store.schema import ERRORS
from omnivec.store.store import Store

log = logging.getLogger("omnivec")


@dataclass(slots=True)
class RunContext:
    run_id: str
    run_name: str
    started_at: datetime
    settings: Settings
    sources: list[str]
    t0: float = field(default_factory=time.perf_counter)


def new_run(settings: Settings, sources: Sequence[str], run_name: str | None = None) -> RunContext:
    now = datetime.now(UTC)
    run_id = secrets.token_hex(8)
    name = run_name or f"ingest-{now:%Y%m%d-%H%M%S}-{run_id[:4]}"
    return RunContext(run_id, name, now, settings, [str(s) for s in sources])


def prepare(ctx: RunContext, retry_errors: bool = False) -> tuple[Discovery, dict[str, SpaceState], Plan]:
    """Open the store, walk the sources, know each space's identity, plan the work, and load the models
    of the spaces that have files to embed.

    A space whose identity is known without its model (:func:`identify_spaces`) is loaded only when
    the plan holds files of a modality it takes; a run with nothing to embed there never loads it. If
    such a model then fails to load (or gives another identity), the run plans again with what the
    load said, so the outcome is the one an eager load would have given."""
    s = ctx.settings
    store = Store(s.store, create=True)
    store.remove_unfinished_tables()  # left by a run killed while creating a table
    repair_run_tags(store)  # a run killed while tagging: complete its tags before anything moves on
    remove_uncommitted(store)  # vectors a killed run wrote without their items rows
    discovery = discover(ctx.sources, s.include, s.exclude, s.include_hidden, s.follow_links)
    states, deferred = identify_spaces(s)
    plan = make_plan(discovery, store, states, retry_errors)
    while needed := {n for n in deferred if states[n].modalities & {m for m, w in plan.work.items() if w}}:
        loaded = load_deferred(states, needed, s)
        deferred -= needed
        changed = any((loaded[n].space_id, loaded[n].dimension) != (states[n].space_id, states[n].dimension)
                      for n in needed)
        states = loaded
        if not changed:
            break
        plan = make_plan(discovery, store, states, retry_errors)
    register_spaces(store, states, s)
    return discovery, states, plan


def batches(plan: Plan, settings: Settings) -> Iterator[tuple[str, int, list[WorkItem]]]:
    """(modality, batch number, items) in a stable order."""
    for modality in sorted(plan.work):
        items = plan.work[modality]
        size = max(settings.space_batch_size(n) for n in settings.enabled_spaces()) \
            if settings.enabled_spaces() else settings.batch_size
        for number, start in enumerate(range(0, len(items), size)):
            yield modality, number, items[start : start + size]


def tables_of(states: dict[str, SpaceState]) -> dict[str, str]:
    """space name -> the vector table this run writes for it (loaded spaces only)."""
    return {n: st.table for n, st in states.items() if st.table}


def finish(ctx: RunContext, committer: Committer, discovery: Discovery, plan: Plan,
           states: dict[str, SpaceState]) -> RunReport:
    """Flush, remove deleted files, record discovery problems, write the run row, tag versions."""
    store = committer.store
    committer.flush()
    vector_tables = [t for _, _, t in store.vector_tables()]
    committer.delete(plan.deleted, vector_tables)
    committer.drop_discovery_errors(plan.solved)
    now = datetime.now(UTC)
    if plan.problems:
        rows: list[dict[str, Any]] = [
            {"error_id": f"{item_id_for(uri)}:*", "item_id": item_id_for(uri), "uri": uri,
             "modality": modality_for(uri), "stage": "discover", "error_class": "OSError", "message": msg,
             "attempts": 1, "run_id": ctx.run_id, "created_at": now}
            for uri, msg in plan.problems]
        store.upsert("errors", pa.Table.from_pylist(rows, schema=ERRORS))
        for row in rows:
            committer.counts.setdefault(row["modality"] or "other", Counter())["failed"] += 1
    for modality, n in plan.unchanged.items():
        committer.counts.setdefault(modality, Counter())["unchanged"] += n
    update_assets(store, discovery, states, ctx.settings, ctx.run_id)
    written = {t for t, n in committer.written.items() if n and t in vector_tables}
    for table in sorted(vector_tables):  # also where a killed run wrote text but died before indexing it
        if table in written or plan.deleted or store.text_index_stale(table):
            store.refresh_text_index(table)
    report = RunReport(ctx.run_id, ctx.run_name, store.uri, committer.counts, committer.seconds,
                       unavailable={n: s.unavailable for n, s in states.items() if s.unavailable},
                       skipped=discovery.skipped, links_skipped=discovery.links_skipped)
    report.drift = check_drift(store, states, ctx.settings, written, discovery.inside)
    report.wall_seconds = time.perf_counter() - ctx.t0
    report.tagged = record_run(store, ctx.run_id, ctx.run_name, ctx.started_at, "completed", ctx.sources,
                               {m: dict(c) for m, c in report.counts.items()})
    report.errors_total = store.count("errors")
    return report


def ingest(sources: Sequence[str], settings: Settings, retry_errors: bool = False,
           run_name: str | None = None) -> RunReport:
    """Ingest without Prefect: batches decode+encode on ``settings.workers`` threads (model
    forwards are serialised per encoder, so decoding overlaps encoding), one writer commits.
    A second writer on the same store waits for this one (see :mod:`omnivec.store.lock`)."""
    Store(settings.store, create=True)
    with writer_lock(settings.store, f"ingest {run_name or ''}".strip(), on_wait=log.warning):
        settings = resolve_spaces(settings, Store(settings.store, create=True))
        ctx = new_run(settings, sources, run_name)
        discovery, states, plan = prepare(ctx, retry_errors)
        committer = Committer(Store(settings.store, create=True), tables_of(states),
                              commit_every_s=settings.commit_every_s)
        progress = reporter()
        progress.start(plan.total_work, "ingest")
        try:
            with ThreadPoolExecutor(max_workers=settings.workers) as pool:
                window: list[Future[BatchResult]] = []
                for _, _, items in batches(plan, settings):
                    window.append(pool.submit(process_batch, items, settings, states, ctx.run_id))
                    if len(window) > settings.workers:
                        _commit_one(window.pop(0), committer)
                for fut in window:
                    _commit_one(fut, committer)
        finally:
            progress.stop()
        return finish(ctx, committer, discovery, plan, states)


def _commit_one(fut: Future[BatchResult], committer: Committer) -> None:
    result = fut.result()
    committer.add(result)
    reporter().advance(result.items.num_rows)
