"""The LanceDB store: opening tables, keyed upserts, deletions, version tags and space checks."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from omnivec.errors import StoreError
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


def _is_remote(uri: str) -> bool:
    return "://" in uri


def storage_options(uri: str) -> dict[str, str]:
    """Object-store options from the usual AWS variables: an ``AWS_ENDPOINT_URL`` (S3-compatible
    servers such as MinIO) and plain http for such an endpoint. Credentials and region are read by
    the object-store client itself (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, profiles)."""
    if not uri.startswith(("s3://", "s3a://")):
        return {}
    opts: dict[str, str] = {}
    endpoint = (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
                or os.environ.get("AWS_ENDPOINT"))
    if endpoint:
        opts["aws_endpoint"] = endpoint
        if endpoint.startswith("http://"):
            opts["allow_http"] = "true"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        opts["aws_region"] = region
    return opts


def brief(exc: BaseException, limit: int = 400) -> str:
    """An object-store error without the Rust location and backtrace that follow its message."""
    text = str(exc)
    status = re.search(r"status: (\d{3})", text)
    known = {"404": "no such bucket (HTTP 404)", "403": "access denied (HTTP 403)",
             "301": "the bucket is in another region (HTTP 301)"}
    if status and status.group(1) in known:
        return known[status.group(1)]
    if "BadScheme" in text:
        return "the endpoint's scheme is not allowed (use http:// or https:// in AWS_ENDPOINT_URL)"
    if "Connection refused" in text or "ConnectError" in text or "error sending request" in text:
        return "the object store did not answer (connection refused)"
    for marker in (", location: Location", " backtrace:"):
        if marker in text:
            text = text[:text.index(marker)]
    return text if len(text) <= limit else text[:limit] + "..."


class Store:
    """A folder (or object-store prefix) of LanceDB tables.

    ``create=False`` opens an existing store for reading and raises :class:`StoreError` when
    there is none; ``create=True`` makes the folder and checks it is writable.
    """

    def __init__(self, uri: str | os.PathLike[str], create: bool = False) -> None:
        import lancedb

        self.uri = os.fspath(uri)
        if not _is_remote(self.uri):
            self.uri = os.path.abspath(self.uri)
            self._check_local(create)
        try:
            self.db = lancedb.connect(self.uri, storage_options=storage_options(self.uri) or None)
            if _is_remote(self.uri):
                self.table_names()  # reach the bucket now: a wrong endpoint or bucket fails here, clearly
        except Exception as exc:
            hint = (" (check the bucket exists, AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                    "and AWS_REGION)") if _is_remote(self.uri) else ""
            raise StoreError(f"store {self.uri} cannot be opened: {brief(exc)}{hint}") from None
        self._tables: dict[str, Any] = {}

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

    # -- tables -------------------------------------------------------------------------------
    def table_names(self) -> list[str]:
        names: list[str] = []
        token = None
        while True:
            resp = self.db.list_tables(page_token=token)
            names += list(resp.tables)
            token = resp.page_token
            if not token:
                return sorted(names)

    def table(self, name: str) -> Any | None:
        """The table, reopened at its latest version, or None when it does not exist yet."""
        if name in self._tables:
            tbl = self._tables[name]
            tbl.checkout_latest()
            return tbl
        if name not in self.table_names():
            return None
        tbl = self.db.open_table(name)
        self._tables[name] = tbl
        return tbl

    def ensure(self, name: str, schema: pa.Schema | None = None, key: str | None = None) -> Any:
        tbl = self.table(name)
        if tbl is not None:
            want = schema if schema is not None else SCHEMAS.get(name)
            missing = [f for f in want if f.name not in tbl.schema.names] if want is not None else []
            if missing:  # a store written by an older omnivec: add the new (nullable) columns
                tbl.add_columns(pa.schema([f.with_nullable(True) for f in missing]))
            return tbl
        schema = schema if schema is not None else SCHEMAS[name]
        key = key or KEYS[name]
        try:
            tbl = self.db.create_table(name, schema=schema, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"table {name} cannot be created in {self.uri}: {exc}") from exc
        with contextlib.suppress(Exception):  # another writer may have set it first
            tbl.set_unenforced_primary_key(key)  # type: ignore[attr-defined]  # concurrent upserts of one new key stay one row
        self._tables[name] = tbl
        return tbl

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
    def upsert(self, name: str, rows: pa.Table, replace_where: str | None = None, key: str | None = None) -> int | None:
        """Merge rows by the table's key in one commit; optionally delete, in the same commit,
        rows matching ``replace_where`` that the new rows do not carry. Returns the version."""
        if rows.num_rows == 0 and not replace_where:
            return None
        tbl = self.ensure(name) if name in SCHEMAS else self.table(name)
        if tbl is None:
            raise StoreError(f"table {name} does not exist in {self.uri}")
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
            tbl.delete(where)

    # -- spaces -------------------------------------------------------------------------------
    def space_rows(self, name: str | None = None) -> list[dict[str, Any]]:
        """Rows of the `spaces` table (every identity a name ever had), oldest first."""
        rows = [r for r in self.read("spaces").to_pylist() if name is None or r["name"] == name]
        return sorted(rows, key=lambda r: (r["created_at"], r["space_id"]))

    def set_space_status(self, space_id: str, status: str) -> dict[str, Any]:
        """Mark a space ``active`` or ``retired`` (its table and history stay); returns its row."""
        if status not in ("active", "retired"):
            raise ValueError(f"unknown space status {status!r}")
        row = self._one_space(space_id)
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
        """(space name, space_id, table name) of every vector table in the store."""
        out = []
        for table in self.table_names():
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
            tbl.add_columns(pa.schema(missing))
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

        tbl.create_index(column, config=FTS(), replace=True)
        return True

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
                tbl.tags.create(tag, version)
            tagged[name] = version
        return tagged
