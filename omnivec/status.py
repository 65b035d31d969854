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


def list_spaces(uri: str) -> list[dict[str, Any]]:
    """Every space identity: name, space_id, model, dimension, rows, status, created."""
    store = Store(uri)
    defaults = {n: (store.default_space(n) or {}).get("space_id") for n in {r["name"] for r in store.space_rows()}}
    return [{"name": r["name"], "space_id": r["space_id"], "encoder": r["encoder"], "model": r["model"],
             "pretrained": r["pretrained"], "dimension": r["dimension"], "rows": store.count(r["table_name"]),
             "status": r["status"], "default": defaults.get(r["name"]) == r["space_id"],
             "created": r["created_at"], "table": r["table_name"]}
            for r in store.space_rows()]


def list_runs(uri: str) -> list[dict[str, Any]]:
    """Runs, newest first: name, times, counts and the tables tagged with the run's name."""
    import json

    store = Store(uri)
    tagged: dict[str, list[str]] = {}
    for name in store.table_names():
        tbl = store.table(name)
        for tag in (tbl.tags.list() if tbl is not None else {}):
            tagged.setdefault(tag, []).append(name)
    runs = sorted(store.read("runs").to_pylist(), key=lambda r: r["started_at"], reverse=True)
    return [{"run_name": r["run_name"], "run_id": r["run_id"], "status": r["status"],
             "started_at": r["started_at"], "ended_at": r["ended_at"], "seconds": r["seconds"],
             "sources": json.loads(r["sources"] or "[]"), "counts": json.loads(r["counts"] or "{}"),
             "tagged_tables": sorted(tagged.get(r["tag"] or r["run_name"], []))} for r in runs]
