"""A small, validated metadata filter language, compiled to a LanceDB (DataFusion SQL) where-clause.

Each expression is one ``key=value`` string; several expressions are ANDed, and each key may appear
at most once:

``modality=image|text|audio``
    Exact, lower-case match on the ``modality`` column.
``uri=GLOB``
    A shell-style glob on the ``uri`` column: ``*`` matches any run of characters (including ``/``:
    the match is on the whole URI string, not path-aware), ``?`` exactly one character; every other
    character (``[``, ``]``, ``%``, ``_``, ``\\`` ...) is literal. The match is case-sensitive and
    anchored at both ends, so ``*/photos/*.jpg`` needs the URI to end in ``.jpg``.
``after=ISO-8601`` / ``before=ISO-8601``
    A time range on ``created_at``: ``after`` is inclusive (``>=``), ``before`` is exclusive (``<``),
    so ``after=2024-01-01 before=2024-02-01`` is exactly January 2024. Anything
    ``datetime.fromisoformat`` accepts is allowed, a date alone meaning midnight; a value without an
    offset is UTC, one with an offset is converted to UTC.
``run=NAME``
    Rows written by the run of that name; the caller supplies the name -> run_id map.

Safety: the SQL is never built from user text. Every value is parsed and checked first, and what goes
into the SQL is either a constant from this module, a run_id that matched ``[0-9a-f]{8,64}``, a
timestamp formatted here from a parsed ``datetime``, or a LIKE pattern built from a glob that contains
no quote, NUL or control character, with the LIKE wildcards escaped. `to_sql` re-validates a `Filter`
built by hand, so it is safe on either path.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from omnivec.errors import OmnivecError

__all__ = [
    "ALLOWED_KEYS",
    "glob_to_like",
    "MAX_GLOB_LENGTH",
    "MODALITIES",
    "Filter",
    "FilterError",
    "parse_filters",
    "to_sql",
]

MODALITIES: tuple[str, ...] = ("image", "text", "audio")
ALLOWED_KEYS: tuple[str, ...] = ("modality", "uri", "after", "before", "run")
MAX_GLOB_LENGTH = 1000
MAX_LISTED_RUNS = 10

_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_RUN_ID = re.compile(r"[0-9a-f]{8,64}")
_LIKE_ESCAPE = "\\"


class FilterError(OmnivecError):
    """A filter expression that cannot be used (unknown key, bad value, unknown run...)."""


@dataclass(frozen=True)
class Filter:
    """Parsed filter conditions, all ANDed; ``None`` means "no condition" on that column."""

    modality: str | None = None
    uri_glob: str | None = None
    after: datetime | None = None  # inclusive, aware (UTC)
    before: datetime | None = None  # exclusive, aware (UTC)
    run_ids: tuple[str, ...] | None = None  # matches any of these run_ids


# --------------------------------------------------------------------------- parsing


def _usage() -> str:
    return (
        "write each filter as key=value with key one of: "
        + ", ".join(ALLOWED_KEYS)
        + " (e.g. modality=image, uri='*/photos/*.jpg', after=2024-01-01, before=2024-02-01T12:00, run=nightly)"
    )


def _shown(text: str, limit: int = 80) -> str:
    """A safe, bounded rendering of user text for an error message (repr escapes control characters)."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _bad_char(text: str) -> str | None:
    """Describe the first NUL, control character or lone surrogate in ``text``, or None."""
    for i, ch in enumerate(text):
        category = unicodedata.category(ch)
        if ch == "\0":
            return f"a NUL byte at position {i}"
        if category == "Cc":
            return f"a control character {ch!r} at position {i}"
        if category == "Cs":
            return f"a lone surrogate at position {i}"
    return None


def _check_modality(value: str) -> str:
    if value not in MODALITIES:
        raise FilterError(
            f"unknown modality {_shown(value)} in filter",
            [f"use modality=VALUE with VALUE one of: {', '.join(MODALITIES)} (exact, lower-case)"],
        )
    return value


def _check_glob(glob: str) -> str:
    if not isinstance(glob, str):
        raise FilterError(f"the uri glob must be a string, got {type(glob).__name__}")
    if not glob:
        raise FilterError("the uri glob is empty", ["give a pattern such as uri=*/photos/*.jpg"])
    if len(glob) > MAX_GLOB_LENGTH:
        raise FilterError(
            f"the uri glob is {len(glob)} characters long; the limit is {MAX_GLOB_LENGTH}",
            ["shorten the pattern, using * for the parts that do not matter"],
        )
    if "'" in glob:
        raise FilterError(
            f"the uri glob {_shown(glob)} contains a single quote, which is not allowed",
            ["replace the quote with ? (any one character)"],
        )
    bad = _bad_char(glob)
    if bad is not None:
        raise FilterError(
            f"the uri glob {_shown(glob)} contains {bad}, which is not allowed",
            ["remove it, or replace it with ? (any one character)"],
        )
    return glob


def _parse_time(key: str, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise FilterError(
            f"{key}={_shown(value)} is not an ISO-8601 date or date-time",
            [f"write e.g. {key}=2024-01-31, {key}=2024-01-31T12:00:00 or {key}=2024-01-31T12:00:00+02:00"],
        ) from None
    return _to_utc(key, parsed)


def _to_utc(key: str, moment: datetime) -> datetime:
    if not isinstance(moment, datetime):
        raise FilterError(f"{key} must be a datetime, got {type(moment).__name__}")
    try:
        return moment.replace(tzinfo=UTC) if moment.utcoffset() is None else moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise FilterError(f"{key}={moment.isoformat()} is out of range once converted to UTC") from None


def _check_run_id(run_id: str, name: str | None = None) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        about = f"run {name!r}" if name is not None else "a run"
        raise FilterError(
            f"{about} has an invalid run_id {_shown(str(run_id))} (expected 8-64 lower-case hex digits)",
            ["check the store's runs table; this is a bug in the caller, not in the filter"],
        )
    return run_id


def _resolve_run(name: str, run_ids_by_name: Mapping[str, str] | None) -> str:
    if not _RUN_NAME.fullmatch(name):
        raise FilterError(
            f"run={_shown(name)} is not a valid run name",
            ["a run name starts with a letter or digit and has at most 128 letters, digits, '.', '_' or '-'"],
        )
    known = run_ids_by_name or {}
    if name not in known:
        names = sorted(str(n) for n in known)
        if not names:
            listing = "there are no runs in this store yet"
        else:
            listing = "known runs: " + ", ".join(names[:MAX_LISTED_RUNS])
            if len(names) > MAX_LISTED_RUNS:
                listing += f" (and {len(names) - MAX_LISTED_RUNS} more)"
        raise FilterError(f"unknown run {name!r}; {listing}", ["use the name of a run that wrote to this store"])
    return _check_run_id(known[name], name)


def parse_filters(exprs: Sequence[str], run_ids_by_name: Mapping[str, str] | None = None) -> Filter:
    """Parse ``key=value`` expressions (ANDed) into a `Filter`; raise `FilterError` on anything invalid.

    ``run_ids_by_name`` maps run names to run_ids and is needed only for ``run=NAME``.
    """
    if isinstance(exprs, str):
        exprs = [exprs]
    values: dict[str, str] = {}
    for expr in exprs:
        if not isinstance(expr, str):
            raise FilterError(f"filter {expr!r} is not a string", [_usage()])
        bad = _bad_char(expr)
        if bad is not None:
            raise FilterError(f"filter {_shown(expr)} contains {bad}", ["remove it", _usage()])
        key, sep, value = expr.partition("=")
        key = key.strip()
        if not sep:
            raise FilterError(f"filter {_shown(expr)} has no '='", [_usage()])
        if key not in ALLOWED_KEYS:
            raise FilterError(f"filter {_shown(expr)} has an unknown key {_shown(key)}", [_usage()])
        if value == "":
            raise FilterError(f"filter {_shown(expr)} has an empty value", [_usage()])
        if key in values:
            raise FilterError(
                f"filter key {key!r} is given twice ({_shown(key + '=' + values[key])} and {_shown(expr)})",
                [f"keep one {key}=... expression; separate expressions are ANDed, not ORed"],
            )
        values[key] = value

    after = _parse_time("after", values["after"]) if "after" in values else None
    before = _parse_time("before", values["before"]) if "before" in values else None
    f = Filter(
        modality=_check_modality(values["modality"]) if "modality" in values else None,
        uri_glob=_check_glob(values["uri"]) if "uri" in values else None,
        after=after,
        before=before,
        run_ids=(_resolve_run(values["run"], run_ids_by_name),) if "run" in values else None,
    )
    _check_range(after, before)
    return f


def _check_range(after: datetime | None, before: datetime | None) -> None:
    if after is not None and before is not None and after > before:
        raise FilterError(
            f"after ({after.isoformat()}) is later than before ({before.isoformat()}), so nothing can match",
            ["swap the two values, or drop one of them"],
        )


# --------------------------------------------------------------------------- SQL


def glob_to_like(glob: str) -> str:
    """The LIKE pattern (for ``ESCAPE '\\'``) of a validated glob.

    ``\\``, ``%`` and ``_`` are escaped with a backslash, then ``*`` becomes ``%`` and ``?`` becomes ``_``.
    """
    out = []
    for ch in glob:
        if ch in ("\\", "%", "_"):
            out.append(_LIKE_ESCAPE + ch)
        elif ch == "*":
            out.append("%")
        elif ch == "?":
            out.append("_")
        else:
            out.append(ch)
    return "".join(out)


def _sql_timestamp(moment: datetime) -> str:
    """``timestamp 'YYYY-MM-DD HH:MM:SS.ffffff'`` in UTC, formatted from the fields (never from input text)."""
    u = moment.astimezone(UTC)
    return (
        f"timestamp '{u.year:04d}-{u.month:02d}-{u.day:02d} "
        f"{u.hour:02d}:{u.minute:02d}:{u.second:02d}.{u.microsecond:06d}'"
    )


def to_sql(f: Filter) -> str | None:
    """The LanceDB where-clause for ``f`` (conditions ANDed), or None when it has no condition.

    Every field is re-validated, so a `Filter` built by hand cannot smuggle SQL in; `FilterError` if invalid.
    """
    clauses: list[str] = []
    if f.modality is not None:
        clauses.append(f"modality = '{_check_modality(f.modality)}'")
    if f.uri_glob is not None:
        clauses.append(f"uri LIKE '{glob_to_like(_check_glob(f.uri_glob))}' ESCAPE '{_LIKE_ESCAPE}'")
    after = _to_utc("after", f.after) if f.after is not None else None
    before = _to_utc("before", f.before) if f.before is not None else None
    _check_range(after, before)
    if after is not None:
        clauses.append(f"created_at >= {_sql_timestamp(after)}")
    if before is not None:
        clauses.append(f"created_at < {_sql_timestamp(before)}")
    if f.run_ids is not None:
        if isinstance(f.run_ids, str) or not f.run_ids:
            raise FilterError("run_ids must be a non-empty tuple of run_ids", ["leave it None for no run condition"])
        ids = [_check_run_id(r) for r in dict.fromkeys(f.run_ids)]
        if len(ids) == 1:
            clauses.append(f"run_id = '{ids[0]}'")
        else:
            clauses.append("run_id IN (" + ", ".join(f"'{r}'" for r in ids) + ")")
    if not clauses:
        return None
    return " AND ".join(f"({c})" if len(clauses) > 1 else c for c in clauses)
