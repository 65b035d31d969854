"""The crash soak's tracing: the child's tracer and the parent's reading of its trace.

The child (``crash_soak.py child``) installs a ``Tracer`` that writes one line per store write and
phase of a run to a file, and may kill its own process group at one of those writes; the parent
reads that file back (``read_trace``) and says what was in flight when the child died
(``in_flight``). Used by ``benchmarks/crash_soak.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------------------------
# child: trace the store writes, optionally kill itself at one of them
# ----------------------------------------------------------------------------------------------


class Tracer:
    """Appends one line per event to a file (unbuffered, so a SIGKILL loses nothing written):
    ``B n t kind table`` / ``E n t`` around store writes, ``P+ t name`` / ``P- t name`` around phases."""

    def __init__(self, path: str, die_at: str = "", die_when: str = "during", die_ms: float = 0.0) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.t0 = time.monotonic()
        self.seq = 0
        self.matched = Counter[str]()
        self.lock = threading.Lock()
        self.inside = threading.local()  # how many traced writes this thread is in
        self.die_at, self.die_when, self.die_ms = die_at, die_when, die_ms

    def emit(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())

    def now(self) -> str:
        return f"{time.monotonic() - self.t0:.4f}"

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.emit(f"P+ {self.now()} {name}")
        yield
        self.emit(f"P- {self.now()} {name}")

    def _aimed(self, n: int, kind: str, table: str) -> bool:
        """Whether write ``n`` is the one to die at: ``N`` (the N-th write) or ``kind:table#k`` (the
        k-th write of that kind on a table whose name starts with ``table``)."""
        if not self.die_at:
            return False
        if self.die_at.isdigit():
            return n == int(self.die_at)
        want, _, k = self.die_at.partition("#")
        w_kind, _, w_table = want.partition(":")
        if kind == w_kind and table.startswith(w_table):
            self.matched[want] += 1
            return self.matched[want] == int(k or 1)
        return False

    @property
    def depth(self) -> int:
        return getattr(self.inside, "depth", 0)

    @contextlib.contextmanager
    def op(self, kind: str, table: str) -> Iterator[None]:
        with self.lock:
            self.seq += 1
            n = self.seq
            aimed = self._aimed(n, kind, table)
        self.emit(f"B {n} {self.now()} {kind} {table}")
        if aimed and self.die_when == "during":
            threading.Thread(target=self._die_after, args=(self.die_ms / 1000,), daemon=True).start()
        self.inside.depth = self.depth + 1
        try:
            yield
        finally:
            self.inside.depth -= 1
        if aimed and self.die_when == "during":
            # a write shorter than the delay waits here for the kill: it dies at the write's last
            # instant, never after it (a short write could otherwise end before the killer runs)
            threading.Event().wait()
        self.emit(f"E {n} {self.now()}")
        if aimed and self.die_when == "after":
            self.die()

    def _die_after(self, seconds: float) -> None:
        time.sleep(seconds)
        self.die()

    def die(self) -> None:
        self.emit(f"K {self.now()}")
        os.killpg(os.getpgrp(), signal.SIGKILL)


def _wrap(owner: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    original = getattr(owner, name)
    setattr(owner, name, make(original))


def install_tracer(tracer: Tracer, flush_rows: int = 0) -> None:
    """Trace every store write (and the phases of a run) of this process."""
    import lancedb.table
    from lance.dataset import DatasetOptimizer, LanceDataset  # (lance.dataset is also a function)

    import omnivec.pipeline.run as run
    from omnivec.pipeline.commit import Committer
    from omnivec.store.store import Store

    def write(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def make(fn: Callable[..., Any]) -> Callable[..., Any]:
            def traced(self: Any, name: str, *a: Any, **kw: Any) -> Any:
                with tracer.op(kind, name):
                    return fn(self, name, *a, **kw)
            return traced
        return make

    def ensure(fn: Callable[..., Any]) -> Callable[..., Any]:
        def traced(self: Any, name: str, *a: Any, **kw: Any) -> Any:
            if self.table(name) is not None:
                return fn(self, name, *a, **kw)
            with tracer.op("create", name):
                return fn(self, name, *a, **kw)
        return traced

    def phase(label: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def make(fn: Callable[..., Any]) -> Callable[..., Any]:
            def traced(*a: Any, **kw: Any) -> Any:
                with tracer.phase(label):
                    return fn(*a, **kw)
            return traced
        return make

    def table_op(kind: str, outer: bool = False,
                 name: Callable[[Any], str] = lambda t: t.name) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """A write on a table object; ``outer``: only when no traced write is under way in this thread
        (a table's delete inside a merge is part of that merge)."""
        def make(fn: Callable[..., Any]) -> Callable[..., Any]:
            def traced(self: Any, *a: Any, **kw: Any) -> Any:
                if outer and tracer.depth:
                    return fn(self, *a, **kw)
                with tracer.op(kind, name(self)):
                    return fn(self, *a, **kw)
            return traced
        return make

    def tag(fn: Callable[..., Any]) -> Callable[..., Any]:
        def traced(self: Any, tag_name: str, version: int) -> Any:
            with tracer.op("tag", getattr(self._table, "name", "?")):
                return fn(self, tag_name, version)
        return traced

    _wrap(Store, "upsert", write("merge"))
    _wrap(Store, "delete", write("delete"))
    _wrap(Store, "refresh_text_index", write("fts-index"))
    _wrap(Store, "ensure", ensure)
    _wrap(lancedb.table.LanceTable, "set_unenforced_primary_key", table_op("set-key"))
    _wrap(lancedb.table.Tags, "create", tag)
    # restore and maintain write through the table and dataset objects themselves
    _wrap(lancedb.table.LanceTable, "restore", table_op("restore"))
    _wrap(lancedb.table.LanceTable, "delete", table_op("delete", outer=True))
    _wrap(lancedb.table.LanceTable, "create_index", table_op("index", outer=True))
    of_dataset: Callable[[Any], str] = lambda o: _name(o._dataset)  # noqa: E731
    _wrap(DatasetOptimizer, "compact_files", table_op("compact", name=of_dataset))
    _wrap(DatasetOptimizer, "optimize_indices", table_op("optimize-index", outer=True, name=of_dataset))
    _wrap(LanceDataset, "cleanup_old_versions", table_op("cleanup", name=_name))
    _wrap(Committer, "flush", phase("commit"))
    _wrap(Committer, "delete", phase("deletions"))
    for mod in _run_modules():
        for fn_name, label in PHASES:
            if hasattr(mod, fn_name):
                _wrap(mod, fn_name, phase(label))
    if flush_rows:
        init = Committer.__init__

        def small(self: Any, *a: Any, **kw: Any) -> None:
            init(self, *a, **kw)
            self.flush_rows = min(self.flush_rows, flush_rows)

        Committer.__init__ = small  # type: ignore[method-assign]
    del run


# (function, phase) wrapped in every module of _run_modules that has it
PHASES = (("prepare", "plan"), ("finish", "finish"), ("update_assets", "assets"), ("check_drift", "canary"),
          ("record_run", "run-log+tags"), ("repair_run_tags", "repair"), ("plan_reembed", "plan"),
          ("restore", "restore"), ("maintain_table", "upkeep"))


def _name(dataset: Any) -> str:
    """vectors_clip_0123456789ab, from a dataset's uri (.../vectors_clip_0123456789ab.lance)"""
    return os.path.basename(str(dataset.uri).rstrip("/")).removesuffix(".lance")


def _run_modules() -> list[Any]:
    """The modules whose steps are traced as phases, all imported before any is wrapped (a module that
    imports a function by name after it was wrapped would trace it twice)."""
    import omnivec.maintenance as maintenance
    import omnivec.pipeline.reembed as reembed
    import omnivec.pipeline.run as run
    import omnivec.store.history as history

    mods = [run, reembed, history, maintenance]
    if "tasks.ingest" in sys.modules:
        mods.append(sys.modules["tasks.ingest"])
    return mods


# ----------------------------------------------------------------------------------------------
# parent: read the trace
# ----------------------------------------------------------------------------------------------


@dataclass
class Op:
    n: int
    begin: float
    end: float | None
    kind: str
    table: str
    phase: str


@dataclass
class Trace:
    ops: list[Op] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)  # open at the end
    started: float | None = None  # when the first phase began (an ingest's planning)
    last: float = 0.0
    self_killed: bool = False
    commit_from: int = 0  # index in ops of the first write of the latest commit (flush)

    @property
    def open_op(self) -> Op | None:
        return next((o for o in reversed(self.ops) if o.end is None), None)

    @property
    def first_write(self) -> float | None:
        return self.ops[0].begin if self.ops else None

    @property
    def ghost_window(self) -> bool:
        """Whether the run died inside a commit after a vector merge and before its items merge ended:
        vector rows that no `items` row covers yet."""
        if "commit" not in self.phases:
            return False
        done = [o for o in self.ops[self.commit_from:] if o.end is not None and o.kind == "merge"]
        return any(o.table.startswith("vectors_") for o in done) and not any(o.table == "items" for o in done)

    @property
    def work_seconds(self) -> float:
        """From the first store write to the end of the last: the window timed kills are drawn from."""
        if not self.ops:
            return self.last - (self.started or 0.0)
        return max(o.end or o.begin for o in self.ops) - self.ops[0].begin


def read_trace(path: Path) -> Trace:
    tr = Trace()
    by_n: dict[int, Op] = {}
    if not path.exists():
        return tr
    for line in path.read_text().splitlines():
        parts = line.split(" ", 4)
        if not parts or len(parts) < 2:
            continue
        tag = parts[0]
        try:
            t = float(parts[2] if tag in ("B", "E") else parts[1])
        except (IndexError, ValueError):
            continue  # a line cut short by the kill
        tr.last = max(tr.last, t)
        if tag == "P+" and len(parts) >= 3:
            name = parts[2]
            tr.phases.append(name)
            if tr.started is None:
                tr.started = t
            if name == "commit":
                tr.commit_from = len(tr.ops)
        elif tag == "P-" and len(parts) >= 3 and parts[2] in tr.phases:
            del tr.phases[len(tr.phases) - 1 - tr.phases[::-1].index(parts[2])]
        elif tag == "B" and len(parts) >= 5:
            op = Op(int(parts[1]), t, None, parts[3], parts[4], tr.phases[-1] if tr.phases else "batches")
            tr.ops.append(op)
            by_n[op.n] = op
        elif tag == "E" and int(parts[1]) in by_n:
            by_n[int(parts[1])].end = t
        elif tag == "K":
            tr.self_killed = True
    return tr


def _short(table: str) -> str:
    """vectors_clip_0123456789ab -> vectors_clip (the ids make the table wide)."""
    head, _, tail = table.rpartition("_")
    return head if len(tail) == 12 and all(c in "0123456789abcdef" for c in tail) else table


def in_flight(tr: Trace, finished: bool) -> tuple[str, str]:
    """(category, description) of what the run was doing when it died."""
    if finished:
        return "finished", "finished before the kill"
    if tr.started is None:
        return "startup", "starting up (nothing opened yet)"
    op = tr.open_op
    where = tr.phases[-1] if tr.phases else "batches"  # between the phases: reading and embedding
    if op is not None:
        return "mid-write", f"{op.kind} {_short(op.table)} [{op.phase}]"
    if not tr.ops:
        return "before-writes", f"{where}: before the first write"
    last = tr.ops[-1]
    if not tr.phases and last.kind == "tag":  # every write done (a flow run takes a while to wind down)
        return "after-writes", f"exiting: after tag {_short(last.table)}"
    return "between-writes", f"{where}: after {last.kind} {_short(last.table)}"
