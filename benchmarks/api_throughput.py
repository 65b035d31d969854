"""Requests per second of ``GET /search`` on a real ``omnivec api`` server with warm encoders.

Builds a store (``-n`` JPEGs and a few texts, ViT-B-32 with seeded random weights: the speed of a
text-tower forward does not depend on the weights), starts ``omnivec api`` as a separate process
on 127.0.0.1, waits for it to load its encoders, then sends text searches from ``C`` client
threads for ``--seconds`` each, for every concurrency level. Every request's text is new to the
server ("distinct": the encoder runs each time); the "repeated" rows cycle through 10 texts, which
the server's per-encoder query cache answers without a forward (what a page sends when only a
filter, k or the as-of version changes). The same distinct queries through the Python ``search()``
in this process give the floor the HTTP layer adds to. Clients and server share the
machine's cores, so on a small machine the figures are a lower bound for the server alone.

    .venv/bin/python benchmarks/api_throughput.py                 # 256 images, concurrency 1,4,8
    .venv/bin/python benchmarks/api_throughput.py -n 64 --seconds 3 --concurrency 1,2

Prints a table and ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

QUERIES = ["a red circle", "a dog on a beach", "a steam train", "a bowl of soup", "the night sky",
           "a green square", "a bird singing", "an invoice", "mountains at dawn", "a city street"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_store(root: Path, n: int, env: dict[str, str]) -> Path:
    from ingest_throughput import make_jpegs

    corpus = root / "corpus"
    make_jpegs(corpus / "images", n)
    (corpus / "texts").mkdir(parents=True)
    for i, q in enumerate(QUERIES):
        (corpus / "texts" / f"t{i}.txt").write_text(f"A note about {q}.\n")
    store = root / "store"
    cmd = [sys.executable, "-m", "flows.cli", "ingest", str(corpus), "--store", str(store), "--local",
           "--model", "ViT-B-32", "--pretrained", "none"]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return store


def query_text(client: int, j: int, repeated: bool) -> str:
    q = QUERIES[j % len(QUERIES)]
    return q if repeated else f"{q} {client}-{j}"  # never sent before: a forward on every request


def load(base: str, concurrency: int, seconds: float, repeated: bool) -> tuple[float, list[float], int]:
    import httpx

    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    lock = threading.Lock()

    def client(i: int) -> None:
        nonlocal errors
        with httpx.Client(base_url=base, timeout=60) as c:
            j = i
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = c.get("/search", params={"q": query_text(i, j, repeated), "k": 10})
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code == 200:
                        lat.append(dt)
                    else:
                        errors += 1
                j += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, lat, errors


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))] if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=256, help="images in the store")
    ap.add_argument("--seconds", type=float, default=8.0, help="per concurrency level")
    ap.add_argument("--concurrency", default="1,4,8")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    env = dict(os.environ, OMNIVEC_SPACES__CLAP__ENABLED="false", OMNIVEC_SPACES__TEXT__ENABLED="false",
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="omnivec-api-bench-"))
    store = root / "store"
    if not store.exists():
        print(f"building a store of {args.n} images + {len(QUERIES)} texts in {root} ...", flush=True)
        build_store(root, args.n, env)

    # the in-process floor: the same search() the route calls, same warm encoder
    os.environ.update({k: v for k, v in env.items() if k.startswith(("OMNIVEC_", "HF_", "TOKENIZERS"))})
    from omnivec.config import load_settings
    from omnivec.query import search
    from omnivec.store import Store

    settings = load_settings(overrides={"store": str(store), "spaces": {"clip": {"model": "ViT-B-32",
                                                                                  "pretrained": "none"}}})
    st = Store(settings.store)
    search(QUERIES[0], k=10, settings=settings, store=st)
    inproc = []
    t_end = time.perf_counter() + min(args.seconds, 5)
    i = 0
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        search(query_text(-1, i, False), k=10, settings=settings, store=st)
        inproc.append(time.perf_counter() - t0)
        i += 1

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "flows.cli", "api", "--store", str(store), "--port", str(port),
                               "--model", "ViT-B-32", "--pretrained", "none", "--log-level", "warning"],
                              env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the api server did not start: {server.stderr.read() if server.stderr else ''}")
            time.sleep(0.3)
        httpx.get(base + "/search", params={"q": "warm up"}, timeout=60)
        rows = []
        for repeated in (False, True):
            for c in (int(x) for x in args.concurrency.split(",")):
                wall, lat, errors = load(base, c, args.seconds, repeated)
                rows.append({"queries": "repeated" if repeated else "distinct", "concurrency": c,
                             "requests": len(lat), "errors": errors, "req_s": round(len(lat) / wall, 1),
                             "p50_ms": round(1000 * statistics.median(lat), 1),
                             "p95_ms": round(1000 * pct(lat, 0.95), 1)})
    finally:
        server.terminate()
        server.wait(timeout=20)

    print(f"\nGET /search, store of {args.n} images + {len(QUERIES)} texts, ViT-B-32 (random weights), k=10, "
          f"{os.cpu_count()} CPUs shared by server and clients")
    print(f"in-process search(): p50 {1000 * statistics.median(inproc):.1f} ms "
          f"({1 / statistics.median(inproc):.1f} searches/s on one thread)")
    print(f"{'queries':<9} {'concurrency':>11} {'requests':>9} {'errors':>7} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7}")
    for r in rows:
        print(f"{r['queries']:<9} {r['concurrency']:>11} {r['requests']:>9} {r['errors']:>7} {r['req_s']:>7} "
              f"{r['p50_ms']:>7} {r['p95_ms']:>7}")
    print(json.dumps({"inprocess_p50_ms": round(1000 * statistics.median(inproc), 1), "http": rows}))


if __name__ == "__main__":
    main()
