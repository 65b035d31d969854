"""Read-only summaries of a store, for `omnivec status`, `errors`, `spaces` and `runs`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from omnivec.errors import DamagedTableError
from omnivec.store.health import check_store
from omnivec.store.store import Store

T = TypeVar("T")


def _unless_damaged(read: Callable[[], T], default: T) -> T:
    """What ``read`` returns, or ``default`` when a table it reads is damaged (the check lists it)."""
    try:
        return read()
    except DamagedTableError:
        return default


def store_status(uri: str, last_runs: int = 5) -> dict[str, Any]:
    """Counts, spaces and last runs, as far as the tables can be read, and the store's consistency:
    ``problems`` (damaged tables, each with remedies; empty when the store is whole) and ``orphans``
    (vector rows whose item has no `items` row, per table). Unreadable counts are None."""
    store = Store(uri)
    health = check_store(store)
    damaged = {p["table"] for p in health.problems}
    statuses: list[str] | None = _unless_damaged(
        lambda: store.read("items", ["status"]).column("status").to_pylist(), None)
    spaces = []
    no_rows: list[dict[str, Any]] = []
    for row in _unless_damaged(store.space_rows, no_rows):
        table = row["table_name"]
        vectors = None if table in damaged else _unless_damaged(partial(store.count, table), None)
        spaces.append({k: row[k] for k in ("name", "space_id", "model", "pretrained", "dimension",
                                           "status", "created_at")} | {"vectors": vectors})
    runs = sorted(_unless_damaged(lambda: store.read("runs").to_pylist(), no_rows), key=lambda r: r["started_at"],
                  reverse=True)
    return {"store": store.uri, "items": None if statuses is None else len(statuses),
            "items_by_status": dict(Counter(statuses or [])),
            "errors": _unless_damaged(lambda: store.count("errors"), None), "spaces": spaces,
            "runs": runs[:last_runs], "problems": health.problems, "orphans": health.orphans,
            "check_seconds": health.seconds}


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
    for name in sorted(set(store.table_names()) | set(store.expected_tables())):  # a missing one: damage
        tbl = store.table(name)
        for tag in (tbl.tags.list() if tbl is not None else {}):
            tagged.setdefault(tag, []).append(name)
    runs = sorted(store.read("runs").to_pylist(), key=lambda r: r["started_at"], reverse=True)
    return [{"run_name": r["run_name"], "run_id": r["run_id"], "status": r["status"],
             "started_at": r["started_at"], "ended_at": r["ended_at"], "seconds": r["seconds"],
             "sources": json.loads(r["sources"] or "[]"), "counts": json.loads(r["counts"] or "{}"),
             "tagged_tables": sorted(tagged.get(r["tag"] or r["run_name"], []))} for r in runs]
