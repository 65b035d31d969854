#!/usr/bin/env bash
# GPU throughput: the full omnivec ingest pipeline vs a bare PyTorch loop, on the same JPEGs.
#
# For a GPU machine with nothing installed but Python >= 3.11 and an NVIDIA driver: creates a fresh
# virtual environment, installs omnivec from this checkout with the pinned versions
# (pip install -c constraints.txt -e .; the torch wheel on PyPI for Linux x86_64 is a CUDA build),
# writes N JPEGs, then times, with ViT-B-32 (seeded random init: no download) at bf16 on the GPU:
#   pipeline  omnivec's core ingest (what `omnivec ingest --local --device cuda --precision bf16
#             --batch-size 256 --workers W` runs): read + hash + decode + preprocess on W threads,
#             forwards of 256, vectors committed to a LanceDB store
#   bare      torch DataLoader with W worker processes (JPEG decode + the model's own preprocess),
#             pinned memory, non-blocking copies, bf16 autocast forwards, vectors copied back
# and prints images/s of each and their ratio (then one JSON line). Model loading is excluded from
# both; each method gets a warm-up; rounds alternate and the median is reported.
#
#   bash benchmarks/gpu.sh                     # GPU: install, 8192 JPEGs, batch 256, bf16
#   bash benchmarks/gpu.sh -n 20000 --workers 16 --reuse-venv
#   bash benchmarks/gpu.sh --cpu               # same Python, tiny N, on the CPU with .venv (a check)
#
# Options: -n N, --size PX (JPEG side, 256), --batch-size B, --workers W (default: usable cores),
# --precision P (bf16 on the GPU, fp32 on the CPU), --rounds R, --model NAME, --venv DIR
# (default $TMPDIR/omnivec-gpu-venv), --reuse-venv (skip the install when DIR has a CUDA torch),
# --cpu / --dry-run (no install, no GPU: $PYTHON or .venv/bin/python, N=16, batch 8, 1 round).

set -euo pipefail

MODE=gpu
N=""
SIZE=256
BATCH=""
WORKERS=""
PRECISION=""
ROUNDS=""
MODEL="ViT-B-32"
VENV="${VENV:-${TMPDIR:-/tmp}/omnivec-gpu-venv}"
REUSE=0

die() { echo "gpu.sh: $*" >&2; exit 2; }
need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --cpu|--dry-run) MODE=cpu ;;
        -n) need_value "$@"; N="$2"; shift ;;
        --size) need_value "$@"; SIZE="$2"; shift ;;
        --batch-size) need_value "$@"; BATCH="$2"; shift ;;
        --workers) need_value "$@"; WORKERS="$2"; shift ;;
        --precision) need_value "$@"; PRECISION="$2"; shift ;;
        --rounds) need_value "$@"; ROUNDS="$2"; shift ;;
        --model) need_value "$@"; MODEL="$2"; shift ;;
        --venv) need_value "$@"; VENV="$2"; shift ;;
        --reuse-venv) REUSE=1 ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[[ -f constraints.txt && -f pyproject.toml ]] || die "run from an omnivec checkout (constraints.txt not found in $ROOT)"

CORES="$(nproc 2>/dev/null || echo 2)"
if [[ "$MODE" == gpu ]]; then
    N="${N:-8192}"; BATCH="${BATCH:-256}"; PRECISION="${PRECISION:-bf16}"; ROUNDS="${ROUNDS:-3}"
    WORKERS="${WORKERS:-$CORES}"; DEVICE=cuda
else
    N="${N:-16}"; BATCH="${BATCH:-8}"; PRECISION="${PRECISION:-fp32}"; ROUNDS="${ROUNDS:-1}"
    WORKERS="${WORKERS:-2}"; DEVICE=cpu
fi
for v in N SIZE BATCH WORKERS ROUNDS; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, not '${!v}'"
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/omnivec-gpu-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export PREFECT_HOME="$WORK/prefect" TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

echo "== machine"
uname -srm
echo "cores: $CORES"
if [[ "$MODE" == gpu ]]; then
    command -v nvidia-smi >/dev/null || die "nvidia-smi not found: no NVIDIA driver on this machine (use --cpu for a CPU check)"
    nvidia-smi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

    SYS_PY="${PYTHON:-python3}"
    "$SYS_PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$SYS_PY is $("$SYS_PY" --version 2>&1); omnivec needs Python >= 3.11 (set PYTHON=/path/to/python3.11+)"
    "$SYS_PY" -c 'import ensurepip, venv' 2>/dev/null \
        || die "$SYS_PY cannot create virtual environments (on Debian/Ubuntu: apt-get install python3-venv)"
    PY="$VENV/bin/python"
    if [[ "$REUSE" == 1 && -x "$PY" ]] && "$PY" -c 'import omnivec, torch; assert torch.cuda.is_available()' 2>/dev/null; then
        echo "== reusing $VENV"
    else
        echo "== fresh virtual environment in $VENV"
        if [[ -e "$VENV" ]]; then
            [[ -f "$VENV/.omnivec-gpu-bench" ]] || die "$VENV exists and was not made by gpu.sh: pick another --venv"
            rm -rf "$VENV"
        fi
        "$SYS_PY" -m venv "$VENV"
        touch "$VENV/.omnivec-gpu-bench"
        "$PY" -m pip install --quiet --upgrade pip
        echo "== pip install -c constraints.txt -e . (torch CUDA build from PyPI; a few minutes)"
        "$PY" -m pip install --quiet -c constraints.txt -e .
    fi
    "$PY" - <<'CHECK'
import torch
assert torch.cuda.is_available(), f"torch {torch.__version__} sees no CUDA device (a CPU-only wheel?)"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}, "
      f"bf16 {torch.cuda.is_bf16_supported()}")
CHECK
else
    PY="${PYTHON:-$ROOT/.venv/bin/python}"
    [[ -x "$PY" ]] || die "$PY not found: set PYTHON to a Python with omnivec installed"
    echo "== CPU check with $PY (no install, no GPU)"
fi

cat > "$WORK/bench.py" <<'PY'
"""The timed part of benchmarks/gpu.sh (written out by it; runs on cuda or cpu)."""
import argparse
import json
import os
import shutil
import statistics
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def make_one(job):
    i, folder, size = job
    rng = np.random.default_rng(i)
    img = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    ImageDraw.Draw(img).ellipse((size // 10 + i % 50, size // 8, size * 4 // 5, size * 7 // 8),
                                fill=tuple(int(x) for x in rng.integers(0, 255, 3)))
    path = Path(folder) / f"img_{i:06d}.jpg"
    img.save(path, "JPEG", quality=90)
    return str(path)


def main():
    ap = argparse.ArgumentParser()
    for name, typ in (("n", int), ("size", int), ("batch", int), ("workers", int), ("rounds", int),
                      ("device", str), ("precision", str), ("model", str), ("work", str)):
        ap.add_argument(f"--{name}", type=typ, required=True)
    a = ap.parse_args()
    import torch
    from torch.utils.data import DataLoader, Dataset

    import open_clip
    from omnivec.config import load_settings
    from omnivec.encoders import load_encoder
    from omnivec.pipeline.run import ingest

    work = Path(a.work)
    folder = work / "jpegs"
    folder.mkdir()
    t0 = time.perf_counter()
    with Pool(max(1, min(a.workers, os.cpu_count() or 1))) as pool:
        paths = sorted(pool.map(make_one, [(i, str(folder), a.size) for i in range(a.n)], chunksize=64))
    mb = sum(os.path.getsize(p) for p in paths) / 1e6
    print(f"{a.n} JPEGs of {a.size}x{a.size} ({mb:.0f} MB) written in {time.perf_counter() - t0:.1f} s", flush=True)

    cuda = a.device.startswith("cuda")
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(a.model, pretrained=None, device=a.device)
    model.eval()
    if a.precision == "int8":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(a.precision)

    class Jpegs(Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            return preprocess(Image.open(paths[i]).convert("RGB"))

    def bare(limit=None):
        data = Jpegs() if limit is None else torch.utils.data.Subset(Jpegs(), range(limit))
        loader = DataLoader(data, batch_size=a.batch, num_workers=a.workers, pin_memory=cuda,
                            prefetch_factor=4 if a.workers else None, persistent_workers=False)
        n = 0
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast(a.device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            for x in loader:
                v = model.encode_image(x.to(a.device, non_blocking=True))
                v = torch.nn.functional.normalize(v.float(), dim=-1).cpu().numpy()
                n += len(v)
        assert n == (limit or len(paths)), n
        return time.perf_counter() - start

    def settings(store):
        return load_settings(env={}, overrides={
            "store": str(store), "batch_size": a.batch, "device": a.device, "precision": a.precision,
            "workers": a.workers,
            "spaces": {"clip": {"model": a.model, "pretrained": "none"},
                       "clap": {"enabled": False}, "text": {"enabled": False}}})

    def pipeline(store, sources):
        rep = ingest(sources, settings(store))
        assert rep.failed == 0, rep.rows()
        shutil.rmtree(store)
        return rep.wall_seconds, rep.embedded

    enc = load_encoder(settings(work / "warm").spaces["clip"], a.device)  # loaded once, like a worker
    print(f"omnivec space {enc.space_id}: {a.model} random init, precision {enc.precision}, device {enc.device}, "
          f"torch threads {torch.get_num_threads()}", flush=True)
    warm = folder.parent / "warm-jpegs"
    warm.mkdir()
    for p in paths[: a.batch * 2]:
        os.symlink(p, warm / Path(p).name)
    bare(min(len(paths), a.batch * 2))
    pipeline(work / "warm-store", [str(warm)])
    times = {"bare": [], "pipeline": []}
    for r in range(a.rounds):
        times["bare"].append(bare())
        seconds, embedded = pipeline(work / f"store-{r}", [str(folder)])
        assert embedded == a.n, embedded
        times["pipeline"].append(seconds)
        print(f"round {r + 1}: bare {times['bare'][-1]:.2f} s, pipeline {times['pipeline'][-1]:.2f} s", flush=True)
        if cuda:
            print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)

    rate = {k: a.n / statistics.median(v) for k, v in times.items()}
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"\n{a.n} JPEGs {a.size}px, {a.model} random init, {a.precision}, batch {a.batch}, "
          f"{a.workers} workers, {name}, median of {a.rounds}")
    print(f"{'method':<10}{'seconds':>10}{'img/s':>10}{'vs bare':>10}")
    for k in ("bare", "pipeline"):
        print(f"{k:<10}{statistics.median(times[k]):>10.2f}{rate[k]:>10.1f}{rate[k] / rate['bare']:>10.3f}")
    print(json.dumps({"device": name, "n": a.n, "size": a.size, "model": a.model, "precision": a.precision,
                      "batch_size": a.batch, "workers": a.workers, "bare_img_s": round(rate["bare"], 1),
                      "pipeline_img_s": round(rate["pipeline"], 1),
                      "ratio": round(rate["pipeline"] / rate["bare"], 3)}))


if __name__ == "__main__":
    sys.exit(main())
PY

echo "== benchmark: $N JPEGs, $MODEL, $PRECISION on $DEVICE, batch $BATCH, $WORKERS workers, $ROUNDS rounds"
"$PY" "$WORK/bench.py" --n "$N" --size "$SIZE" --batch "$BATCH" --workers "$WORKERS" --rounds "$ROUNDS" \
    --device "$DEVICE" --precision "$PRECISION" --model "$MODEL" --work "$WORK"
