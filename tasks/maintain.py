"""Tasks of the maintain flow: one task per table."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

import flows.prefect_env  # noqa: F401  (must precede the prefect import)
from omnivec.maintenance import maintain_table, retention
from omnivec.store import Store


@task(name="upkeep", cache_policy=NO_CACHE, retries=0)
def upkeep_task(store_uri: str, table: str, retention_days: float, index_threshold: int) -> dict[str, Any]:
    """Compact one table, keep its indices current, remove untagged versions past the retention."""
    result = maintain_table(Store(store_uri), table, retention(retention_days), index_threshold)
    get_run_logger().info("%s: fragments %d -> %d, versions %d -> %d, vector index %s",
                          table, result.fragments_before, result.fragments_after, result.versions_before,
                          result.versions_after, result.vector_index)
    return result.to_dict()
