"""Peak memory and the cost of a no-op re-run, at two corpus sizes.

For each size N (default 1,000 and 10,000 small JPEGs) a fresh store is filled by ``omnivec ingest
--local`` in its own process, then the same command runs again over the unchanged files. Each
process's peak RSS comes from ``wait4``; run seconds from the run report (``--json``), process
seconds from the wall clock (they include Python, torch and LanceDB start-up, the same for both).

The model is a tiny random open_clip by default, so the first run is fast and the no-op fraction
is a harder target than with a real model; ``--model ViT-B-32 --pretrained none`` uses a real-size one.

    .venv/bin/python benchmarks/noop_memory.py
    .venv/bin/python benchmarks/noop_memory.py --sizes 200,2000

Prints a table and ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def make_images(folder: Path, n: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(start, n):
        arr = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img_{i:06d}.jpg", "JPEG", quality=80)


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, dict]:
    """(process seconds, peak RSS MiB, run report) of one CLI run."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed")
    report = json.loads(out.decode().strip().splitlines()[-1])
    return wall, usage.ru_maxrss / 1024, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--model", default=None, help="clip model (default: a tiny random open_clip)")
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    root = args.workdir or Path(tempfile.mkdtemp(prefix="omnivec-noop-"))
    model = args.model
    if model is None:
        # made in a child process: on Linux a child's peak RSS (wait4) starts from its parent's at the
        # fork, so this process must not import torch itself, or every run would report at least its size
        subprocess.run([sys.executable, "-c", "import sys; from omnivec.testing import make_tiny_open_clip; "
                        "make_tiny_open_clip(sys.argv[1])", str(root / "tiny-clip")],
                       check=True, cwd=Path(__file__).resolve().parents[1])
        model = "local-dir:" + str(root / "tiny-clip")
    env = dict(os.environ, OMNIVEC_SPACES__CLAP__ENABLED="false", OMNIVEC_SPACES__TEXT__ENABLED="false",
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    sizes = [int(x) for x in args.sizes.split(",")]
    corpus = root / "corpus"
    rows = []
    made = 0
    for n in sorted(sizes):
        print(f"{n} images ...", flush=True)
        make_images(corpus / f"n{n}", n)
        made = max(made, n)
        store = root / f"store-{n}"
        cmd = [sys.executable, "-m", "flows.cli", "ingest", str(corpus / f"n{n}"), "--store", str(store), "--local",
               "--json", "--model", model, "--batch-size", str(args.batch_size)]
        if args.pretrained:
            cmd += ["--pretrained", args.pretrained]
        first = run(cmd, env)
        noop = run(cmd, env)
        assert first[2]["embedded"] == n and noop[2]["embedded"] == 0, (first[2], noop[2])
        unchanged = sum(m.get("unchanged", 0) for m in noop[2]["modalities"])
        assert unchanged == n, noop[2]
        rows.append({"items": n, "first_s": round(first[2]["seconds"], 2), "first_process_s": round(first[0], 2),
                     "noop_s": round(noop[2]["seconds"], 3), "noop_process_s": round(noop[0], 2),
                     "noop_fraction": round(noop[2]["seconds"] / first[2]["seconds"], 4),
                     "peak_rss_mib": round(first[1], 1), "noop_peak_rss_mib": round(noop[1], 1)})

    print(f"\nomnivec ingest --local, {model}, batch {args.batch_size}, {os.cpu_count()} CPUs")
    print(f"{'items':>7} {'first s':>8} {'no-op s':>8} {'no-op/first':>12} {'peak RSS MiB':>13} {'no-op RSS MiB':>14}"
          f" {'(process s: first / no-op)':>28}")
    for r in rows:
        print(f"{r['items']:>7} {r['first_s']:>8} {r['noop_s']:>8} {100 * r['noop_fraction']:>11.2f}% "
              f"{r['peak_rss_mib']:>13} {r['noop_peak_rss_mib']:>14} "
              f"{r['first_process_s']:>14} / {r['noop_process_s']}")
    if len(rows) > 1:
        growth = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"] - 1
        print(f"peak RSS at {rows[-1]['items']} items is {100 * growth:+.1f}% of that at {rows[0]['items']}")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
