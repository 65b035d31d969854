"""Re-embed every stored item of a space's modalities into a new space (a new model or weights).

Work comes from the `items` table (stored URIs), not from a walk. Items whose vectors the target
space already holds for their current content are skipped, so a killed reembed continues where it
stopped, without duplicates. Files that went missing become `errors` rows, and so do files whose
content changed since their ingest (:func:`drop_changed`). The old space is left untouched and stays
searchable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from omnivec.config import Settings
from omnivec.errors import ConfigError, ModelUnavailableError
from omnivec.pipeline.plan import WorkItem
from omnivec.pipeline.spaces import SpaceState, load_spaces, register_spaces
from omnivec.store.coverage import remove_uncommitted
from omnivec.store.history import record_run
from omnivec.store.lock import writer_lock
from omnivec.store.schema import ERRORS
from omnivec.store.store import Store

if TYPE_CHECKING:
    from omnivec.pipeline.batch import BatchResult

CHANGED = "file changed since it was ingested; run `omnivec ingest` first"


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
                result = drop_changed(process_batch(items, target, {space: plan.target}, ctx.run_id), items, space,
                                      ctx.run_id)
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


def drop_changed(result: BatchResult, work: list[WorkItem], space: str, run_id: str) -> BatchResult:
    """Keep no vectors of a file whose content is not the one its `items` row holds (it changed since
    its ingest): they would not match their item, whose row is the file's commit point. Such a file
    gets an `errors` row instead (stage ``reembed``) and keeps the target space's vectors it had."""
    read = {r["item_id"]: r for r in result.items.select(["item_id", "content_hash", "status"]).to_pylist()}
    changed = [w for w in work if w.item_id in read and read[w.item_id]["status"] != "error"
               and read[w.item_id]["content_hash"] != w.prev_hash]
    if not changed:
        return result
    ids = {w.item_id for w in changed}
    now = datetime.now(UTC)
    rows = [{"error_id": f"{w.item_id}:{space}", "item_id": w.item_id, "uri": w.uri,
             "content_hash": read[w.item_id]["content_hash"], "modality": w.modality, "space": space,
             "stage": "reembed", "error_class": "FileChanged", "message": CHANGED, "attempts": 1,
             "run_id": run_id, "created_at": now} for w in changed]
    if space in result.vectors:
        vectors = result.vectors[space]
        keep = pa.array([i not in ids for i in vectors.column("item_id").to_pylist()], pa.bool_())
        result.vectors[space] = vectors.filter(keep)
    result.replace = {n: [i for i in v if i not in ids] for n, v in result.replace.items()}
    result.errors = pa.concat_tables([result.errors, pa.Table.from_pylist(rows, schema=ERRORS)])
    result.counts["reembed"] -= sum(1 for w in changed if w.kind == "reembed")
    result.counts["failed"] += len(changed)
    return result


def summary(plan: ReembedPlan, committer: Any, seconds: float) -> dict[str, Any]:
    counts = {m: dict(c) for m, c in committer.counts.items()}
    return {"space": plan.space, "space_id": plan.target.space_id, "table": plan.target.table,
            "to_embed": len(plan.work), "already_embedded": plan.already, "counts": counts,
            "failed": sum(c.get("failed", 0) for c in counts.values()), "seconds": round(seconds, 3)}
