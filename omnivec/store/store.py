"""The LanceDB store: opening tables, keyed upserts, deletions, version tags and space checks."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from omnivec.errors import DamagedTableError, StoreError
from omnivec.store import health
from omnivec.store.folder import (
    brief,
    is_remote,
    no_space,
    no_space_error,
    own_entry,
    own_table,
    refuse_foreign,
    storage_options,
)
from omnivec.store.schema import KEYS, SCHEMAS, parse_vectors_table, vectors_schema, vectors_table_name

RECIPE_KEY = "omnivec.recipe"
SPACE_ID_KEY = "omnivec.space_id"
_ID = re.compile(r"^[0-9a-f]{8,64}$")
_ID_PREFIX = re.compile(r"^[0-9a-f]{4,64}$")


def sql_in(column: str, ids: Iterable[str]) -> str:
    """``column IN (...)`` for ids omnivec generated itself (hex); anything else is refused."""
    ids = list(ids)
    for i in ids:
        if not _ID.match(i):
            raise ValueError(f"refusing to put {i!r} into a filter: not an omnivec id")
    return f"{column} IN ({', '.join(repr(i) for i in ids)})"


def _has_key(schema: pa.Schema) -> bool:
    return any(f.metadata and any(b"unenforced-primary-key" in k for k in f.metadata) for f in schema)


class Store:
    """A folder (or object-store prefix) of LanceDB tables.

    ``create=False`` opens an existing store for reading and raises :class:`StoreError` when
    there is none; ``create=True`` makes the folder and checks it is writable.
    """

    def __init__(self, uri: str | os.PathLike[str], create: bool = False) -> None:
        import lancedb

        self.uri = os.fspath(uri)
        if not self.uri.strip():
            raise StoreError("the store path is empty",
                             ["give a folder (or s3://bucket/prefix) with --store, OMNIVEC_STORE or `store =` in "
                              "omnivec.toml; leave them unset for the default ./omnivec-data"])
        if not is_remote(self.uri):
            self.uri = os.path.abspath(self.uri)
            self._check_local(create)
        try:
            self.db = lancedb.connect(self.uri, storage_options=storage_options(self.uri) or None)
            listed = self._listed() if is_remote(self.uri) else []  # reach the bucket now: fails here, clearly
        except Exception as exc:
            hint = (" (check the bucket exists, AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                    "and AWS_REGION)") if is_remote(self.uri) else ""
            raise StoreError(f"store {self.uri} cannot be opened: {brief(exc)}{hint}") from None
        if is_remote(self.uri):
            refuse_foreign(self.uri, [f"{n}.lance" for n in listed if not own_table(n)])
        self._tables: dict[str, Any] = {}
        self._spaces: tuple[int, list[dict[str, Any]]] | None = None
        self._recorded: tuple[int, dict[str, str]] | None = None
        self.damage_seen = 0  # damaged tables found by reads: a cached health report is stale

    def _check_local(self, create: bool) -> None:
        if create:
            try:
                os.makedirs(self.uri, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"store {self.uri} cannot be created: {exc.strerror or exc} "
                                 "(pick a writable folder with --store or OMNIVEC_STORE)") from None
            if not os.access(self.uri, os.W_OK | os.X_OK):
                raise StoreError(f"store {self.uri} is not writable "
                                 "(pick a writable folder with --store or OMNIVEC_STORE)")
        elif not os.path.isdir(self.uri):
            raise StoreError(f"no store at {self.uri} (run `omnivec ingest PATH` first, or point --store / "
                             "OMNIVEC_STORE at an existing store)")
        try:
            with os.scandir(self.uri) as entries:
                refuse_foreign(self.uri, [e.name for e in entries if not own_entry(e)])
        except OSError as exc:
            raise StoreError(f"store {self.uri} cannot be read: {exc.strerror or exc}") from None

    # -- tables -------------------------------------------------------------------------------
    def _listed(self) -> list[str]:
        names: list[str] = []
        token = None
        while True:
            resp = self.db.list_tables(page_token=token)
            names += list(resp.tables)
            token = resp.page_token
            if not token:
                return names

    def table_names(self) -> list[str]:
        """Tables with at least one committed version. A writer killed while creating a table can
        leave its folder without a version; such a table does not exist (the next create makes it)."""
        return sorted(n for n in self._listed() if self._committed(n))

    def remove_unfinished_tables(self) -> list[str]:
        """Delete the folders of omnivec's tables whose creation was interrupted: no committed version
        and no data file (nothing can read them, and other LanceDB clients would list them and fail to
        open them). A folder with data but no version, or one the store names, is damage and stays for
        `omnivec status` to report. For a writer holding the store's lock only. Returns their names."""
        if is_remote(self.uri):
            return []
        import shutil

        gone = []
        for entry in os.scandir(self.uri):
            name = entry.name.removesuffix(".lance")
            if (entry.is_dir(follow_symlinks=False) and entry.name.endswith(".lance") and own_table(name)
                    and not self._committed(name) and not health.has_data(entry.path)
                    and name not in self.expected_tables(tags=False)):
                shutil.rmtree(entry.path, ignore_errors=True)
                self._tables.pop(name, None)
                gone.append(name)
        return gone

    def _committed(self, name: str) -> bool:
        if is_remote(self.uri):
            return True  # checked when opened (see :meth:`table`)
        try:
            with os.scandir(os.path.join(self.uri, f"{name}.lance", "_versions")) as entries:
                return any(e.name.endswith(".manifest") for e in entries)
        except OSError:
            return False

    def table(self, name: str, expect: bool = True) -> Any | None:
        """The table, reopened at its latest version, or None when it does not exist yet. A table the
        store names (``expect``: see :meth:`expected_tables`) that is missing, and a table that cannot
        be read, raise :class:`DamagedTableError`."""
        if name in self._tables:
            tbl = self._tables[name]
            tbl.checkout_latest()
            return tbl
        if name not in self.table_names():
            if expect:
                self._absent(name)
            return None
        try:
            raw = self.db.open_table(name)
        except ValueError as exc:  # listed, but never committed (its creation was interrupted)
            if "not found" in str(exc).lower():
                if expect:
                    self._absent(name)
                return None
            self._failed(name, exc)
            raise
        except BaseException as exc:
            self._failed(name, exc)
            raise
        tbl = health.Guarded(raw, lambda exc: self._failed(name, exc))
        self._tables[name] = tbl
        return tbl

    def handle(self, name: str) -> Any:
        """A fresh handle on a committed table, not shared with other callers (to check out an older
        version); its failures are reported like those of :meth:`table`."""
        try:
            raw = self.db.open_table(name)
        except BaseException as exc:
            self._failed(name, exc)
            raise
        return health.Guarded(raw, lambda exc: self._failed(name, exc))

    def _failed(self, name: str, exc: BaseException) -> None:
        """A call on table ``name`` failed: raise :class:`DamagedTableError` when the table is damaged,
        else return (the caller re-raises the failure as it was)."""
        problem = health.failure_problem(self.uri, name, exc)
        if problem:
            raise self.damaged(name, problem) from exc

    def damaged(self, name: str, problem: str) -> DamagedTableError:
        """The error for a damaged table, with the ways out."""
        self.damage_seen += 1
        return DamagedTableError(name, self.uri, problem, health.damage_remedies(self.uri, name))

    def _absent(self, name: str) -> None:
        """A table that is not there: damage when the store names it or its folder holds data."""
        if not is_remote(self.uri) and health.has_data(health.table_uri(self.uri, name)):
            raise self.damaged(name, "its folder holds data files but no committed version (its _versions "
                                     "folder is missing or empty)")
        why = self.expected_tables(tags=name == "runs").get(name)
        if why:
            raise self.damaged(name, f"it is missing, but {why}")

    def expected_tables(self, tags: bool = True) -> dict[str, str]:
        """Tables the store says exist, each with the reason: every space's vector table (a `spaces`
        row is written after its table), every table a run recorded a version of, and (``tags``)
        `runs` once a table carries a run's tag. Tables are never dropped, so a missing one is damage."""
        out: dict[str, str] = {}
        for row in self._space_rows(expect=False):
            if row.get("table_name"):
                out.setdefault(row["table_name"], f"the spaces table names it (space {row['name']} "
                                                  f"{row['space_id']})")
        runs = self.table("runs", expect=False)
        if runs is not None:
            version = int(runs.version)
            if self._recorded is None or self._recorded[0] != version:
                recorded: dict[str, str] = {}
                for row in runs.search().select(["run_name", "versions"]).limit(None).to_list():
                    for table in json.loads(row["versions"] or "{}"):
                        recorded.setdefault(table, f"run {row['run_name']} recorded a version of it")
                self._recorded = (version, recorded)
            for table, why in self._recorded[1].items():
                out.setdefault(table, why)
        if tags and runs is None and "runs" not in out:
            for table in self.table_names():
                tbl = self.table(table, expect=False)
                if tbl is not None and tbl.tags.list():
                    out["runs"] = f"table {table} carries the tags of runs"
                    break
        return out

    def ensure(self, name: str, schema: pa.Schema | None = None, key: str | None = None) -> Any:
        tbl = self.table(name)
        if tbl is not None:
            want = schema if schema is not None else SCHEMAS.get(name)
            missing = [f for f in want if f.name not in tbl.schema.names] if want is not None else []
            if missing:  # a store written by an older omnivec: add the new (nullable) columns
                with self.writing(name):
                    tbl.add_columns(pa.schema([f.with_nullable(True) for f in missing]))
            self._ensure_key(tbl, key or KEYS.get(name))
            return tbl
        schema = schema if schema is not None else SCHEMAS[name]
        key = key or KEYS[name]
        with self.writing(name):
            try:
                raw = self.db.create_table(name, schema=schema, exist_ok=True)
            except OSError as exc:
                if no_space(exc):
                    raise
                raise StoreError(f"table {name} cannot be created in {self.uri}: {exc}") from exc
        tbl = health.Guarded(raw, lambda exc: self._failed(name, exc))
        self._ensure_key(tbl, key)
        self._tables[name] = tbl
        return tbl

    def _ensure_key(self, tbl: Any, key: str | None) -> None:
        """Declare the table's key (concurrent upserts of one new key stay one row). Creating a table
        and declaring its key are two commits: a writer killed between them left a table without one,
        which the next writer completes."""
        if key is None or key not in tbl.schema.names or _has_key(tbl.schema):
            return
        with self.writing(tbl.name), contextlib.suppress(Exception):  # another writer may have set it first
            tbl.set_unenforced_primary_key(key)

    def read(self, name: str, columns: list[str] | None = None, where: str | None = None) -> pa.Table:
        tbl = self.table(name)
        if tbl is None:
            schema = SCHEMAS.get(name)
            empty = schema.empty_table() if schema is not None else pa.table({})
            return empty.select(columns) if columns and schema is not None else empty
        q = tbl.search()
        if where:
            q = q.where(where)
        if columns:
            q = q.select(columns)
        return q.limit(None).to_arrow()

    def count(self, name: str, where: str | None = None) -> int:
        tbl = self.table(name)
        return 0 if tbl is None else int(tbl.count_rows(where))

    # -- writes -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self, table: str, what: str | None = None) -> Iterator[None]:
        """Around one commit: a full disk becomes one clear :class:`StoreError` naming the store
        (the commit did not happen; the table keeps its previous version)."""
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:
            if no_space(exc):
                raise no_space_error(self.uri, what or f"table {table}") from None
            raise

    def upsert(self, name: str, rows: pa.Table, replace_where: str | None = None, key: str | None = None) -> int | None:
        """Merge rows by the table's key in one commit; optionally delete, in the same commit,
        rows matching ``replace_where`` that the new rows do not carry. Returns the version."""
        if rows.num_rows == 0 and not replace_where:
            return None
        tbl = self.ensure(name) if name in SCHEMAS else self.table(name)
        if tbl is None:
            raise StoreError(f"table {name} does not exist in {self.uri}")
        self._ensure_key(tbl, key or KEYS.get(name, "vector_id"))
        with self.writing(name):
            if rows.num_rows == 0:
                tbl.delete(replace_where)
                return int(tbl.version)
            key = key or KEYS.get(name, "vector_id")
            builder = tbl.merge_insert(key).when_matched_update_all().when_not_matched_insert_all()
            if replace_where:
                builder = builder.when_not_matched_by_source_delete(replace_where)
            result = builder.execute(rows.select(tbl.schema.names).cast(tbl.schema))
            return int(result.version)

    def delete(self, name: str, where: str) -> None:
        tbl = self.table(name)
        if tbl is not None:
            with self.writing(name):
                tbl.delete(where)

    # -- spaces -------------------------------------------------------------------------------
    def space_rows(self, name: str | None = None) -> list[dict[str, Any]]:
        """Rows of the `spaces` table (every identity a name ever had), oldest first. Read once per
        version of the table (every search looks its space up; reading the table costs ~3 ms)."""
        return self._space_rows(name)

    def _space_rows(self, name: str | None = None, expect: bool = True) -> list[dict[str, Any]]:
        tbl = self.table("spaces", expect=expect)
        if tbl is None:
            return []
        version = int(tbl.version)
        cached = self._spaces
        if cached is None or cached[0] != version:
            rows = sorted(tbl.to_arrow().to_pylist(), key=lambda r: (r["created_at"], r["space_id"]))
            cached = self._spaces = (version, rows)
        return [dict(r) for r in cached[1] if name is None or r["name"] == name]

    def set_space_status(self, space_id: str, status: str) -> dict[str, Any]:
        """Mark a space ``active`` or ``retired`` (its table and history stay); returns its row."""
        if status not in ("active", "retired"):
            raise ValueError(f"unknown space status {status!r}")
        row = self._one_space(space_id)
        with self.writing("spaces"):
            self.ensure("spaces").update(where=f"space_id = '{row['space_id']}'", values={"status": status})
        return {**row, "status": status}

    def default_space(self, name: str) -> dict[str, Any] | None:
        """The space a name uses unless the user picks a model: the promoted one, else the first."""
        rows = [r for r in self.space_rows(name) if r["status"] == "active"]
        flagged = [r for r in rows if r.get("is_default")]
        return flagged[-1] if flagged else (rows[0] if rows else None)

    def promote(self, space_id: str) -> dict[str, Any]:
        """Make a space the default of its name (the previous default stays, for rollback)."""
        row = self._one_space(space_id)
        if row["status"] != "active":
            raise StoreError(f"space {row['name']} {row['space_id']} is {row['status']}; activate it first")
        tbl = self.ensure("spaces")
        with self.writing("spaces"):
            tbl.update(where=f"name = '{row['name']}'", values={"is_default": False})
            tbl.update(where=f"space_id = '{row['space_id']}'",
                       values={"is_default": True, "default_since": datetime.now(UTC)})
        return {**row, "is_default": True}

    def rollback(self, name: str) -> dict[str, Any]:
        """Make the previously promoted space of ``name`` the default again."""
        current = self.default_space(name)
        earlier = [r for r in self.space_rows(name) if r["status"] == "active" and r.get("default_since")
                   and (current is None or r["space_id"] != current["space_id"])]
        if not earlier:
            raise StoreError(f"space {name!r} has no earlier default to roll back to")
        return self.promote(max(earlier, key=lambda r: r["default_since"])["space_id"])

    def _one_space(self, space_id: str) -> dict[str, Any]:
        matches = [r for r in self.space_rows() if r["space_id"].startswith(space_id)] \
            if _ID_PREFIX.match(space_id) else []
        if len(matches) != 1:
            have = ", ".join(f"{r['name']} {r['space_id']}" for r in self.space_rows()) or "none"
            raise StoreError(f"{'no' if not matches else 'more than one'} space matches {space_id!r} "
                             f"(spaces: {have})")
        return matches[0]

    def vector_tables(self) -> list[tuple[str, str, str]]:
        """(space name, space_id, table name) of every vector table in the store, including those the
        `spaces` table names but that are missing (opening one raises :class:`DamagedTableError`:
        a space without its table is damage, never an empty space)."""
        names = set(self.table_names()) | {r["table_name"] for r in self.space_rows() if r.get("table_name")}
        out = []
        for table in sorted(names):
            parsed = parse_vectors_table(table)
            if parsed:
                out.append((parsed[0], parsed[1], table))
        return out

    def vectors_table(self, name: str, space_id: str, dimension: int, recipe: dict[str, Any]) -> Any:
        """The space's vector table, created with the recipe in its schema metadata."""
        table_name = vectors_table_name(name, space_id)
        tbl = self.table(table_name)
        want = vectors_schema(dimension)
        if tbl is None:
            meta = {RECIPE_KEY: json.dumps(recipe, sort_keys=True), SPACE_ID_KEY: space_id}
            return self.ensure(table_name, vectors_schema(dimension, meta), "vector_id")
        missing = [f for f in want if f.name not in tbl.schema.names]
        if missing:  # a store written by an older omnivec: add the new (nullable) columns
            with self.writing(table_name):
                tbl.add_columns(pa.schema(missing))
        self._ensure_key(tbl, "vector_id")
        return tbl

    def embedded_hashes(self, name: str, space_id: str) -> dict[str, str]:
        """item_id -> content_hash of the vectors a space holds (what is already embedded)."""
        rows = self.read(vectors_table_name(name, space_id), ["item_id", "content_hash"])
        if rows.num_rows == 0:
            return {}
        return dict(zip(rows.column("item_id").to_pylist(), rows.column("content_hash").to_pylist(),
                        strict=True))

    def refresh_text_index(self, table_name: str, column: str = "text") -> bool:
        """(Re)build the BM25 full-text index over a vector table's text chunks, if it has any."""
        tbl = self.table(table_name)
        if tbl is None or not tbl.count_rows(f"{column} IS NOT NULL"):
            return False
        from lancedb.index import FTS

        with self.writing(table_name):
            tbl.create_index(column, config=FTS(), replace=True)
        return True

    def text_index_stale(self, table_name: str, column: str = "text") -> bool:
        """Whether a table holds text its full-text index does not cover (no index yet, or rows
        written after it was built: a run that died before refreshing it leaves such a table)."""
        tbl = self.table(table_name)
        if tbl is None or column not in tbl.schema.names:
            return False
        fts = [i for i in tbl.list_indices() if i.index_type == "FTS" and list(i.columns) == [column]]
        if not fts:
            return bool(tbl.count_rows(f"{column} IS NOT NULL"))
        stats = tbl.index_stats(fts[0].name)
        return stats is not None and int(stats.num_unindexed_rows or 0) > 0

    # -- versions -----------------------------------------------------------------------------
    def versions(self) -> dict[str, int]:
        out = {}
        for name in self.table_names():
            tbl = self.table(name)
            if tbl is not None:
                out[name] = int(tbl.version)
        return out

    def tag_all(self, tag: str) -> dict[str, int]:
        """Tag the latest version of every table with ``tag``; returns the tagged versions."""
        tagged = {}
        for name, version in self.versions().items():
            tbl = self._tables[name]
            if tag not in tbl.tags.list():
                with self.writing(name, f"the tag {tag} of table {name}"):
                    tbl.tags.create(tag, version)
            tagged[name] = version
        return tagged
