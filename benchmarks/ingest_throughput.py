"""Ingest throughput: the full pipeline vs a bare open_clip loop over the same JPEGs.

Both sides decode the JPEGs, preprocess with the model's own transform and run one forward per
batch of the same size, with the same model (random-init weights are fine for speed) and the same
torch threads; model loading is excluded from both. Methods alternate over several rounds so
machine noise hits them alike; the median of each is reported.

    .venv/bin/python benchmarks/ingest_throughput.py            # 512 images, ViT-B-32
    .venv/bin/python benchmarks/ingest_throughput.py -n 128 --model local-dir:/path --no-flow

The flow runs twice per round, in alternating order: with the temporary Prefect server at idle CPU
priority (omnivec's default, see flows/temporary_server.py) and at normal priority
(``OMNIVEC_TEMPORARY_SERVER=normal``, what a server of one's own on the same machine gets).

Prints a table and ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402


def make_jpegs(folder: Path, n: int, size: int = 256) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        img = Image.fromarray(arr)
        d = ImageDraw.Draw(img)
        d.ellipse((20 + i % 50, 30, 200, 220), fill=tuple(int(x) for x in rng.integers(0, 255, 3)))
        p = folder / f"img_{i:05d}.jpg"
        img.save(p, "JPEG", quality=90)
        paths.append(p)
    return paths


def bare_loop(paths: list[Path], model: object, preprocess: object, batch: int) -> float:
    import torch

    t0 = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(paths), batch):
            x = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths[s : s + batch]])  # type: ignore[operator]
            v = model.encode_image(x, normalize=True)  # type: ignore[attr-defined]
            v.numpy()
    return time.perf_counter() - t0


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its live child processes (the temporary Prefect
    server is one): less disturbed than wall time by other work on a shared machine."""
    import resource

    from flows.temporary_server import descendants

    ru = resource.getrusage(resource.RUSAGE_SELF)
    total = ru.ru_utime + ru.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    for pid in descendants(os.getpid()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def _share(label: str, flow: list[float], core: list[float], what: str) -> float:
    """Print and return the median over rounds of (flow - core) / flow."""
    per_round = [(f - c) / f for f, c in zip(flow, core, strict=True)]
    share = statistics.median(per_round)
    print(f"{label}: {100 * share:.1f}% {what}; per round " + ", ".join(f"{100 * x:+.1f}%" for x in per_round))
    return share


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=512, help="number of JPEGs")
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default="none", help="'none' = seeded random init")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-flow", action="store_true", help="skip the Prefect flow (core pipeline only)")
    args = ap.parse_args()

    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="omnivec-bench-prefect-"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    import open_clip
    import torch

    from omnivec.config import load_settings
    from omnivec.encoders import load_encoder
    from omnivec.pipeline.run import ingest

    work = Path(tempfile.mkdtemp(prefix="omnivec-bench-"))
    paths = make_jpegs(work / "jpegs", args.n)
    pretrained = None if args.pretrained.lower() in ("", "none") else args.pretrained
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=pretrained,
                                                                 device=args.device)
    model.eval()

    def settings(store: Path):  # type: ignore[no-untyped-def]
        return load_settings(env={}, overrides={
            "store": str(store), "batch_size": args.batch_size, "device": args.device,
            "spaces": {"clip": {"model": args.model, "pretrained": args.pretrained},
                       "clap": {"enabled": False}, "text": {"enabled": False}}})  # images only take clip

    load_encoder(settings(work / "warm").spaces["clip"], args.device)  # loaded once, like a worker
    bare_loop(paths[: args.batch_size], model, preprocess, args.batch_size)  # warm-up forward

    times: dict[str, list[float]] = {"bare": [], "pipeline": []}
    cpu: dict[str, list[float]] = {"pipeline": [], "flow": [], "flow-normal": []}
    whole: list[float] = []  # the flow call, its run's creation and finish included
    pipe_whole: list[float] = []  # the ingest() call, likewise
    flow_runner = None
    harness = None
    if not args.no_flow:
        from prefect.testing.utilities import prefect_test_harness

        from flows.ingest import run_ingest_flow

        harness = prefect_test_harness(server_startup_timeout=180)
        harness.__enter__()
        times["flow"] = []
        times["flow-normal"] = []
        flow_runner = run_ingest_flow
        run_ingest_flow([str(paths[0].parent)], settings(work / "flow-warm"))  # server warm-up
    for r in range(args.rounds):
        times["bare"].append(bare_loop(paths, model, preprocess, args.batch_size))
        store = work / f"store-{r}"
        c0, w0 = cpu_seconds(), time.perf_counter()
        rep = ingest([str(work / "jpegs")], settings(store))
        cpu["pipeline"].append(cpu_seconds() - c0)
        pipe_whole.append(time.perf_counter() - w0)
        assert rep.embedded == args.n, rep.rows()
        times["pipeline"].append(rep.wall_seconds)
        shutil.rmtree(store)
        if flow_runner is not None:
            for method in ("flow", "flow-normal") if r % 2 == 0 else ("flow-normal", "flow"):
                os.environ["OMNIVEC_TEMPORARY_SERVER"] = "idle" if method == "flow" else "normal"
                store = work / f"{method}-{r}"
                c0, w0 = cpu_seconds(), time.perf_counter()
                rep = flow_runner([str(work / "jpegs")], settings(store))
                cpu[method].append(cpu_seconds() - c0)
                if method == "flow":
                    whole.append(time.perf_counter() - w0)
                assert rep.embedded == args.n, rep.rows()
                times[method].append(rep.wall_seconds)
                shutil.rmtree(store)
            os.environ.pop("OMNIVEC_TEMPORARY_SERVER")
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: args.n / v for k, v in med.items()}
    print(f"\n{args.n} JPEGs, {args.model} (pretrained={args.pretrained}), batch {args.batch_size}, "
          f"device {args.device}, torch threads {torch.get_num_threads()}, {args.rounds} rounds (median)")
    print(f"{'method':<13}{'seconds':>10}{'items/s':>10}{'vs bare':>10}")
    for k in med:
        print(f"{k:<13}{med[k]:>10.2f}{rate[k]:>10.1f}{rate[k] / rate['bare']:>10.3f}")
    overhead = cpu_overhead = overhead_normal = overhead_whole = None
    if "flow" in times:  # paired by round: the flow and the core pipeline ran back to back
        overhead = _share("Prefect overhead", times["flow"], times["pipeline"],
                          "of the flow's wall time (flow minus core pipeline, same files, same round; "
                          "median over rounds)")
        overhead_normal = _share("With the temporary server at normal priority", times["flow-normal"],
                                 times["pipeline"], "of the flow's wall time (same measure)")
        fixed = statistics.median(w - f for w, f in zip(whole, times["flow"], strict=True))
        core_fixed = statistics.median(w - f for w, f in zip(pipe_whole, times["pipeline"], strict=True))
        print(f"Outside the run's own timer (opening the store; for the flow also creating and finishing its run): "
              f"flow {fixed:.2f} s, core pipeline {core_fixed:.2f} s")
        overhead_whole = _share("Prefect overhead, whole calls", whole, pipe_whole,
               "of the flow call's wall time, its run's creation and finish included (flow call minus ingest() "
               "call; median over rounds)")
        cpu_overhead = _share("Prefect overhead", cpu["flow"], cpu["pipeline"],
                              "of the CPU time of the whole flow call, its run's creation and finish and the "
                              "temporary Prefect server included (flow minus core pipeline, CPU seconds of this "
                              "process and its children; median)")
    figures = {
        "n": args.n, "model": args.model, "batch_size": args.batch_size, "device": args.device,
        "bare_items_s": round(rate["bare"], 2),
        "core_pipeline_items_s": round(rate["pipeline"], 2),
        "pipeline_items_s": round(rate.get("flow", rate["pipeline"]), 2),
        "ratio": round(rate.get("flow", rate["pipeline"]) / rate["bare"], 3),
        "core_ratio": round(rate["pipeline"] / rate["bare"], 3),
        "prefect_overhead": None if overhead is None else round(overhead, 4),
        "prefect_overhead_cpu": None if cpu_overhead is None else round(cpu_overhead, 4),
        "prefect_overhead_server_normal": None if overhead_normal is None else round(overhead_normal, 4),
        "prefect_overhead_whole_call": None if overhead_whole is None else round(overhead_whole, 4),
        "prefect_fixed_s": round(statistics.median(w - f for w, f in zip(whole, times["flow"], strict=True)), 3)
        if whole else None,
    }
    shutil.rmtree(work, ignore_errors=True)
    if harness is not None:
        harness.__exit__(None, None, None)  # stops the temporary Prefect server
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
