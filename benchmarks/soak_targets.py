"""The crash soak's other kill targets, and the checks of a store right after a killed ingest.

Besides ``omnivec ingest``, a trial may kill ``omnivec maintain --local`` (compaction, ANN index build,
full-text index refresh, cleanup of every untagged version: ``--retention-days 0``), ``omnivec reembed
--local`` (the clip space into a second tiny model) or ``omnivec restore --to RUN`` (the store back to
its first run) mid-way, run the same command again to completion, and compare the store with a clean
run of that command on the same starting store:

* maintain: the same rows in every table, the same indices, the same search results, every tag
  readable, no duplicate key (``crash_soak.check``);
* reembed: every table the same, the new space's vectors bit for bit, no duplicate key;
* restore: every table (but the `runs` log) equal to its version tagged with the run restored to (or
  empty where that run had no such table), and the same as after a clean restore.

Right after a killed ingest, before any recovery: a search over the store returns no hit whose vector
row no `items` row covers (same item_id and content hash); and when the kill came between a commit's
vector merge and its items merge, the next writer (an ingest of another folder, or ``omnivec maintain
--local``) leaves no such vector row. Used by ``benchmarks/crash_soak.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from soak_trace import _short

TARGETS = ("maintain", "reembed", "restore")
INDEX_THRESHOLD = 10  # maintain builds an ANN index on every vector table of the soak's stores
START = {"maintain": "incremental", "restore": "incremental", "reembed": "fresh"}  # whose clean store


def command(target: str, store: Path, clip2: Path, restore_to: str, batch_size: int) -> list[str]:
    """The command line a trial of ``target`` runs (and kills)."""
    if target == "maintain":
        return ["maintain", "--store", str(store), "--local", "--retention-days", "0",
                "--index-threshold", str(INDEX_THRESHOLD), "--json"]
    if target == "reembed":
        return ["reembed", "--space", "clip", "--model", f"local-dir:{clip2}", "--store", str(store), "--local",
                "--batch-size", str(batch_size), "--json"]
    if target == "restore":
        return ["restore", "--to", restore_to, "--store", str(store)]
    raise ValueError(target)


def run_here(target: str, store: Path, settings: Any, clip2: Path, restore_to: str) -> None:
    """The same command, in this process (``settings``: the soak's, for this store)."""
    if target == "maintain":
        from omnivec.maintenance import maintain

        maintain(str(store), 0, INDEX_THRESHOLD)
    elif target == "reembed":
        from omnivec.pipeline.reembed import reembed

        reembed(settings, "clip", f"local-dir:{clip2}")
    elif target == "restore":
        from omnivec.store import Store
        from omnivec.store.history import restore

        restore(Store(str(store)), restore_to)
    else:
        raise ValueError(target)


def first_run(store: Path) -> str:
    from omnivec.store import Store

    runs = Store(str(store)).read("runs", ["run_name", "ended_at"]).to_pylist()
    return str(min(runs, key=lambda r: r["ended_at"])["run_name"])


# ----------------------------------------------------------------------------------------------
# what "equal" means beyond crash_soak.check's rows, schemas and searches
# ----------------------------------------------------------------------------------------------


def indices(store: Path) -> dict[str, list[tuple[str, str]]]:
    """table -> its (columns, index type) pairs"""
    import lancedb

    db = lancedb.connect(str(store))
    out = {}
    for name in db.list_tables().tables:
        try:
            out[name] = sorted((",".join(i.columns), str(i.index_type)) for i in db.open_table(name).list_indices())
        except Exception:  # noqa: BLE001 - an unreadable table is reported by the invariants
            continue
    return out


def same_indices(got: Path, want: Path) -> list[str]:
    a, b = indices(got), indices(want)
    return [f"{_short(t)}: indices {a.get(t)} (clean run: {b.get(t)})" for t in sorted(set(a) | set(b))
            if a.get(t) != b.get(t)]


def equal_to_tag(store: Path, run: str) -> list[str]:
    """Every table but `runs` holds at its latest version what it held at the version tagged ``run``
    (a table that run did not have: nothing)."""
    import lancedb
    from soak_compare import _rows

    db = lancedb.connect(str(store))
    out = []
    for name in db.list_tables().tables:
        if name == "runs":
            continue
        tbl = db.open_table(name)
        latest = sorted(map(repr, _rows(tbl)))  # rows in schema order: repr is exact (floats, times)
        tagged: list[str] = []
        if run in tbl.tags.list():
            old = db.open_table(name)
            old.checkout(run)
            tagged = sorted(map(repr, _rows(old)))
        if latest != tagged:
            out.append(f"{_short(name)}: {len(latest)} rows at the latest version differ from the {len(tagged)} "
                       f"at tag {run}")
    return out


# ----------------------------------------------------------------------------------------------
# right after a killed ingest
# ----------------------------------------------------------------------------------------------


def _items(store: Path) -> dict[str, str | None]:
    from omnivec.store import Store

    return {r["item_id"]: r["content_hash"]
            for r in Store(str(store)).read("items", ["item_id", "content_hash"]).to_pylist()}


def uncommitted(store: Path) -> list[str]:
    """Vector rows that no `items` row covers (the same item_id and content hash)."""
    from omnivec.store import Store

    st, items = Store(str(store)), _items(store)
    out = []
    for _, _, table in st.vector_tables():
        rows = st.read(table, ["vector_id", "item_id", "content_hash"]).to_pylist()
        bad = [r["vector_id"] for r in rows if r["item_id"] not in items or items[r["item_id"]] != r["content_hash"]]
        if bad:
            out.append(f"{_short(table)}: {len(bad)} vector rows no items row covers (e.g. {bad[0]})")
    return out


def committed_vectors(store: Path, items: dict[str, str | None]) -> int:
    """Vector rows an `items` row covers."""
    from omnivec.store import Store

    st = Store(str(store))
    return sum(1 for _, _, table in st.vector_tables()
               for r in st.read(table, ["item_id", "content_hash"]).to_pylist()
               if r["item_id"] in items and items[r["item_id"]] == r["content_hash"])


def ghost_hits(store: Path, settings: Any, query: str) -> list[str]:
    """Hits of a search (every file: k past the store's size) whose vector row no `items` row covers; a
    search that fails while committed vectors exist is a problem too."""
    from omnivec.errors import OmnivecError
    from omnivec.query import search
    from omnivec.store import Store

    st, items = Store(str(store)), _items(store)
    try:
        hits = search(query, k=1000, hybrid=True, settings=settings)
    except Exception as exc:  # noqa: BLE001 - what a user searching the killed store would meet
        if isinstance(exc, OmnivecError) and not committed_vectors(store, items):
            return []  # nothing committed to search yet (no space, no vectors): said as a user error
        return [f"search over the killed store fails: {type(exc).__name__}: {str(exc)[:160]}"]
    rows: dict[tuple[str, str], set[str | None]] = {}  # (space name, vector_id) -> content hashes
    for name, _, table in st.vector_tables():
        for r in st.read(table, ["vector_id", "content_hash"]).to_pylist():
            rows.setdefault((name, r["vector_id"]), set()).add(r["content_hash"])
    out = []
    for h in hits:
        found = rows.get((h.space.removeprefix("fts:"), f"{h.item_id}:{h.segment}"), set())
        if h.item_id not in items or items[h.item_id] not in found:
            out.append(h.uri)
    return [f"search over the killed store returns {len(out)} hits no items row covers (e.g. {out[0]})"] if out else []


def next_writer_cleans(store: Path, settings_of: Any, other: Path, how: str) -> list[str]:
    """On a copy of the killed store: run the next writer (``ingest`` of the folder ``other``, or
    ``maintain``), then list the vector rows no `items` row covers."""
    copy = store.with_name(f"{store.name}-next")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(store, copy)
    try:
        if how == "ingest":
            from omnivec.pipeline.run import ingest

            ingest([str(other)], settings_of(copy))
        else:
            from omnivec.maintenance import maintain

            maintain(str(copy))
        return [f"after {how} (another writer): {p}" for p in uncommitted(copy)]
    finally:
        shutil.rmtree(copy, ignore_errors=True)
