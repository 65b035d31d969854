"""Audio throughput: seconds of audio processed per wall-clock second.

Three measurements over the same generated files (44.1 kHz stereo WAV, so every file is downmixed and
resampled to CLAP's 48 kHz): decode+resample+window alone, encode alone (the CLAP feature
extractor and forward on already-decoded windows), and the full pipeline (core ingest, no Prefect).
For a tiny and a default-size CLAP (random init: speed only).

    .venv/bin/python benchmarks/audio_throughput.py                 # 300 s of audio, both sizes
    .venv/bin/python benchmarks/audio_throughput.py --seconds 60 --sizes tiny

Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402


def make_files(folder: Path, total_s: int, per_file_s: int = 60, rate: int = 44100) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(max(1, total_s // per_file_s)):
        t = np.arange(per_file_s * rate) / rate
        x = 0.2 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.05 * rng.standard_normal(t.size)
        stereo = np.stack([x, x[::-1]], axis=1).astype(np.float32)
        p = folder / f"clip_{i:03d}.wav"
        sf.write(p, stereo, rate, subtype="PCM_16")
        paths.append(p)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=300, help="total audio, in 60 s files")
    ap.add_argument("--sizes", default="tiny,default")
    ap.add_argument("--batch-size", type=int, default=8, help="windows per forward")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    from omnivec.audio import iter_windows, probe
    from omnivec.config import load_settings
    from omnivec.encoders import load_encoder
    from omnivec.pipeline.run import ingest
    from omnivec.testing import make_tiny_clap

    work = Path(tempfile.mkdtemp(prefix="omnivec-audio-bench-"))
    files = make_files(work / "audio", args.seconds)
    total = float(sum(sf.info(p).duration for p in files))
    figures: dict[str, object] = {"audio_seconds": total, "files": len(files), "device": args.device,
                                  "torch_threads": torch.get_num_threads()}
    print(f"{len(files)} files, {total:.0f} s of 44.1 kHz stereo audio, batch {args.batch_size}, "
          f"device {args.device}, torch threads {torch.get_num_threads()}")
    print(f"{'model':<9}{'stage':<22}{'seconds':>9}{'audio s/s':>11}")
    for size in args.sizes.split(","):
        model_dir = make_tiny_clap(work / f"clap-{size}", size=size)
        settings = load_settings(env={}, overrides={
            "store": str(work / f"store-{size}"), "batch_size": args.batch_size, "device": args.device,
            "spaces": {"clap": {"model": str(model_dir)}, "clip": {"enabled": False}, "text": {"enabled": False}}})
        enc = load_encoder(settings.spaces["clap"], args.device)
        enc.embed("audio", [np.zeros(480000, np.float32)])  # warm-up

        t0 = time.perf_counter()
        windows = [w.samples for p in files for w in iter_windows(probe(str(p)), 48000, 10.0, 10.0)]
        decode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for s in range(0, len(windows), args.batch_size):
            enc.embed("audio", windows[s : s + args.batch_size])
        encode_s = time.perf_counter() - t0
        del windows
        report = ingest([str(work / "audio")], settings)
        assert report.counts["audio"]["new"] == len(files), report.rows()
        full_s = report.wall_seconds
        for stage, secs in (("decode+resample", decode_s), ("encode", encode_s), ("full pipeline", full_s)):
            print(f"{size:<9}{stage:<22}{secs:>9.2f}{total / secs:>11.1f}")
        figures[size] = {"decode_audio_s_per_s": round(total / decode_s, 1),
                         "encode_audio_s_per_s": round(total / encode_s, 1),
                         "pipeline_audio_s_per_s": round(total / full_s, 1)}
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
