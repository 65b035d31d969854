"""Precision: speed and accuracy cost of bf16 and int8 against fp32, through omnivec's own encoders.

The same JPEGs (as in ingest_throughput.py) are decoded and preprocessed once; then each precision's
encoder (ViT-B-32, seeded random init unless --pretrained names weights) embeds them in batches.
Precisions alternate over several rounds so machine noise hits them alike; the median is reported.
Random-init weights are fine for speed but say little about accuracy (their activations have no
outliers), so the bundled all-MiniLM-L6-v2 (trained weights, offline) is measured as well on a set of
generated sentences.

Columns: forward items/s (preprocessing excluded); mean and min cosine of each item's vector to its
fp32 vector; "alone": min cosine of a vector embedded in a batch to the same item embedded alone
(int8 quantises activations per batch, so its vectors depend a little on their batch neighbours).

    .venv/bin/python benchmarks/precision.py                 # 128 JPEGs, ViT-B-32, CPU
    .venv/bin/python benchmarks/precision.py -n 32 --rounds 1 --no-text

Prints a table and ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from ingest_throughput import make_jpegs  # noqa: E402

SUBJECTS = ["the old lighthouse", "a quiet library", "the football team", "a mountain village", "the jazz band",
            "a small bakery", "the city council", "a research lab", "the night train", "a coral reef",
            "the street market", "a chess club", "the hospital ward", "a wind farm", "the school choir",
            "a vineyard"]
EVENTS = ["opened its doors again after the storm", "was praised in the evening news",
          "raised money for a new roof", "lost power for three hours on Sunday"]


def sentences() -> list[str]:
    return [f"{s} {e}" for s in SUBJECTS for e in EVENTS]  # 64 distinct sentences


def cpu_bf16() -> bool:
    """Whether this CPU runs a bf16 autocast matmul at all."""
    import torch

    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.ones(4, 4) @ torch.ones(4, 4)
        return True
    except Exception:  # noqa: BLE001
        return False


def measure(name: str, encoders: dict[str, Any], modality: str, payloads: list[Any], batch: int,
            rounds: int) -> list[dict[str, Any]]:
    for enc in encoders.values():
        enc.embed(modality, payloads[:2])  # warm-up
    times: dict[str, list[float]] = {p: [] for p in encoders}
    vecs: dict[str, np.ndarray] = {}
    for r in range(rounds):
        for p, enc in encoders.items():
            t0 = time.perf_counter()
            out = [enc.embed(modality, payloads[s : s + batch]) for s in range(0, len(payloads), batch)]
            times[p].append(time.perf_counter() - t0)
            vecs[p] = np.concatenate(out)
        print(f"{name} round {r + 1}: " + ", ".join(f"{p} {t[-1]:.2f} s" for p, t in times.items()), flush=True)
    k = min(8, len(payloads), batch)
    rows = []
    for p, enc in encoders.items():
        cos = (vecs[p] * vecs["fp32"]).sum(axis=1)
        alone = np.concatenate([enc.embed(modality, [x]) for x in payloads[:k]])
        rows.append({"model": name, "precision": p, "items_s": round(len(payloads) / statistics.median(times[p]), 2),
                     "mean_cos": round(float(cos.mean()), 6), "min_cos": round(float(cos.min()), 6),
                     "alone_min_cos": round(float((alone * vecs[p][:k]).sum(axis=1).min()), 6),
                     "space_id": enc.space_id})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=128, help="number of JPEGs")
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--pretrained", default="none", help="'none' = seeded random init")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable cores)")
    ap.add_argument("--no-text", action="store_true", help="skip the bundled MiniLM text model")
    args = ap.parse_args()

    import torch
    from PIL import Image

    from omnivec.config import load_settings
    from omnivec.encoders import load_encoder

    precisions = ["fp32", *(["bf16"] if cpu_bf16() else []), "int8"]

    def settings(precision: str):  # type: ignore[no-untyped-def]
        return load_settings(env={}, overrides={
            "precision": precision, "threads": args.threads,
            "spaces": {"clip": {"model": args.model, "pretrained": args.pretrained}, "text": {}}})

    work = Path(tempfile.mkdtemp(prefix="omnivec-precision-"))
    paths = make_jpegs(work / "jpegs", args.n)
    clip = {p: load_encoder(settings(p).spaces["clip"], "cpu") for p in precisions}
    payloads = [clip["fp32"].segments("image", Image.open(p).convert("RGB"))[0].payload for p in paths]
    rows = measure(f"{args.model} (pretrained={args.pretrained})", clip, "image", payloads, args.batch_size,
                   args.rounds)
    if not args.no_text:
        text = {p: load_encoder(settings(p).spaces["text"], "cpu") for p in precisions}
        rows += measure("all-MiniLM-L6-v2 (trained)", text, "text", sentences(), args.batch_size, args.rounds)

    print(f"\n{args.n} JPEGs / {len(sentences())} sentences, batch {args.batch_size}, CPU, "
          f"torch {torch.__version__} threads {torch.get_num_threads()}, {args.rounds} rounds (median)")
    head = f"{'model':<34}{'precision':<10}{'items/s':>9}{'vs fp32':>9}{'mean cos':>10}{'min cos':>10}{'alone':>10}"
    print(head)
    for r in rows:
        base = next(x for x in rows if x["model"] == r["model"] and x["precision"] == "fp32")["items_s"]
        print(f"{r['model']:<34}{r['precision']:<10}{r['items_s']:>9.2f}{r['items_s'] / base:>9.2f}"
              f"{r['mean_cos']:>10.5f}{r['min_cos']:>10.5f}{r['alone_min_cos']:>10.5f}")
    print(json.dumps({"n": args.n, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
                      "results": rows}))


if __name__ == "__main__":
    main()
