"""Read-only summaries of a store, for `omnivec status` and `omnivec errors`."""

from __future__ import annotations

from collections import Counter
from typing import Any

from omnivec.store.store import Store


def store_status(uri: str, last_runs: int = 5) -> dict[str, Any]:
    store = Store(uri)
    items = store.read("items", ["status"])
    by_status = Counter(items.column("status").to_pylist()) if items.num_rows else Counter()
    spaces = []
    for row in store.space_rows():
        spaces.append({k: row[k] for k in ("name", "space_id", "model", "pretrained", "dimension",
                                           "status", "created_at")}
                      | {"vectors": store.count(row["table_name"])})
    runs = sorted(store.read("runs").to_pylist(), key=lambda r: r["started_at"], reverse=True)
    return {"store": store.uri, "items": items.num_rows, "items_by_status": dict(by_status),
            "errors": store.count("errors"), "spaces": spaces, "runs": runs[:last_runs]}


def store_errors(uri: str, limit: int = 50) -> list[dict[str, Any]]:
    rows = Store(uri).read("errors").to_pylist()
    rows.sort(key=lambda r: (r["created_at"], r["uri"]), reverse=True)
    return rows[:limit]
