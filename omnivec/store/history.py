"""Time travel over a store: read tables as a run, a version or a moment left them; roll back.

Every run tags the latest version of every table with its run name, so a run is a consistent
snapshot across tables. A version number refers to each table's own version counter; a time picks,
per table, the newest version committed at or before it.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

from omnivec.errors import OmnivecError
from omnivec.store.lock import writer_lock
from omnivec.store.store import Store

_RUN = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,127}$")


def parse_as_of(value: str) -> int | str | datetime:
    """``RUN`` (a tag), ``VERSION`` (an integer) or an ISO-8601 time (naive means UTC)."""
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit also takes "²" and other digits int() refuses
        return int(value)
    try:
        t = datetime.fromisoformat(value)
        return t if t.tzinfo else t.replace(tzinfo=UTC)
    except ValueError:
        pass
    if _RUN.match(value):
        return value
    raise OmnivecError(f"--as-of {value!r} is neither a run name, a version number nor an ISO-8601 time",
                       ["list runs with `omnivec runs`", "or give a time such as 2026-11-28T15:00:00"])


def _version_at(tbl: Any, when: datetime) -> int | None:
    best = None
    for v in tbl.list_versions():
        ts = v["timestamp"]
        ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
        if ts <= when and (best is None or v["version"] > best):
            best = int(v["version"])
    return best


def open_as_of(store: Store, table: str, as_of: int | str | datetime) -> Any | None:
    """A fresh handle on ``table`` checked out as of ``as_of``; None when the table did not exist then."""
    if table not in store.table_names():
        return None
    tbl = store.handle(table)
    if isinstance(as_of, datetime):
        version = _version_at(tbl, as_of)
        if version is None:
            return None
        tbl.checkout(version)
    elif isinstance(as_of, str):
        if as_of not in tbl.tags.list():
            return None
        tbl.checkout(as_of)
    else:
        if as_of > int(tbl.version) or as_of < 1:
            raise OmnivecError(f"table {table} has versions 1..{tbl.version}, not {as_of}")
        tbl.checkout(as_of)
    return tbl


def check_run(store: Store, run: str) -> None:
    names = [r["run_name"] for r in store.read("runs", ["run_name"]).to_pylist()]
    if run not in names:
        raise OmnivecError(f"store {store.uri} has no run named {run!r}",
                           [f"pick one of: {', '.join(sorted(names)[-10:]) or 'none yet'} (`omnivec runs`)"])


def restore(store: Store, run: str) -> tuple[str, dict[str, int]]:
    """Roll every table back to the versions tagged ``run``, each as a new version (history stays).

    Tables created after that run are emptied (also as a new version); the `runs` log is not rolled
    back. The restore is recorded as a run of its own (status ``restored``) and its state tagged with that run's name.
    Returns (the restore's run name, table -> version restored from, 0 for emptied tables).
    """
    import secrets

    with writer_lock(store.uri, f"restore to {run}", on_wait=logging.getLogger("omnivec").warning):
        repair_run_tags(store)
        check_run(store, run)
        started = datetime.now(UTC)
        run_id = secrets.token_hex(8)
        tag = f"restore-{started:%Y%m%d-%H%M%S}-{run_id[:4]}"
        restored: dict[str, int] = {}
        for name in store.table_names():
            if name == "runs":
                continue  # the run log is append-only: the restore is added to it below
            tbl = store.table(name)
            assert tbl is not None
            tags = tbl.tags.list()
            with store.writing(name):
                if run in tags:
                    version = int(tags[run]["version"])
                    if version != int(tbl.version):
                        tbl.restore(run)
                    restored[name] = version
                else:
                    tbl.delete("true")
                    restored[name] = 0
        record_run(store, run_id, tag, started, "restored", [], {"restored_from": run})
        return tag, restored


def record_run(store: Store, run_id: str, run_name: str, started: datetime, status: str, sources: list[str],
               counts: dict[str, Any]) -> dict[str, int]:
    """Append a run to the `runs` log and tag every table's latest version with its name.

    The row comes first, with the version of every table it tags; a writer killed while tagging
    leaves a run whose tags :func:`repair_run_tags` completes from that row."""
    import json

    import pyarrow as pa

    from omnivec.store.schema import RUNS

    repair_run_tags(store)
    ended = datetime.now(UTC)
    store.upsert("runs", pa.Table.from_pylist([{
        "run_id": run_id, "run_name": run_name, "started_at": started, "ended_at": ended, "status": status,
        "sources": json.dumps(sources), "counts": json.dumps(counts), "versions": json.dumps(store.versions()),
        "tag": run_name, "seconds": (ended - started).total_seconds()}], schema=RUNS))
    return store.tag_all(run_name)


def repair_run_tags(store: Store) -> list[str]:
    """Complete the tags of runs whose writer died while tagging (their commits were all done: the run
    row is written after them). Each missing tag goes on the version the run row recorded for that
    table; on the `runs` table, on the first version holding the row. Returns the repaired run names."""
    import json

    runs = store.read("runs", ["run_id", "run_name", "versions"]).to_pylist()
    if not runs:
        return []
    tags = {}
    for name in store.table_names():
        tbl = store.table(name)
        if tbl is not None:
            tags[name] = (tbl, tbl.tags.list())
    repaired: list[str] = []
    for run in runs:
        name_ = run["run_name"]
        if not name_ or not _RUN.match(name_):
            continue
        versions: dict[str, int] = json.loads(run["versions"] or "{}")
        todo = {t: int(v) for t, v in versions.items() if t in tags and t != "runs" and name_ not in tags[t][1]}
        if "runs" in tags and name_ not in tags["runs"][1]:
            found = _first_version_with(store, tags["runs"][0], run["run_id"], int(versions.get("runs", 0)))
            if found is not None:
                todo["runs"] = found
        for table, version in sorted(todo.items()):
            tbl = tags[table][0]
            if version < 1 or version > int(tbl.version):
                continue  # cleaned up since, or never written: nothing to tag
            with store.writing(table, f"the tag {name_} of table {table}"):
                tbl.tags.create(name_, version)
        if todo:
            repaired.append(name_)
    if repaired:
        logging.getLogger("omnivec").warning("completed the tags of run(s) %s, whose writer stopped while tagging",
                                             ", ".join(repaired))
    return repaired


def _first_version_with(store: Store, runs_tbl: Any, run_id: str, after: int) -> int | None:
    """The first version of the `runs` table, after ``after``, that holds ``run_id`` (rows are only
    ever added to it, so every later version holds it too)."""
    from omnivec.store.store import sql_in

    old = store.handle("runs")
    for version in sorted(int(v["version"]) for v in runs_tbl.list_versions() if int(v["version"]) > after):
        old.checkout(version)
        if old.count_rows(sql_in("run_id", [run_id])):
            return version
    return None
