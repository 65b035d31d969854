"""The `maintain` flow: compaction, index upkeep and version cleanup, table by table."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

import flows.prefect_env  # noqa: F401  (must precede the prefect import)
from flows import temporary_server
from omnivec.maintenance import DEFAULT_INDEX_THRESHOLD, DEFAULT_RETENTION_DAYS
from omnivec.store import Store
from omnivec.store.lock import writer_lock
from tasks.maintain import upkeep_task


def _run_name() -> str:
    return f"maintain-{datetime.now(UTC):%Y%m%d-%H%M%S}"


@flow(name="maintain", flow_run_name=_run_name, log_prints=False)
def maintain_flow(store: str, retention_days: float = DEFAULT_RETENTION_DAYS,
                  index_threshold: int = DEFAULT_INDEX_THRESHOLD) -> list[dict[str, Any]]:
    """Upkeep of every table of ``store``; tagged versions are never removed."""
    temporary_server.apply(get_run_logger())
    uri = Store(store).uri
    with writer_lock(uri, "maintain", on_wait=get_run_logger().warning):
        rows = [upkeep_task.with_options(task_run_name=f"upkeep-{table}")(uri, table, retention_days, index_threshold)
                for table in Store(uri).table_names()]
        if rows:
            create_table_artifact(rows, key="maintain-tables",
                                  description="fragments and versions before/after, per table")
    removed = sum(r["versions_before"] - r["versions_after"] for r in rows)
    create_markdown_artifact(
        f"# omnivec maintain\n\nStore `{uri}`: {len(rows)} tables, "
        f"fragments {sum(r['fragments_before'] for r in rows)} -> {sum(r['fragments_after'] for r in rows)}, "
        f"versions {sum(r['versions_before'] for r in rows)} -> {sum(r['versions_after'] for r in rows)} "
        f"({removed} untagged versions older than {retention_days} days removed; tagged versions kept).",
        key="maintain-summary")
    return rows
