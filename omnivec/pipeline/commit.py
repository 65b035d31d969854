"""The single writer: batch results are buffered and written in large keyed merges.

A flush is due once ``flush_rows`` rows are buffered, or once anything is buffered and
``commit_every_s`` seconds have passed since the last flush: a long run killed half way has committed
all but its last few seconds of work.

Order per flush: vectors (one merge per space, replacing the flushed items' old vectors in the
same commit), then errors, then items; deletions go the same way. The `items` row is a file's commit
point: until it is written (or deleted), the next run plans the file again from what the tables hold
and rewrites it with keyed merges, so nothing is lost or doubled, and an error row written without
its `items` row is not counted as a second attempt. A crash between steps is repaired by the next run.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from omnivec.pipeline.batch import BatchResult
from omnivec.pipeline.plan import Deleted
from omnivec.store.store import Store, sql_in

_CHUNK_IDS = 2000  # ids per IN (...) filter


def _chunks(ids: list[str], n: int = _CHUNK_IDS) -> Iterable[list[str]]:
    for i in range(0, len(ids), n):
        yield ids[i : i + n]


class Committer:
    def __init__(self, store: Store, tables: dict[str, str], flush_rows: int = 4096,
                 write_items: bool = True, commit_every_s: float = 30.0) -> None:
        self.store = store
        self.write_items = write_items  # a reembed adds vectors only; `items` stays the ingest's view
        self.tables = tables  # space name -> vector table of the identity this run writes
        self.flush_rows = flush_rows
        self.commit_every_s = commit_every_s
        self._last_flush = time.monotonic()
        self._pending: list[BatchResult] = []
        self._rows = 0
        self._staged_errors: pa.Table | None = None
        self.counts: dict[str, Counter[str]] = {}
        self.seconds: dict[str, Counter[str]] = {}
        self.written: Counter[str] = Counter()  # table -> rows written

    @property
    def pending_items(self) -> int:
        return sum(r.items.num_rows for r in self._pending)

    @property
    def due(self) -> bool:
        """Whether a flush is due: enough rows buffered, or something buffered for long enough."""
        return self._rows >= self.flush_rows or bool(self._pending) and \
            time.monotonic() - self._last_flush >= self.commit_every_s

    def add(self, result: BatchResult, flush: bool = True) -> None:
        """Buffer a batch result; writes happen in :meth:`flush` (here once ``due``, unless ``flush``
        is False: the Prefect flow flushes in its own, retried, commit task)."""
        self._pending.append(result)
        self._rows += result.items.num_rows + sum(t.num_rows for t in result.vectors.values())
        if flush and self.due:
            self.flush()

    def flush(self) -> None:
        """Write everything buffered. Every write is keyed (or a delete by key), so a flush that failed
        part-way (a transient I/O error) can simply be called again: the buffer is only cleared, and
        the counts only taken, once all writes succeeded."""
        if not self._pending:
            return
        results = self._pending
        if self._staged_errors is None:  # attempts are counted once, not once per retry
            errors = pa.concat_tables([r.errors for r in results])
            self._staged_errors = self._count_attempts(errors) if errors.num_rows else errors
        self._write(results, self._staged_errors)
        for result in results:
            self.counts.setdefault(result.modality, Counter()).update(result.counts)
            self.seconds.setdefault(result.modality, Counter()).update(result.seconds)
        self._pending, self._rows, self._staged_errors = [], 0, None
        self._last_flush = time.monotonic()

    def _write(self, results: list[BatchResult], errors: pa.Table) -> None:
        spaces = {s for r in results for s in r.replace}
        for space in sorted(spaces):
            ids = sorted({i for r in results for i in r.replace.get(space, ())})
            tables = [r.vectors[space] for r in results if space in r.vectors]
            rows = pa.concat_tables(tables) if tables else None
            name = self.tables.get(space)
            if name is None or self.store.table(name) is None:
                continue  # space not loaded in this run: nothing to replace
            if rows is not None and rows.num_rows:
                self.store.upsert(name, rows, replace_where=sql_in("item_id", ids))
                self.written[name] += rows.num_rows
            else:
                for part in _chunks(ids):
                    self.store.delete(name, sql_in("item_id", part))
        if errors.num_rows:
            self.store.upsert("errors", errors)
            self.written["errors"] += errors.num_rows
        cleared = sorted({i for r in results for i in r.cleared}) if self.write_items else []
        for part in _chunks(cleared):
            if self.store.count("errors"):
                self.store.delete("errors", sql_in("item_id", part))
        items = pa.concat_tables([r.items for r in results])
        if items.num_rows and self.write_items:
            self.store.upsert("items", items)
            self.written["items"] += items.num_rows

    def _count_attempts(self, errors: pa.Table) -> pa.Table:
        """Attempts so far + 1, where an attempt that never committed is not counted (see
        :meth:`_uncommitted`)."""
        ids = errors.column("error_id").to_pylist()
        before = self.store.read("errors", ["error_id", "item_id", "attempts", "run_id", "stage"],
                                 where=sql_in("item_id", sorted({i.split(":")[0] for i in ids}))).to_pylist()
        stale = self._uncommitted(before)
        prior = {r["error_id"]: (r["attempts"] or 0) - (r["error_id"] in stale) for r in before}
        attempts = pa.array([max(prior.get(i, 0), 0) + 1 for i in ids], pa.int32())
        return errors.set_column(errors.schema.get_field_index("attempts"), "attempts", attempts)

    def _uncommitted(self, rows: list[dict[str, Any]]) -> set[str]:
        """Error rows a killed run wrote without the `items` rows of the same flush (errors are written
        first): neither the item's last run nor a run that finished. The file is read again, and that
        attempt is the one the row already counts."""
        rows = [r for r in rows if r["stage"] != "discover"]
        if not self.write_items or not rows:  # a reembed writes no items rows
            return set()
        items = self.store.read("items", ["item_id", "last_run"],
                                where=sql_in("item_id", sorted({r["item_id"] for r in rows}))).to_pylist()
        last = {r["item_id"]: r["last_run"] for r in items}
        finished = {r["run_id"] for r in self.store.read("runs", ["run_id"]).to_pylist()}
        return {r["error_id"] for r in rows if last.get(r["item_id"]) != r["run_id"] and r["run_id"] not in finished}

    def drop_discovery_errors(self, item_ids: list[str]) -> None:
        """Remove the discovery error rows of these files: their problem is gone (a dangling link
        deleted or mended)."""
        for part in _chunks(sorted(item_ids)):
            self.store.delete("errors", f"{sql_in('item_id', part)} AND stage = 'discover'")

    def delete(self, deleted: list[Deleted], tables: Iterable[str]) -> None:
        """Remove deleted files from the latest version of every vector table (older versions, and
        the run tags, keep them)."""
        ids = sorted(d.item_id for d in deleted)
        if not ids:
            return
        for part in _chunks(ids):
            where = sql_in("item_id", part)
            for table in tables:
                self.store.delete(table, where)
            self.store.delete("errors", where)
            self.store.delete("items", where)
        for d in deleted:
            self.counts.setdefault(d.modality, Counter())["deleted"] += 1
        self.written["items"] += len(ids)
