"""Re-embed every stored item of a space's modalities into a new space (a new model or weights).

Work comes from the `items` table (stored URIs), not from a walk. Items whose vectors the target
space already holds for their current content are skipped, so a killed reembed continues where it
stopped, without duplicates. Files that went missing become `errors` rows. The old space is left
untouched and stays searchable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from omnivec.config import Settings
from omnivec.errors import ConfigError, ModelUnavailableError
from omnivec.pipeline.plan import WorkItem
from omnivec.pipeline.spaces import SpaceState, load_spaces, register_spaces
from omnivec.store.coverage import remove_uncommitted
from omnivec.store.history import record_run
from omnivec.store.lock import writer_lock
from omnivec.store.store import Store


@dataclass(slots=True)
class ReembedPlan:
    space: str
    target: SpaceState
    work: list[WorkItem] = field(default_factory=list)
    already: int = 0  # items the target space already holds (a resumed reembed)


def target_settings(settings: Settings, space: str, model: str, pretrained: str | None) -> Settings:
    if space not in settings.spaces:
        raise ConfigError(f"space {space!r} is not configured; configured: {', '.join(settings.spaces)}")
    cfg = settings.spaces[space].model_copy(update={"model": model, "pretrained": pretrained, "enabled": True})
    return settings.model_copy(update={"spaces": {space: cfg}})


def plan_reembed(settings: Settings, space: str) -> ReembedPlan:
    """Load the target model (``settings`` from :func:`target_settings`), register its space and list
    the stored items it still lacks."""
    store = Store(settings.store)
    remove_uncommitted(store)  # left by a writer killed between its vector and its items writes
    state = load_spaces(settings)[space]
    if state.unavailable:
        raise ModelUnavailableError(state.unavailable)
    register_spaces(store, {space: state}, settings)
    assert state.space_id is not None
    done = store.embedded_hashes(space, state.space_id)
    plan = ReembedPlan(space, state)
    rows = store.read("items", ["item_id", "uri", "modality", "content_hash", "size", "mtime_ns", "status",
                                "first_run"]).to_pylist()
    for r in sorted(rows, key=lambda r: (r["modality"], r["uri"])):
        if r["modality"] not in state.modalities or r["status"] == "error":
            continue
        if r["content_hash"] is not None and done.get(r["item_id"]) == r["content_hash"]:
            plan.already += 1
            continue
        plan.work.append(WorkItem(r["uri"], r["item_id"], r["modality"], r["size"], r["mtime_ns"], (space,),
                                  r["content_hash"], (), r["first_run"], "reembed"))
    return plan


def reembed_batches(plan: ReembedPlan, batch_size: int) -> Iterator[tuple[str, int, list[WorkItem]]]:
    by_modality: dict[str, list[WorkItem]] = {}
    for w in plan.work:
        by_modality.setdefault(w.modality, []).append(w)
    for modality in sorted(by_modality):
        items = by_modality[modality]
        for number, start in enumerate(range(0, len(items), batch_size)):
            yield modality, number, items[start : start + batch_size]


def reembed(settings: Settings, space: str, model: str, pretrained: str | None = None,
            promote: bool = False) -> dict[str, Any]:
    """Re-embed without Prefect; returns a summary (space_id, counts, seconds). With ``promote``, the
    new space becomes the default of its name once every item has been processed."""
    from omnivec.pipeline.batch import process_batch
    from omnivec.pipeline.commit import Committer
    from omnivec.pipeline.run import new_run
    from omnivec.progress import reporter

    with writer_lock(Store(settings.store).uri, f"reembed {space}", on_wait=logging.getLogger("omnivec").warning):
        t0 = time.perf_counter()
        target = target_settings(settings, space, model, pretrained)
        plan = plan_reembed(target, space)
        assert plan.target.table is not None
        ctx = new_run(target, [], run_name=f"reembed-{space}-{datetime.now(UTC):%Y%m%d-%H%M%S}")
        committer = Committer(Store(settings.store), {space: plan.target.table}, flush_rows=target.batch_size,
                              write_items=False)
        progress = reporter()
        progress.start(len(plan.work), f"reembed {space}")
        try:
            for _, _, items in reembed_batches(plan, target.space_batch_size(space)):
                result = process_batch(items, target, {space: plan.target}, ctx.run_id)
                committer.add(result)
                committer.flush()  # every batch is durable: a kill loses at most the batch in flight
                progress.advance(len(items))
        finally:
            progress.stop()
        out = summary(plan, committer, time.perf_counter() - t0)
        if promote:
            committer.store.promote(out["space_id"])
        record_run(committer.store, ctx.run_id, ctx.run_name, ctx.started_at, "reembed", [], out["counts"])
        return out | {"run_name": ctx.run_name, "promoted": promote}


def summary(plan: ReembedPlan, committer: Any, seconds: float) -> dict[str, Any]:
    counts = {m: dict(c) for m, c in committer.counts.items()}
    return {"space": plan.space, "space_id": plan.target.space_id, "table": plan.target.table,
            "to_embed": len(plan.work), "already_embedded": plan.already, "counts": counts,
            "failed": sum(c.get("failed", 0) for c in counts.values()), "seconds": round(seconds, 3)}
