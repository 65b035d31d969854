"""The crash soak's checks: a store compared with a clean run's, and what must hold in any store.

``compare`` lists the differences between a soaked store and the reference store (rows, vectors bit
for bit, schemas, full-text index); ``invariants`` lists what is wrong with a store on its own
(duplicate keys, unreadable tables or tags, errors that do not match the items, vectors without
readable content, runs without their tags); ``check`` adds the searches and what a target's run must
leave (soak_targets.py), ``check_killed`` what must hold right after a killed ingest. Used by
``benchmarks/crash_soak.py``.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import soak_targets
from soak_trace import _short

QUERY = "a red circle"

KEYS = {"items": "item_id", "errors": "error_id", "spaces": "space_id", "runs": "run_id", "assets": "asset_id"}
VOLATILE = {"run_id", "first_run", "last_run", "created_at", "updated_at", "default_since", "started_at",
            "ended_at", "seconds"}


def key_of(table: str) -> str:
    if table.startswith("vectors_"):
        return "vector_id"
    if table.startswith("assets_"):
        return "asset_id"
    return KEYS.get(table, "")


def _rows(tbl: Any) -> list[dict[str, Any]]:
    return tbl.to_arrow().to_pylist()  # type: ignore[no-any-return]


def _freeze(v: Any) -> Any:
    if isinstance(v, list):
        if v and isinstance(v[0], float):
            import numpy as np

            return np.asarray(v, dtype=np.float32).tobytes()  # bit for bit
        return tuple(_freeze(x) for x in v)
    return v


def snapshot(store_path: Path) -> dict[str, dict[str, tuple[Any, ...]]]:
    """table -> {key: the row's comparable values} for every table but `runs` (its rows are per run)."""
    import lancedb

    db = lancedb.connect(str(store_path))
    out: dict[str, dict[str, tuple[Any, ...]]] = {}
    for name in db.list_tables().tables:
        if name == "runs":
            continue
        try:
            tbl = db.open_table(name)
        except Exception:  # noqa: BLE001 - reported by the invariants
            continue
        key = key_of(name)
        cols = [c for c in tbl.schema.names if c not in VOLATILE]
        out[name] = {str(r[key]): tuple(_freeze(r[c]) for c in cols) for r in _rows(tbl)}
        out[name]["__columns__"] = tuple(cols)
    return out


def compare(got: Path, want: Path) -> list[str]:
    """Differences between a store and the reference store (empty when they hold the same)."""
    import lancedb

    problems: list[str] = []
    a, b = snapshot(got), snapshot(want)
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            problems.append(f"table {_short(name)} only in the {'soaked' if name in a else 'clean'} store")
            continue
        ta, tb = a[name], b[name]
        if ta.get("__columns__") != tb.get("__columns__"):
            problems.append(f"{_short(name)}: columns differ")
            continue
        cols = ta["__columns__"]
        missing, extra = sorted(set(tb) - set(ta)), sorted(set(ta) - set(tb))
        if missing:
            problems.append(f"{_short(name)}: {len(missing)} rows lost (e.g. {missing[0]})")
        if extra:
            problems.append(f"{_short(name)}: {len(extra)} rows extra (e.g. {extra[0]})")
        differ = [k for k in ta if k in tb and ta[k] != tb[k] and k != "__columns__"]
        if differ:
            k = differ[0]
            cols_differ = [c for c, x, y in zip(cols, ta[k], tb[k], strict=True) if x != y]
            problems.append(f"{_short(name)}: {len(differ)} rows differ (e.g. {k}: {', '.join(cols_differ)})")
    da, db_ = lancedb.connect(str(got)), lancedb.connect(str(want))
    for name in sorted(set(a) & set(b)):
        with contextlib.suppress(Exception):
            sa, sb = da.open_table(name).schema, db_.open_table(name).schema
            if not sa.equals(sb, check_metadata=True) or \
                    [f.metadata for f in sa] != [f.metadata for f in sb]:
                problems.append(f"{_short(name)}: schema or its metadata differs (primary key, recipe)")
    problems += _compare_text_index(got, want)
    return problems


def _fts_state(store_path: Path) -> dict[str, tuple[bool, int]]:
    import lancedb

    db = lancedb.connect(str(store_path))
    out = {}
    for name in db.list_tables().tables:
        if not name.startswith("vectors_"):
            continue
        with contextlib.suppress(Exception):
            tbl = db.open_table(name)
            fts = [i for i in tbl.list_indices() if i.index_type == "FTS"]
            stats = tbl.index_stats(fts[0].name) if fts else None
            out[name] = (bool(fts), int(stats.num_unindexed_rows or 0) if stats is not None else -1)
    return out


def _compare_text_index(got: Path, want: Path) -> list[str]:
    a, b = _fts_state(got), _fts_state(want)
    out = []
    for name in sorted(set(a) & set(b)):
        if a[name][0] != b[name][0]:
            out.append(f"{_short(name)}: full-text index {'present' if a[name][0] else 'missing'} "
                       f"(clean run: {'present' if b[name][0] else 'missing'})")
        elif a[name][0] and a[name][1] != b[name][1]:
            out.append(f"{_short(name)}: full-text index leaves {a[name][1]} rows unindexed "
                       f"(clean run: {b[name][1]})")
    return out


def invariants(store_path: Path) -> list[str]:
    """What must hold in any store, whatever happened to the runs that wrote it."""
    import lancedb

    problems: list[str] = []
    db = lancedb.connect(str(store_path))
    names = list(db.list_tables().tables)
    tables: dict[str, Any] = {}
    for name in names:
        try:
            tables[name] = db.open_table(name)
        except Exception as exc:  # noqa: BLE001 - what the user would see
            problems.append(f"table {_short(name)} is listed but cannot be opened: {str(exc)[:120]}")
    latest: dict[str, list[dict[str, Any]]] = {}
    for name, tbl in tables.items():
        try:
            latest[name] = _rows(tbl)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"table {_short(name)} unreadable at its latest version: {str(exc)[:120]}")
            continue
        problems += _duplicates(name, latest[name], "latest")
        try:
            tags = tbl.tags.list()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"table {_short(name)}: tags unreadable: {str(exc)[:120]}")
            continue
        for tag in tags:
            try:
                old = db.open_table(name)
                old.checkout(tag)
                problems += _duplicates(name, _rows(old), f"tag {tag}")
            except Exception as exc:  # noqa: BLE001
                problems.append(f"table {_short(name)} unreadable at tag {tag}: {str(exc)[:120]}")
    problems += _runs_sane(tables, latest.get("runs", []))
    problems += _errors_consistent(latest)
    return problems


def _duplicates(name: str, rows: list[dict[str, Any]], where: str) -> list[str]:
    key = key_of(name)
    if not key:
        return []
    seen = Counter(r[key] for r in rows)
    dup = [k for k, n in seen.items() if n > 1]
    return [f"{_short(name)} at {where}: {len(dup)} duplicate keys (e.g. {dup[0]})"] if dup else []


def _runs_sane(tables: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    out = []
    if not runs:
        return ["runs: no completed run recorded"]
    names = Counter(r["run_name"] for r in runs)
    out += [f"runs: run name {n} recorded {c} times" for n, c in names.items() if c > 1]
    out += [f"runs: run {r['run_name']} has status {r['status']}" for r in runs
            if r["status"] not in ("completed", "restored", "reembed")]
    tags = {name: tbl.tags.list() for name, tbl in tables.items()}
    for r in runs:
        versions = json.loads(r["versions"] or "{}")
        for table, version in versions.items():
            if table not in tags or table == "runs":
                continue
            have = tags[table].get(r["run_name"])
            if have is None:
                out.append(f"runs: run {r['run_name']} is recorded but table {_short(table)} has no tag for it")
            elif int(have["version"]) != int(version):
                out.append(f"runs: tag {r['run_name']} of {_short(table)} is version {have['version']}, "
                           f"the run recorded {version}")
        if "runs" in tags and r["run_name"] not in tags["runs"]:
            out.append(f"runs: run {r['run_name']} is recorded but the runs table has no tag for it")
    return out


def _errors_consistent(latest: dict[str, list[dict[str, Any]]]) -> list[str]:
    out = []
    items = {r["item_id"]: r for r in latest.get("items", [])}
    errors = latest.get("errors", [])
    by_item: dict[str, list[dict[str, Any]]] = {}
    for e in errors:
        by_item.setdefault(e["item_id"], []).append(e)
        if e["stage"] == "discover":
            continue
        item = items.get(e["item_id"])
        if item is None:
            out.append(f"errors: row {e['error_id']} for a file the items table does not hold ({e['uri']})")
        elif item["status"] != "error":
            out.append(f"errors: row for {e['uri']}, whose item is {item['status']}")
        elif item["content_hash"] != e["content_hash"]:
            out.append(f"errors: row for {e['uri']} is about other content than the item holds")
    for item in items.values():
        if item["status"] == "error" and item["item_id"] not in by_item:
            out.append(f"items: {item['uri']} failed but has no errors row")
    space_modalities = {r["table_name"]: set(r["modalities"] or ()) for r in latest.get("spaces", [])}
    for table, mods in space_modalities.items():
        rows = latest.get(table, [])
        have = {r["item_id"] for r in rows}
        for r in rows:
            item = items.get(r["item_id"])
            if item is None:
                out.append(f"{_short(table)}: vectors of {r['uri']}, which the items table does not hold")
                break
            if item["content_hash"] != r["content_hash"]:
                out.append(f"{_short(table)}: vectors of {r['uri']} are of other content than the item holds")
                break
            if item["status"] == "error" and any(e["space"] is None for e in by_item.get(item["item_id"], [])):
                out.append(f"{_short(table)}: vectors of {r['uri']}, which cannot be read")
                break
        lacking = [i["uri"] for i in items.values() if i["status"] == "ok" and i["modality"] in mods
                   and i["item_id"] not in have]
        if lacking:
            out.append(f"{_short(table)}: {len(lacking)} ok items have no vectors (e.g. {lacking[0]})")
    return out


# ----------------------------------------------------------------------------------------------
# with the soak's settings: searches, and the checks of a trial's store
# ----------------------------------------------------------------------------------------------


def settings_for(ws: Any, store: Path) -> Any:
    """The settings the soaked command line amounts to (for runs and searches in this process)."""
    from omnivec.config import load_settings

    clap = {"model": str(ws.clap)} if ws.clap else {"enabled": False}
    spaces = {"clip": {"model": f"local-dir:{ws.clip}"}, "clap": clap, "text": {"enabled": False}}
    return load_settings(overrides={"store": str(store), "spaces": spaces, "batch_size": ws.batch_size,
                                    "workers": 2, **({} if ws.canary else {"canary_sample": 0})}, env={})


def ingest_here(ws: Any, store: Path) -> Any:
    """The same ingest as the command line's, in this process (no trace, one commit per 4096 rows)."""
    from omnivec.pipeline.run import ingest

    return ingest([str(ws.corpus)], settings_for(ws, store))


def search_lists(ws: Any, store: Path) -> dict[str, list[tuple[str, float]]]:
    """The ranked lists a hybrid search fuses (cosine top-k and BM25 top-k per space), after checking
    that the fused search, and a search as of the last run's tag, work."""
    from omnivec.query import encode_query, search, search_text_index, search_vector
    from omnivec.store import Store

    s, st = settings_for(ws, store), Store(str(store))
    search(QUERY, k=10, hybrid=True, settings=s)
    runs = sorted(st.read("runs", ["run_name", "ended_at"]).to_pylist(), key=lambda r: r["ended_at"])
    search(QUERY, k=5, as_of=runs[-1]["run_name"], settings=s)
    out = {}
    for space in ("clip", "clap") if ws.clap else ("clip",):
        vec, _ = encode_query(st, space, s, QUERY, None, None)
        out[space] = [(h.uri, round(h.score, 6)) for h in search_vector(st, space, vec, k=10)]
        out[f"fts:{space}"] = [(h.uri, round(h.score, 4)) for h in search_text_index(st, space, QUERY, k=10)]
    return out


def same_ranking(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> bool:
    """Equal up to the order among equal scores and, at the cut, which of the tied hits are kept.
    Ties are ordered by where rows lie in the table's files, which differs between a store that a
    resumed run wrote and a clean one (as it does after compaction); scores and everything above the
    lowest score must agree."""
    if [x for _, x in a] != [x for _, x in b]:
        return False
    low = a[-1][1] if a else None
    above_a = Counter((u, x) for u, x in a if x != low)
    above_b = Counter((u, x) for u, x in b if x != low)
    return above_a == above_b


def check(ws: Any, got: Path, want: Path, scenario: str = "fresh") -> list[str]:
    """What is wrong with a store that a killed and then finished run of ``scenario`` left, against
    the store a clean run of it left (see soak_targets.py for maintain, reembed and restore)."""
    problems = invariants(got) + compare(got, want)
    if scenario == "maintain":
        problems += soak_targets.same_indices(got, want)
    if scenario == "restore":
        problems += soak_targets.equal_to_tag(got, ws.restore_to)
    try:
        mine, clean = search_lists(ws, got), search_lists(ws, want)
        for name in sorted(clean):
            if not same_ranking(mine.get(name, []), clean[name]):
                problems.append(f"search {QUERY!r} in {name} ranks other hits than on the clean store")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"search fails: {type(exc).__name__}: {str(exc)[:160]}")
    return problems


def check_killed(ws: Any, store: Path, launch: Any, rng: random.Random) -> list[str]:
    """Right after a killed ingest, before any recovery: no search hit without its `items` row; and
    after a kill between vectors and items, the next writer (another folder's ingest, or maintain,
    on a copy) leaves no vector row that no `items` row covers."""
    if not launch.killed:
        return []
    how = rng.choice(("ingest", "maintain")) if launch.window else ""
    step = "reading the killed store"
    try:
        problems = soak_targets.ghost_hits(store, settings_for(ws, store), QUERY)
        if how:
            step = f"the next writer ({how})"
            problems += soak_targets.next_writer_cleans(store, lambda p: settings_for(ws, p), ws.other, how)
    except Exception as exc:  # noqa: BLE001 - reading the killed store, or the next writer, failed
        problems = [f"{step} fails: {type(exc).__name__}: {str(exc)[:200]}"]
    return [f"after kill ({launch.point}): {p}" for p in problems]
