"""Arrow schemas of the store's tables. Key columns come first and are never null."""

from __future__ import annotations

import re

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

ITEMS = pa.schema([
    pa.field("item_id", pa.string(), nullable=False),
    pa.field("uri", pa.string(), nullable=False),
    pa.field("modality", pa.string(), nullable=False),
    pa.field("content_hash", pa.string()),
    pa.field("size", pa.int64()),
    pa.field("mtime_ns", pa.int64()),
    pa.field("status", pa.string()),  # ok | pending | error
    pa.field("first_run", pa.string()),
    pa.field("last_run", pa.string()),
    pa.field("updated_at", TS),
])

ERRORS = pa.schema([
    pa.field("error_id", pa.string(), nullable=False),  # item_id:space (or item_id:* for decode)
    pa.field("item_id", pa.string(), nullable=False),
    pa.field("uri", pa.string(), nullable=False),
    pa.field("content_hash", pa.string()),
    pa.field("modality", pa.string()),
    pa.field("space", pa.string()),
    pa.field("stage", pa.string()),  # discover | read | decode | prepare | encode
    pa.field("error_class", pa.string()),
    pa.field("message", pa.string()),
    pa.field("attempts", pa.int32()),
    pa.field("run_id", pa.string()),
    pa.field("created_at", TS),
])

SPACES = pa.schema([
    pa.field("name", pa.string(), nullable=False),
    pa.field("space_id", pa.string(), nullable=False),
    pa.field("encoder", pa.string()),
    pa.field("model", pa.string()),
    pa.field("pretrained", pa.string()),
    pa.field("dimension", pa.int32()),
    pa.field("modalities", pa.list_(pa.string())),
    pa.field("recipe", pa.string()),  # JSON
    pa.field("table_name", pa.string()),
    pa.field("status", pa.string()),  # active | retired
    pa.field("created_at", TS),
    pa.field("settings", pa.string()),  # JSON of the space's settings: how to load its encoder again
    pa.field("is_default", pa.bool_()),  # the space a name uses unless the user picks a model
    pa.field("default_since", TS),
])

RUNS = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("run_name", pa.string()),
    pa.field("started_at", TS),
    pa.field("ended_at", TS),
    pa.field("status", pa.string()),
    pa.field("sources", pa.string()),  # JSON list
    pa.field("counts", pa.string()),  # JSON {modality: {new, changed, ...}}
    pa.field("versions", pa.string()),  # JSON {table: version}
    pa.field("tag", pa.string()),
    pa.field("seconds", pa.float64()),
])

ASSETS = pa.schema([
    pa.field("asset_id", pa.string(), nullable=False),
    pa.field("key", pa.string(), nullable=False),  # folder/stem, or manifest#id
    pa.field("rule", pa.string()),  # stem | manifest
    pa.field("member_ids", pa.list_(pa.string())),
    pa.field("member_uris", pa.list_(pa.string())),
    pa.field("member_modalities", pa.list_(pa.string())),
    pa.field("run_id", pa.string()),
    pa.field("updated_at", TS),
])

KEYS = {"items": "item_id", "errors": "error_id", "spaces": "space_id", "runs": "run_id", "assets": "asset_id"}
SCHEMAS = {"items": ITEMS, "errors": ERRORS, "spaces": SPACES, "runs": RUNS, "assets": ASSETS}


def asset_vectors_schema(dimension: int) -> pa.Schema:
    return pa.schema([
        pa.field("asset_id", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("space_id", pa.string()),
        pa.field("member_uris", pa.list_(pa.string())),
        pa.field("members_used", pa.int32()),  # members with a vector in this space
        pa.field("vector", pa.list_(pa.float32(), dimension)),
        pa.field("updated_at", TS),
    ])


def asset_table_name(space: str, space_id: str) -> str:
    return f"assets_{space}_{space_id}"


def vectors_schema(dimension: int, metadata: dict[str, str] | None = None) -> pa.Schema:
    fields = [
        pa.field("vector_id", pa.string(), nullable=False),  # item_id:segment
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("content_hash", pa.string()),
        pa.field("space_id", pa.string()),
        pa.field("segment", pa.int32()),  # -1: the file's pooled vector (audio)
        pa.field("char_start", pa.int32()),  # text chunks: offsets in the decoded text
        pa.field("char_end", pa.int32()),
        pa.field("start_s", pa.float32()),  # audio windows: seconds in the file
        pa.field("end_s", pa.float32()),
        pa.field("text", pa.string()),  # text chunks: the chunk itself, for display
        pa.field("vector", pa.list_(pa.float32(), dimension)),
        pa.field("run_id", pa.string()),
        pa.field("created_at", TS),
    ]
    meta = {k.encode(): v.encode() for k, v in (metadata or {}).items()}
    return pa.schema(fields, metadata=meta or None)


_VECTORS_TABLE = re.compile(r"^vectors_([a-z_][a-z0-9_]*)_([0-9a-f]{12})$")


def vectors_table_name(space: str, space_id: str) -> str:
    """One table per space *identity*: a new model under the same name gets a table of its own."""
    return f"vectors_{space}_{space_id}"


def parse_vectors_table(table: str) -> tuple[str, str] | None:
    """(space name, space_id) of a vector table's name, or None for other tables."""
    m = _VECTORS_TABLE.match(table)
    return (m.group(1), m.group(2)) if m else None
