"""Damaged tables: what is checked, and how a failure of Lance becomes one clear error.

A table is damaged when a file its latest version needs is missing, cut short or overwritten, when
its manifest cannot be read, or when the store names it (a `spaces` row, a run's recorded versions,
a run's tags) and its folder is gone. :class:`Guarded` wraps every table the store hands out (and what
its methods return: query builders, Lance datasets): when a call fails, the table is checked, and a
damaged one raises :class:`~omnivec.errors.DamagedTableError` naming the table and the store. Other
failures (a full disk, a dropped connection, a bad query) pass through unchanged, so the callers'
own handling (retries, messages) still applies.

The check of one table version (:func:`version_problems`) opens it, compares each data file with
the size the manifest records and reads its last bytes (every Lance file ends with ``LANC``), then
runs ``LanceDataset.validate()``. At 100k rows of 512-d vectors (``benchmarks/status_check.py``, a
2-core machine under load): 0.5 ms for the vector table in one data file, 20 ms in 100; the whole
:func:`check_store` 120-128 ms, most of it counting vector rows without an `items` row. Damage inside
a file's pages is found when a read reaches it.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from omnivec.errors import DamagedTableError, OmnivecError

if TYPE_CHECKING:
    from omnivec.store.store import Store

# failures of our own code, interruptions and user errors: never a sign of a damaged table
_NOT_DAMAGE = (KeyboardInterrupt, SystemExit, GeneratorExit, OmnivecError, TypeError, AttributeError, KeyError,
               IndexError, NameError, AssertionError, NotImplementedError, MemoryError, RecursionError,
               StopIteration)
# what Lance says when it reads bytes that are not what the manifest promised
_MARKERS = ("corrupt", "invalid magic", "not appear to be a lance file", "file size is too small",
            "failed to fill whole buffer", "unexpected eof", "panicked", "protobuf")
_LIBRARIES = ("lance", "lancedb")
_RUST_LOCATION = re.compile(r",?\s*(/|[A-Za-z]:\\)\S*\.rs:\d+:\d+")
_PREFIXES = ("External error: ", "lance error: ", "LanceError(IO): ", "Invalid user input: ",
             "Generic LocalFileSystem error: ")


def is_interrupt(exc: BaseException) -> bool:
    return isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit)


def may_be_damage(exc: BaseException) -> bool:
    """Whether a failure could come from a damaged table (worth checking the table for)."""
    return not isinstance(exc, _NOT_DAMAGE)


def reads_damaged_bytes(exc: BaseException) -> bool:
    """Whether Lance's message says it read bytes that are not what they should be."""
    return any(m in str(exc).lower() for m in _MARKERS)


def describe(exc: BaseException, limit: int = 300) -> str:
    """Lance's message on one line, without the Rust source locations and error-kind prefixes."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = _RUST_LOCATION.sub("", text)
    for marker in (", location: Location", " backtrace:"):
        text = text.split(marker)[0]
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if text.startswith(prefix):
                text, changed = text[len(prefix):], True
    return text if len(text) <= limit else text[:limit] + "..."


class Guarded:
    """A LanceDB table, a Lance dataset or what their methods return, whose failures are first given
    to ``on_error`` (which raises the error to report instead, or returns to let the failure pass)."""

    __slots__ = ("_on_error", "_target")

    def __init__(self, target: Any, on_error: Callable[[BaseException], None]) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_on_error", on_error)

    def __getattr__(self, attr: str) -> Any:
        try:
            value = getattr(self._target, attr)
        except BaseException as exc:
            self._on_error(exc)
            raise
        if callable(value) and not isinstance(value, type):
            return _method(value, self._on_error)
        return guard(value, self._on_error)

    def __len__(self) -> int:
        return int(self.__getattr__("__len__")())

    def __repr__(self) -> str:
        return f"Guarded({self._target!r})"


def _method(fn: Callable[..., Any], on_error: Callable[[BaseException], None]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            on_error(exc)
            raise
        return guard(result, on_error)

    return call


def guard(value: Any, on_error: Callable[[BaseException], None]) -> Any:
    """``value`` wrapped when it is an object of Lance or LanceDB (data such as Arrow tables is not)."""
    if isinstance(value, Guarded | BaseException) or type(value).__module__.split(".")[0] not in _LIBRARIES:
        return value
    return Guarded(value, on_error)


# -- one table --------------------------------------------------------------------------------


def failure_problem(store_uri: str, name: str, exc: BaseException) -> str | None:
    """What is wrong with table ``name`` now that a call on it failed with ``exc``; None when the table
    is not damaged (a full disk, a dropped connection, a bad query: the failure stands as it is)."""
    from omnivec.store.folder import no_space, storage_options

    if not may_be_damage(exc) or no_space(exc):
        return None
    problems = version_problems(store_uri, name, options=storage_options(store_uri))
    if problems:
        return problems[0]
    if reads_damaged_bytes(exc) and not isinstance(exc, OSError | TimeoutError):
        return f"it cannot be read ({describe(exc)})"
    return None


def damage_remedies(store_uri: str, name: str) -> list[str]:
    import shlex

    return [f"run `omnivec status --store {shlex.quote(store_uri)}`: it lists every damaged table and the runs "
            "whose versions of it are intact",
            "roll the store back to such a run: omnivec restore --to RUN (later changes are undone as new "
            "versions; history stays)",
            f"or put {name}.lance back from a backup of the store"]


def table_uri(store_uri: str, name: str) -> str:
    return f"{store_uri.rstrip('/')}/{name}.lance"


def manifest_versions(path: str) -> list[int]:
    """Versions that have a manifest in a local table folder, newest first ([] without any)."""
    try:
        stems = [int(e.name[: -len(".manifest")]) for e in os.scandir(os.path.join(path, "_versions"))
                 if e.name.endswith(".manifest") and e.name[: -len(".manifest")].isdigit()]
    except OSError:
        return []
    if any(s >= 2**63 for s in stems):  # Lance's newer naming: u64::MAX - version, so names sort newest first
        return sorted((2**64 - 1 - s for s in stems), reverse=True)
    return sorted(stems, reverse=True)


def has_data(path: str) -> bool:
    """Whether a local table folder holds data files (an interrupted creation leaves none)."""
    try:
        with os.scandir(os.path.join(path, "data")) as entries:
            return any(e.name.endswith(".lance") for e in entries)
    except OSError:
        return False


def open_version(store_uri: str, name: str, version: int | None = None,
                 options: dict[str, str] | None = None) -> Any:
    """A fresh Lance dataset of a table (its latest version, or ``version``), sharing no cache."""
    import lance

    return lance.dataset(table_uri(store_uri, name), version=version, storage_options=options or None,
                         session=lance.Session())


def version_problems(store_uri: str, name: str, version: int | None = None,
                     options: dict[str, str] | None = None) -> list[str]:
    """What is wrong with one version of a table (its latest by default); [] when it reads."""
    which = "its latest version" if version is None else f"its version {version}"
    try:
        ds = open_version(store_uri, name, version, options)
    except BaseException as exc:
        if is_interrupt(exc):
            raise
        return [f"{which} cannot be opened ({describe(exc)})"]
    problems = []
    if "://" not in store_uri:  # sizes from one stat per file; on object storage validate() reads them
        path = table_uri(store_uri, name)
        for fragment in ds.get_fragments():
            for data in fragment.metadata.files:
                try:
                    size = os.stat(os.path.join(path, "data", data.path)).st_size
                except FileNotFoundError:
                    problems.append(f"data file data/{data.path} is missing")
                    continue
                except OSError as exc:
                    problems.append(f"data file data/{data.path} cannot be read ({exc.strerror or exc})")
                    continue
                want = int(getattr(data, "file_size_bytes", 0) or 0)
                if want and size != want:
                    problems.append(f"data file data/{data.path} has {size} bytes; {which} records {want}")
                elif not _ends_with_magic(os.path.join(path, "data", data.path), size):
                    problems.append(f"data file data/{data.path} is not a Lance file (its footer is overwritten)")
    if not problems:
        try:
            ds.validate()
        except BaseException as exc:
            if is_interrupt(exc):
                raise
            problems.append(f"{which} cannot be read ({describe(exc)})")
    return problems


def _ends_with_magic(path: str, size: int) -> bool:
    """Every Lance file, of every format version, ends with the magic bytes ``LANC``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(size - 4, 0))
            return fh.read(4) == b"LANC"
    except OSError:
        return False


# -- the whole store ---------------------------------------------------------------------------

MAX_TAGS_CHECKED = 8


@dataclass(slots=True)
class Health:
    """What `omnivec status` and ``/healthz`` report: damaged tables (each with its problems and the
    ways out) and vector rows whose item has no `items` row."""

    problems: list[dict[str, Any]] = field(default_factory=list)
    orphans: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def damaged(self) -> bool:
        return bool(self.problems)


def check_store(store: Store) -> Health:
    """Check every table the store has or names: each named table exists, each table's latest version
    opens and its files are whole; count vector rows whose item_id has no `items` row (a run stopped
    between its writes leaves some, which its next run completes; many point at a damaged `items`)."""
    from omnivec.store.folder import is_remote, own_table, storage_options
    from omnivec.store.schema import parse_vectors_table

    t0 = time.perf_counter()
    found: dict[str, list[str]] = {}
    committed = store.table_names()
    if not is_remote(store.uri):
        with os.scandir(store.uri) as entries:
            for e in entries:
                name = e.name.removesuffix(".lance")
                if (e.name.endswith(".lance") and own_table(name) and name not in committed
                        and has_data(e.path)):
                    found[name] = ["its folder holds data files but no committed version (its _versions "
                                   "folder is missing or empty)"]
    try:
        expected = store.expected_tables()
    except DamagedTableError as exc:  # `spaces` or `runs` cannot be read
        found.setdefault(exc.table, [exc.detail])
        expected = {}
    for name, why in expected.items():
        if name not in committed:
            found.setdefault(name, [f"it is missing, but {why}"])
    options = storage_options(store.uri)
    for name in committed:
        if name not in found and (problems := version_problems(store.uri, name, options=options)):
            found[name] = problems
    orphans: dict[str, int] = {}
    if "items" not in found:
        vector_tables = [t for t in committed if parse_vectors_table(t) and t not in found]
        try:
            orphans = _orphans(store, vector_tables)
        except DamagedTableError as exc:  # damage inside a file's pages, met while reading it
            found.setdefault(exc.table, [exc.detail])
    health = Health([{"table": t, "problems": ps, "remedies": _remedies(store, t, options)}
                     for t, ps in sorted(found.items())], orphans)
    health.seconds = round(time.perf_counter() - t0, 4)
    return health


def _orphans(store: Store, tables: list[str]) -> dict[str, int]:
    import pyarrow.compute as pc

    if not tables:
        return {}
    items = store.read("items", ["item_id"]).column("item_id")
    out = {}
    for table in tables:
        ids = store.read(table, ["item_id"]).column("item_id")
        missing = len(ids) - int(pc.sum(pc.is_in(ids, value_set=items)).as_py() or 0)
        if missing:
            out[table] = missing
    return out


def intact_runs(store_uri: str, name: str, options: dict[str, str] | None = None) -> list[tuple[str, int]]:
    """(run, version) of the newest runs whose tagged version of a table reads, newest first. Empty
    when the table's latest version cannot be opened: a restore must open it to roll it back."""
    try:
        tags = open_version(store_uri, name, options=options).tags.list()
    except BaseException as exc:
        if is_interrupt(exc):
            raise
        return []
    newest = sorted(((t, int(v["version"])) for t, v in tags.items()), key=lambda tv: -tv[1])
    return [(t, v) for t, v in newest[:MAX_TAGS_CHECKED] if not version_problems(store_uri, name, v, options)]


def _remedies(store: Store, name: str, options: dict[str, str]) -> list[str]:
    intact = intact_runs(store.uri, name, options)
    out = []
    if intact:
        run, version = intact[0]
        out.append(f"roll the store back to run {run}, whose version {version} of {name} is intact: "
                   f"omnivec restore --to {run} (later changes are undone as new versions; history stays)")
    out.append(f"put {name}.lance back from a backup of the store")
    if not intact:
        out.append("or ingest the sources again into a new store (--store NEW_FOLDER)")
    return out


class HealthCache:
    """``check_store`` once per state of the store: the tables' versions, damage that reads have met
    since, and at least every ``ttl`` seconds (damage changes no version)."""

    def __init__(self, ttl: float = 60.0) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._last: tuple[Any, float, Health] | None = None

    def get(self, store: Store) -> Health:
        try:
            key: Any = (tuple(sorted(store.versions().items())), store.damage_seen)
        except OmnivecError:
            key = None  # a table cannot be opened: check again
        now = time.monotonic()
        with self._lock:
            last = self._last
            if key is not None and last is not None and last[0] == key and now - last[1] < self.ttl:
                return last[2]
        health = check_store(store)
        with self._lock:
            self._last = (key, now, health)
        return health
