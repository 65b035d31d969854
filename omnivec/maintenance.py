"""Store upkeep: compaction, ANN and full-text index upkeep, and cleanup of old versions.

Compaction and cleanup run as two separate steps: lancedb's one-call ``optimize()`` fails once a
tagged version is older than its cleanup cutoff (after it has already committed the compaction),
and every omnivec run tags the versions it wrote. Cleanup here keeps every tagged version and the
latest one, and removes untagged versions older than the retention period.
Run it while no ingest is writing to the store.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from omnivec.errors import OmnivecError
from omnivec.store.coverage import remove_uncommitted
from omnivec.store.lock import writer_lock
from omnivec.store.store import Store

DEFAULT_RETENTION_DAYS = 30.0
DEFAULT_INDEX_THRESHOLD = 100_000
MAX_RETENTION_DAYS = 36_500


def retention(days: float) -> timedelta:
    """The retention period ``--retention-days`` asks for: 0 to 36500 days (a century: every version is
    kept); anything else, inf and nan included, is refused."""
    if not (math.isfinite(days) and 0 <= days <= MAX_RETENTION_DAYS):
        raise OmnivecError(f"--retention-days {days:g} is out of range: give 0 to {MAX_RETENTION_DAYS} days",
                           [f"--retention-days {MAX_RETENTION_DAYS} keeps every version (a century)",
                            "--retention-days 0 removes every untagged version but the latest"])
    return timedelta(days=days)


@dataclass(slots=True)
class TableUpkeep:
    table: str
    rows: int
    fragments_before: int
    fragments_after: int
    versions_before: int
    versions_after: int
    vector_index: str  # none | created | refreshed | current
    bytes_removed: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _health(tbl: Any) -> tuple[int, int]:
    return int(tbl.stats()["fragment_stats"]["num_fragments"]), len(tbl.list_versions())


def _is_vector_table(name: str) -> bool:
    return name.startswith(("vectors_", "assets_")) and name != "assets"


def maintain_table(store: Store, name: str, retention: timedelta, index_threshold: int) -> TableUpkeep:
    t0 = time.perf_counter()
    tbl = store.table(name)
    assert tbl is not None
    fragments_before, versions_before = _health(tbl)
    rows = int(tbl.count_rows())
    if fragments_before > 1:
        tbl.to_lance().optimize.compact_files()
        tbl.checkout_latest()
    indices = list(tbl.list_indices())
    vector_index = "none"
    has_vector_index = any(i.columns == ["vector"] for i in indices)
    if _is_vector_table(name) and rows >= index_threshold and not has_vector_index:
        from lancedb.index import IvfHnswSq

        tbl.create_index("vector", config=IvfHnswSq(distance_type="cosine"))
        vector_index = "created"
        indices = list(tbl.list_indices())
    elif has_vector_index:
        vector_index = "current"
    if any(getattr(i, "num_unindexed_rows", 0) for i in indices):
        tbl.to_lance().optimize.optimize_indices()  # new rows into the vector and full-text indices
        tbl.checkout_latest()
        vector_index = "refreshed" if vector_index == "current" else vector_index
    stats = tbl.to_lance().cleanup_old_versions(older_than=retention, error_if_tagged_old_versions=False)
    tbl.checkout_latest()
    fragments_after, versions_after = _health(tbl)
    return TableUpkeep(name, rows, fragments_before, fragments_after, versions_before, versions_after,
                       vector_index, int(getattr(stats, "bytes_removed", 0)), round(time.perf_counter() - t0, 3))


def maintain(uri: str, retention_days: float = DEFAULT_RETENTION_DAYS,
             index_threshold: int = DEFAULT_INDEX_THRESHOLD) -> list[TableUpkeep]:
    """Upkeep of every table of a store; returns what changed, table by table."""
    keep = retention(retention_days)
    with writer_lock(Store(uri).uri, "maintain", on_wait=logging.getLogger("omnivec").warning):
        store = Store(uri)
        remove_uncommitted(store)  # vectors a killed run wrote without their items rows
        out = []
        for name in store.table_names():
            with store.writing(name, f"upkeep of table {name}"):  # a full disk: one clear error, no traceback
                out.append(maintain_table(store, name, keep, index_threshold))
        return out
