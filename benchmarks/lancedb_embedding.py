"""omnivec's pipeline vs LanceDB's built-in ``open-clip`` embedding function, on the same JPEGs.

The alternative a LanceDB user would pick: a table whose schema has a ``SourceField`` (the image
path) and a ``VectorField`` computed by ``get_registry().get("open-clip")``; ``table.add`` embeds the
images. Both sides use ViT-B-32 with random weights (speed does not depend on the weights), the
same torch threads and batch size, and write into a LanceDB table in a fresh folder; model loading
is excluded from both. Methods alternate over rounds; the median of each is reported.

    .venv/bin/python benchmarks/lancedb_embedding.py              # 256 images, 2 rounds
    .venv/bin/python benchmarks/lancedb_embedding.py -n 64 --rounds 1

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
sys.path.insert(0, str(Path(__file__).resolve().parent))


def run_lancedb(paths: list[Path], func: object, folder: Path) -> float:
    import lancedb
    from lancedb.pydantic import LanceModel, Vector

    class Images(LanceModel):
        image_uri: str = func.SourceField()  # type: ignore[attr-defined]
        vector: Vector(func.ndims()) = func.VectorField()  # type: ignore[attr-defined,valid-type]

    db = lancedb.connect(folder)
    t0 = time.perf_counter()
    tbl = db.create_table("images", schema=Images, mode="overwrite")
    tbl.add([{"image_uri": str(p)} for p in paths])
    assert tbl.count_rows() == len(paths)
    return time.perf_counter() - t0


def run_omnivec(paths: list[Path], corpus: Path, settings: object) -> float:
    from omnivec.pipeline.run import ingest

    t0 = time.perf_counter()
    report = ingest([str(corpus)], settings)  # type: ignore[arg-type]
    assert report.embedded == len(paths), report
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    import logging

    import torch
    from ingest_throughput import make_jpegs
    from lancedb.embeddings import get_registry

    from omnivec.config import load_settings
    from omnivec.encoders import load_encoder

    logging.getLogger().setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = Path(tempfile.mkdtemp(prefix="omnivec-lancedb-bench-"))
    corpus = root / "corpus"
    paths = make_jpegs(corpus, args.n)
    func = get_registry().get("open-clip").create(name="ViT-B-32", pretrained="", batch_size=args.batch_size,
                                                  device="cpu")
    spaces = {"clip": {"model": "ViT-B-32", "pretrained": "none"}, "clap": {"enabled": False},
              "text": {"enabled": False}}
    times: dict[str, list[float]] = {"lancedb": [], "omnivec": []}
    for r in range(args.rounds):
        order = ["lancedb", "omnivec"] if r % 2 == 0 else ["omnivec", "lancedb"]
        for method in order:
            store = root / f"{method}-{r}"
            if method == "lancedb":
                times[method].append(run_lancedb(paths, func, store))
            else:
                settings = load_settings(overrides={"store": str(store), "spaces": spaces,
                                                    "batch_size": args.batch_size, "canary_sample": 0}, env={})
                load_encoder(settings.spaces["clip"], settings.device)  # loaded once, like the function's model
                times[method].append(run_omnivec(paths, corpus, settings))
            print(f"round {r + 1} {method}: {args.n / times[method][-1]:.1f} img/s", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    med = {m: statistics.median(t) for m, t in times.items()}
    rate = {m: args.n / s for m, s in med.items()}
    print(f"\n{args.n} JPEGs, ViT-B-32 random init, batch {args.batch_size}, torch {torch.get_num_threads()} "
          f"threads, median of {args.rounds}")
    print(f"{'method':<42} {'img/s':>7} {'vs LanceDB':>10}")
    print(f"{'LanceDB open-clip embedding function':<42} {rate['lancedb']:>7.1f} {1.0:>10.2f}")
    print(f"{'omnivec core pipeline (ingest --local)':<42} {rate['omnivec']:>7.1f} "
          f"{rate['omnivec'] / rate['lancedb']:>10.2f}")
    print(json.dumps({"lancedb_items_s": round(rate["lancedb"], 2), "omnivec_items_s": round(rate["omnivec"], 2),
                      "ratio": round(rate["omnivec"] / rate["lancedb"], 3)}))


if __name__ == "__main__":
    main()
