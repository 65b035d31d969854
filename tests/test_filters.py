"""Tests for omnivec.filters: parsing key=value filters, SQL generation, injection attempts, and the SQL
run against a real LanceDB table (plain scans and prefiltered vector search)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from omnivec.filters import (
    ALLOWED_KEYS,
    MAX_GLOB_LENGTH,
    Filter,
    FilterError,
    glob_to_like,
    parse_filters,
    to_sql,
)

RUN_A = "a" * 8
RUN_B = "0123456789abcdef"
RUN_C = "c" * 64
RUNS = {"nightly": RUN_A, "manual.2024-02": RUN_B, "backfill_c": RUN_C}


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


# id, uri, modality, created_at, run_id, vector (query is ones(4), cosine)
ROWS: list[tuple[str, str, str, datetime, str, list[float]]] = [
    ("p1", "/data/photos/beach.jpg", "image", ts(2024, 1, 1), RUN_A, [1, 1, 1, 0.9]),
    ("p2", "/data/photos/beach.png", "image", ts(2024, 1, 15, 12), RUN_A, [1, 1, 0.5, 0.2]),
    ("p3", "/data/photos/sub/deep.jpg", "image", ts(2024, 2, 1), RUN_B, [0, 1, 0, 0]),
    ("p4", "/data/photos/it's.jpg", "image", ts(2024, 2, 1, 0, 0, 0, 1), RUN_B, [1, 0, 0, 0]),
    ("p5", "/data/photos/back\\slash.jpg", "image", ts(2024, 2, 10), RUN_B, [0, 0, 1, 0]),
    ("p6", "/data/other/photos.jpg", "image", ts(2024, 2, 10), RUN_C, [0, 0, 0, 1]),
    ("p7", "/DATA/PHOTOS/UPPER.JPG", "image", ts(2024, 3, 2), RUN_C, [1, 0, 0, 0]),
    ("t1", "/data/docs/100%_done.txt", "text", ts(2024, 3, 1), RUN_C, [1, 1, 1, 1]),
    ("t2", "/data/docs/100abXdone.txt", "text", ts(2024, 3, 1), RUN_C, [1, 1, 1, 1]),
    ("t3", "/data/docs/100%Xdone.txt", "text", ts(2024, 3, 1), RUN_C, [1, 1, 1, 1]),
    ("t4", "/data/docs/[draft].txt", "text", ts(2024, 3, 1), RUN_C, [1, 1, 1, 1]),
    ("a1", "/data/audio/song.wav", "audio", ts(2024, 3, 2), RUN_C, [1, 1, 1, 1]),
]
ALL = {row[0] for row in ROWS}
IMAGES = {row[0] for row in ROWS if row[2] == "image"}

SCHEMA = pa.schema([
    pa.field("item_id", pa.string()),
    pa.field("uri", pa.string()),
    pa.field("modality", pa.string()),
    pa.field("created_at", pa.timestamp("us", tz="UTC")),
    pa.field("run_id", pa.string()),
    pa.field("vector", pa.list_(pa.float32(), 4)),
])


@pytest.fixture
def table(tmp_path: Path) -> Any:
    import lancedb

    db = lancedb.connect(str(tmp_path / "db"))
    columns = list(zip(*ROWS, strict=True))
    arrays = [pa.array(list(col), type=field.type) for col, field in zip(columns, SCHEMA, strict=True)]
    data = pa.Table.from_arrays(arrays, schema=SCHEMA)
    return db.create_table("items", data=data)


def where(table: Any, exprs: list[str]) -> set[str]:
    """Ids of the rows the filter keeps, by a plain (non-vector) scan."""
    sql = to_sql(parse_filters(exprs, RUNS))
    assert sql is not None
    return set(table.search().where(sql).limit(None).to_arrow()["item_id"].to_pylist())


def assert_rejected(exprs: list[str], *needles: str, runs: dict[str, str] | None = None) -> FilterError:
    with pytest.raises(FilterError) as info:
        parse_filters(exprs, RUNS if runs is None else runs)
    for needle in needles:
        assert needle in str(info.value), f"{needle!r} not in {str(info.value)!r}"
    return info.value


# --------------------------------------------------------------------------- parsing


def test_no_expressions_means_no_condition() -> None:
    assert parse_filters([]) == Filter(None, None, None, None, None)
    assert to_sql(parse_filters([])) is None
    assert to_sql(Filter()) is None


def test_parse_every_key() -> None:
    f = parse_filters(
        ["modality=image", "uri=*/photos/*.jpg", "after=2024-01-01", "before=2024-02-01T12:30:00", "run=nightly"],
        RUNS,
    )
    assert f == Filter(
        modality="image",
        uri_glob="*/photos/*.jpg",
        after=ts(2024, 1, 1),
        before=ts(2024, 2, 1, 12, 30),
        run_ids=(RUN_A,),
    )


def test_sql_of_every_key() -> None:
    f = parse_filters(["modality=text", "uri=*.txt", "after=2024-01-01", "before=2024-02-01", "run=nightly"], RUNS)
    assert to_sql(f) == (
        "(modality = 'text') AND (uri LIKE '%.txt' ESCAPE '\\') AND "
        "(created_at >= timestamp '2024-01-01 00:00:00.000000') AND "
        "(created_at < timestamp '2024-02-01 00:00:00.000000') AND "
        f"(run_id = '{RUN_A}')"
    )


@pytest.mark.parametrize(
    ("expr", "sql"),
    [
        ("modality=image", "modality = 'image'"),
        ("modality=audio", "modality = 'audio'"),
        ("uri=*/photos/*.jpg", "uri LIKE '%/photos/%.jpg' ESCAPE '\\'"),
        ("uri=/data/?.wav", "uri LIKE '/data/_.wav' ESCAPE '\\'"),
        ("after=2024-03-05T06:07:08.000009", "created_at >= timestamp '2024-03-05 06:07:08.000009'"),
        ("before=2024-03-05", "created_at < timestamp '2024-03-05 00:00:00.000000'"),
        ("run=manual.2024-02", f"run_id = '{RUN_B}'"),
    ],
)
def test_single_expression_sql(expr: str, sql: str) -> None:
    assert to_sql(parse_filters([expr], RUNS)) == sql


def test_a_single_string_is_one_expression() -> None:
    assert parse_filters("modality=audio") == Filter(modality="audio")  # type: ignore[arg-type]


def test_glob_with_percent_underscore_and_backslash_is_escaped() -> None:
    assert glob_to_like("100%_done.txt") == "100\\%\\_done.txt"
    assert glob_to_like("a\\b") == "a\\\\b"
    assert glob_to_like("*?[x]") == "%_[x]"
    sql = to_sql(parse_filters(["uri=*/100%_d?ne*.txt"]))
    assert sql == "uri LIKE '%/100\\%\\_d_ne%.txt' ESCAPE '\\'"


def test_uri_value_may_contain_equals_and_spaces() -> None:
    # Only the first '=' separates key and value; the rest is part of the glob.
    f = parse_filters(["uri=*/a=b c/*"])
    assert f.uri_glob == "*/a=b c/*"
    assert to_sql(f) == "uri LIKE '%/a=b c/%' ESCAPE '\\'"


def test_spaces_around_the_key_are_ignored() -> None:
    assert parse_filters([" modality=image"]) == Filter(modality="image")


def test_date_alone_is_midnight_utc_and_naive_is_utc() -> None:
    f = parse_filters(["after=2024-02-01", "before=2024-02-03T04:05"])
    assert f.after == ts(2024, 2, 1)
    assert f.before == ts(2024, 2, 3, 4, 5)
    assert f.after.tzinfo is not None and f.after.utcoffset() == timedelta(0)


def test_offsets_are_converted_to_utc_not_echoed() -> None:
    f = parse_filters(["after=2024-02-01T01:00:00+01:00", "before=2024-01-31T23:30:00-05:00"])
    assert f.after == ts(2024, 2, 1)
    assert f.before == ts(2024, 2, 1, 4, 30)
    sql = to_sql(f)
    assert sql is not None
    assert "timestamp '2024-02-01 00:00:00.000000'" in sql
    assert "timestamp '2024-02-01 04:30:00.000000'" in sql
    assert "+01:00" not in sql and "T01" not in sql
    zulu = to_sql(parse_filters(["after=2024-02-01T00:00:00Z"]))
    assert zulu == "created_at >= timestamp '2024-02-01 00:00:00.000000'"


def test_to_sql_formats_years_below_1000_with_four_digits() -> None:
    assert to_sql(Filter(after=ts(5, 1, 2))) == "created_at >= timestamp '0005-01-02 00:00:00.000000'"


def test_after_equal_to_before_is_allowed_and_after_later_is_rejected() -> None:
    assert parse_filters(["after=2024-01-01", "before=2024-01-01"]).after == ts(2024, 1, 1)
    assert_rejected(["after=2024-01-02", "before=2024-01-01"], "after", "later than before")
    # compared in UTC: 01:00+02:00 is 23:00 UTC of the day before, so this range is valid
    assert parse_filters(["after=2024-01-02T01:00:00+02:00", "before=2024-01-02T00:00:00"]).before == ts(2024, 1, 2)
    with pytest.raises(FilterError, match="later than before"):
        to_sql(Filter(after=ts(2024, 5, 1), before=ts(2024, 4, 1)))


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "2024-02-30", "01/02/2024", "2024-01-01T25:00", "now"])
def test_bad_dates_are_rejected(value: str) -> None:
    assert_rejected([f"after={value}"], "after=", "ISO-8601")
    assert_rejected([f"before={value}"], "before=", "ISO-8601")


@pytest.mark.parametrize("value", ["IMAGE", "Image", "images", "video", " image", "image ", "*"])
def test_bad_modality_lists_the_allowed_values(value: str) -> None:
    assert_rejected([f"modality={value}"], "unknown modality", "image, text, audio")


# --------------------------------------------------------------------------- malformed expressions


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("modality", "has no '='"),
        ("image", "has no '='"),
        ("", "has no '='"),
        ("modality=", "empty value"),
        ("uri=", "empty value"),
        ("run=", "empty value"),
        ("colour=red", "unknown key 'colour'"),
        ("Modality=image", "unknown key 'Modality'"),
        ("=image", "unknown key ''"),
        ("modality:image", "has no '='"),
    ],
)
def test_malformed_expressions_name_the_expression_and_list_the_keys(expr: str, problem: str) -> None:
    err = assert_rejected([expr], problem, repr(expr), "modality, uri, after, before, run")
    assert all(key in err.render() for key in ALLOWED_KEYS)


def test_each_key_at_most_once() -> None:
    assert_rejected(["modality=image", "modality=text"], "'modality' is given twice")
    assert_rejected(["uri=*.jpg", "modality=image", "uri=*.png"], "'uri' is given twice")
    assert_rejected(["run=nightly", "run=nightly"], "'run' is given twice")


def test_non_string_expression_is_rejected() -> None:
    assert_rejected([42], "not a string")  # type: ignore[list-item]


# --------------------------------------------------------------------------- uri glob limits


def test_glob_length_limit() -> None:
    ok = "*" + "a" * (MAX_GLOB_LENGTH - 1)
    assert parse_filters([f"uri={ok}"]).uri_glob == ok
    assert_rejected([f"uri={ok}a"], "1001 characters", "limit is 1000")


@pytest.mark.parametrize(
    "glob",
    ["*\x00.jpg", "*\n.jpg", "*\r", "\t*", "*\x1b[2J", "*\x7f", "*\x85*", "*\ud800*"],
)
def test_glob_with_control_characters_is_rejected(glob: str) -> None:
    err = assert_rejected([f"uri={glob}"])
    assert any(word in str(err) for word in ("NUL", "control character", "surrogate"))
    with pytest.raises(FilterError):
        to_sql(Filter(uri_glob=glob))


# --------------------------------------------------------------------------- runs


def test_unknown_run_lists_known_names() -> None:
    assert_rejected(["run=weekly"], "unknown run 'weekly'", "backfill_c, manual.2024-02, nightly")


def test_unknown_run_lists_at_most_ten_names() -> None:
    runs = {f"run{i:02d}": f"{i:08x}" for i in range(12)}
    err = assert_rejected(["run=other"], "run00", "run09", "and 2 more", runs=runs)
    assert "run10" not in str(err) and "run11" not in str(err)


def test_run_without_a_map_is_unknown() -> None:
    with pytest.raises(FilterError, match="no runs"):
        parse_filters(["run=nightly"])


@pytest.mark.parametrize("name", ["-x", ".x", "_x", "a b", "a/b", "a" * 129, "név", "a;b", "a'b"])
def test_bad_run_names_are_rejected(name: str) -> None:
    assert_rejected([f"run={name}"], "not a valid run name", runs={name: RUN_A})


def test_longest_run_name_is_accepted() -> None:
    name = "a" * 128
    assert parse_filters([f"run={name}"], {name: RUN_B}).run_ids == (RUN_B,)


@pytest.mark.parametrize("run_id", ["abc", "A" * 8, "g" * 8, "a" * 65, "aaaaaaaa' OR '1'='1", "aaaaaaaa\n", ""])
def test_bad_run_id_from_the_caller_is_rejected(run_id: str) -> None:
    assert_rejected(["run=nightly"], "invalid run_id", runs={"nightly": run_id})
    with pytest.raises(FilterError, match="invalid run_id"):
        to_sql(Filter(run_ids=(run_id,)))


def test_several_run_ids_become_in_list() -> None:
    assert to_sql(Filter(run_ids=(RUN_A, RUN_B, RUN_A))) == f"run_id IN ('{RUN_A}', '{RUN_B}')"
    with pytest.raises(FilterError, match="non-empty"):
        to_sql(Filter(run_ids=()))


# --------------------------------------------------------------------------- injection attempts


@pytest.mark.parametrize(
    "expr",
    [
        "modality=image' OR '1'='1",
        "uri=*' OR 1=1 --",
        "run=x'; DROP TABLE items; --",
        "after=2024-01-01' OR '1'='1",
        "before=2024-01-01'; DELETE FROM items; --",
        "modality=IMAGE; DELETE",
        "modality=image; DELETE FROM items",
        "modality=image\x00",
        "uri=*\x00' OR 1=1",
        "\x00modality=image",
        "run=nightly\x00",
        "run=nightly' OR run_id != '",
        "uri=*'",
        "uri=''",
        "modality=image\n OR 1=1",
    ],
)
def test_injection_attempts_raise_and_produce_no_sql(expr: str) -> None:
    runs = dict(RUNS, x=RUN_A)
    with pytest.raises(FilterError):
        parse_filters([expr], runs)


@pytest.mark.parametrize(
    "f",
    [
        Filter(modality="image' OR '1'='1"),
        Filter(uri_glob="*' OR 1=1 --"),
        Filter(uri_glob="a\x00"),
        Filter(run_ids=("aaaaaaaa' OR '1'='1",)),
        Filter(run_ids="aaaaaaaa"),  # type: ignore[arg-type]
        Filter(after="2024-01-01' OR '1'='1"),  # type: ignore[arg-type]
        Filter(before=123),  # type: ignore[arg-type]
        Filter(uri_glob=7),  # type: ignore[arg-type]
    ],
)
def test_hand_built_filters_are_validated_by_to_sql(f: Filter) -> None:
    with pytest.raises(FilterError):
        to_sql(f)


def test_sql_keywords_inside_a_valid_glob_stay_inside_the_literal(table: Any) -> None:
    f = parse_filters(["uri=*; DROP TABLE items; --*"])
    sql = to_sql(f)
    assert sql == "uri LIKE '%; DROP TABLE items; --%' ESCAPE '\\'"
    assert sql.count("'") == 4  # the pattern's two quotes and the ESCAPE literal's two
    assert table.search().where(sql).limit(None).to_arrow().num_rows == 0
    assert table.count_rows() == len(ROWS)


# --------------------------------------------------------------------------- against a real LanceDB table


def test_modality_filter_on_lancedb(table: Any) -> None:
    assert where(table, ["modality=image"]) == IMAGES
    assert where(table, ["modality=text"]) == {"t1", "t2", "t3", "t4"}
    assert where(table, ["modality=audio"]) == {"a1"}


def test_uri_glob_on_lancedb(table: Any) -> None:
    # '*' also crosses '/', so sub/deep.jpg matches; the match is case-sensitive and anchored.
    assert where(table, ["uri=*/photos/*.jpg"]) == {"p1", "p3", "p4", "p5"}
    assert where(table, ["uri=/data/photos/beach.*"]) == {"p1", "p2"}
    assert where(table, ["uri=/data/photos/beach.?pg"]) == {"p1"}
    assert where(table, ["uri=/data/photos/beach.??g"]) == {"p1", "p2"}
    assert where(table, ["uri=*.JPG"]) == {"p7"}
    assert where(table, ["uri=photos"]) == set()
    assert where(table, ["uri=*"]) == ALL


def test_glob_percent_and_underscore_match_literally_on_lancedb(table: Any) -> None:
    # Unescaped, '100%_done' would also match 100abXdone (t2) and 100%Xdone (t3).
    assert where(table, ["uri=*/100%_done.txt"]) == {"t1"}
    assert where(table, ["uri=*/100?done.txt"]) == set()
    assert where(table, ["uri=*/100%?done.txt"]) == {"t1", "t3"}
    assert where(table, ["uri=*/100*done.txt"]) == {"t1", "t2", "t3"}
    assert where(table, ["uri=*_*"]) == {"t1"}  # the only URI with a literal underscore
    assert where(table, ["uri=*%*"]) == {"t1", "t3"}


def test_glob_backslash_brackets_and_quoted_names_on_lancedb(table: Any) -> None:
    assert where(table, ["uri=*back\\slash*"]) == {"p5"}
    assert where(table, ["uri=*/[draft].txt"]) == {"t4"}  # no character classes: brackets are literal
    assert where(table, ["uri=*/[d]raft.txt"]) == set()
    assert where(table, ["uri=*/it?s.jpg"]) == {"p4"}  # a quote in a file name is reached with '?'


def test_time_range_on_lancedb_after_inclusive_before_exclusive(table: Any) -> None:
    assert where(table, ["after=2024-02-01"]) == ALL - {"p1", "p2"}  # p3 is exactly 2024-02-01: kept
    assert where(table, ["before=2024-02-01"]) == {"p1", "p2"}  # p3 exactly at the bound: dropped
    assert where(table, ["after=2024-02-01T00:00:00.000001"]) == ALL - {"p1", "p2", "p3"}
    assert where(table, ["before=2024-02-01T00:00:00.000002"]) == {"p1", "p2", "p3", "p4"}
    assert where(table, ["after=2024-01-15T12:00", "before=2024-02-10"]) == {"p2", "p3", "p4"}
    assert where(table, ["after=2024-02-01T01:00:00+01:00", "before=2024-02-01T01:00:00.000001+01:00"]) == {"p3"}
    assert where(table, ["after=2024-03-01", "before=2024-03-01"]) == set()
    assert where(table, ["after=2030-01-01"]) == set()


def test_run_filter_on_lancedb(table: Any) -> None:
    assert where(table, ["run=nightly"]) == {"p1", "p2"}
    assert where(table, ["run=manual.2024-02"]) == {"p3", "p4", "p5"}
    sql = to_sql(Filter(run_ids=(RUN_A, RUN_B)))
    assert sql is not None
    got = set(table.search().where(sql).limit(None).to_arrow()["item_id"].to_pylist())
    assert got == {"p1", "p2", "p3", "p4", "p5"}


def test_combined_filters_on_lancedb(table: Any) -> None:
    assert where(table, ["modality=image", "uri=*.jpg", "after=2024-02-01"]) == {"p3", "p4", "p5", "p6"}
    four = ["modality=image", "uri=*/photos/*.jpg", "run=manual.2024-02", "before=2024-02-10"]
    assert where(table, four) == {"p3", "p4"}
    assert where(table, ["modality=text", "run=nightly"]) == set()
    everything = ["modality=text", "uri=*/100%*", "after=2024-03-01", "before=2024-03-02", "run=backfill_c"]
    assert where(table, everything) == {"t1", "t3"}


def test_prefiltered_vector_search_on_lancedb(table: Any) -> None:
    query = np.ones(4, dtype=np.float32)
    sql = to_sql(parse_filters(["modality=image"]))
    rows = table.search(query).distance_type("cosine").where(sql, prefilter=True).limit(10).to_list()
    assert {r["item_id"] for r in rows} == IMAGES
    distances = [r["_distance"] for r in rows]
    assert distances == sorted(distances)
    assert [r["item_id"] for r in rows[:2]] == ["p1", "p2"]


def test_prefilter_finds_matches_beyond_the_unfiltered_top_k(table: Any) -> None:
    # The five text/audio rows are identical to the query (distance 0); with prefilter the search still
    # returns the two nearest images instead of an empty page.
    query = np.ones(4, dtype=np.float32)
    sql = to_sql(parse_filters(["modality=image", "run=nightly"], RUNS))
    rows = table.search(query).distance_type("cosine").where(sql, prefilter=True).limit(2).to_list()
    assert [r["item_id"] for r in rows] == ["p1", "p2"]
    assert all(r["_distance"] > 0 for r in rows)

    sql = to_sql(parse_filters(["uri=*/photos/*.jpg", "after=2024-02-01"]))
    rows = table.search(query).distance_type("cosine").where(sql, prefilter=True).limit(10).to_list()
    assert {r["item_id"] for r in rows} == {"p3", "p4", "p5"}


def test_hand_built_datetimes_in_other_zones_or_naive_give_utc_sql() -> None:
    tokyo = timezone(timedelta(hours=9))
    expected = "created_at >= timestamp '2024-02-01 00:00:00.000000'"
    assert to_sql(Filter(after=ts(2024, 2, 1))) == expected
    assert to_sql(Filter(after=datetime(2024, 2, 1, 9, tzinfo=tokyo))) == expected
    assert to_sql(Filter(after=datetime(2024, 2, 1))) == expected  # naive means UTC
