"""Cost of the consistency check of `omnivec status` and ``/healthz`` (omnivec.store.health.check_store).

Builds stores of ``--rows`` items with one vector table of ``--dim`` float32 vectors, written in 1 and
in ``--fragments`` commits (one data file each), and times the check on a freshly opened store, as a
new `omnivec status` process does: every table's latest version opened, each data file's size and
footer compared with its manifest, ``LanceDataset.validate()``, and the count of vector rows without
an `items` row. Then the same check split into its parts, on the vector table alone.

    .venv/bin/python benchmarks/status_check.py                 # 100k x 512
    .venv/bin/python benchmarks/status_check.py --rows 10000    # smaller

Ends with one JSON line of the figures (milliseconds).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402


def build(folder: Path, rows: int, dim: int, commits: int) -> str:
    """A store with `items`, `spaces`, `runs` and one vector table written in ``commits`` appends."""
    from omnivec.store import Store
    from omnivec.store.schema import ITEMS, RUNS, SPACES, vectors_schema, vectors_table_name

    store = Store(folder, create=True)
    ids = [f"{i:032x}" for i in range(rows)]
    now = datetime.now(UTC)
    store.ensure("items").add(pa.table({
        "item_id": ids, "uri": [f"/bench/{i:08d}.jpg" for i in range(rows)], "modality": ["image"] * rows,
        "content_hash": ids, "size": [1] * rows, "mtime_ns": [1] * rows, "status": ["ok"] * rows,
        "first_run": ["bench"] * rows, "last_run": ["bench"] * rows, "updated_at": [now] * rows}, schema=ITEMS))
    space_id = "0123456789ab"
    table = vectors_table_name("bench", space_id)
    tbl = store.vectors_table("bench", space_id, dim, {"encoder": "synthetic"})
    schema = vectors_schema(dim)
    rng = np.random.default_rng(0)
    step = -(-rows // commits)
    for start in range(0, rows, step):
        n = min(step, rows - start)
        vecs = rng.standard_normal((n, dim), dtype=np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        cols: dict[str, Any] = {
            "vector_id": [f"{i}:0" for i in ids[start:start + n]], "item_id": ids[start:start + n],
            "uri": [f"/bench/{i:08d}.jpg" for i in range(start, start + n)], "modality": ["image"] * n,
            "segment": np.zeros(n, dtype=np.int32),
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), pa.float32()), dim)}
        tbl.add(pa.table({f.name: cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in schema},
                         schema=schema))
    store.upsert("spaces", pa.Table.from_pylist([{
        "name": "bench", "space_id": space_id, "encoder": "synthetic", "model": "random", "dimension": dim,
        "modalities": ["image"], "table_name": table, "status": "active", "created_at": now}], schema=SPACES))
    store.upsert("runs", pa.Table.from_pylist([{
        "run_id": "0" * 16, "run_name": "bench", "started_at": now, "ended_at": now, "status": "completed",
        "versions": json.dumps(store.versions())}], schema=RUNS))
    return table


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """(median, min) milliseconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--fragments", type=int, default=100, help="commits of the second store")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    from omnivec.store import Store
    from omnivec.store.health import _orphans, check_store, version_problems

    root = Path(tempfile.mkdtemp(prefix="omnivec-status-"))
    figures: dict[str, Any] = {"rows": args.rows, "dim": args.dim}
    try:
        for commits in sorted({1, args.fragments}):
            folder = root / f"store-{commits}"
            t = time.perf_counter()
            table = build(folder, args.rows, args.dim, commits)
            built = time.perf_counter() - t
            print(f"{args.rows:,} rows x {args.dim} in {commits} data file(s): built in {built:.1f} s")
            health = check_store(Store(folder))
            assert not health.damaged and not health.orphans, health
            parts = {
                "check_store (fresh Store)": lambda f=folder: check_store(Store(f)),
                "  vector table: open, sizes, footers, validate": lambda f=folder, t=table: version_problems(str(f), t),
                "  items: open, sizes, footers, validate": lambda f=folder: version_problems(str(f), "items"),
                "  orphan count (item_id of both tables)": lambda f=folder, t=table: _orphans(Store(f), [t]),
            }
            for name, fn in parts.items():
                median, best = timed(fn, args.repeat)
                print(f"  {name}: median {median:.1f} ms, min {best:.1f} ms")
                figures[f"{commits} files: {name.strip()}"] = round(median, 1)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
