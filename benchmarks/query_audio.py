"""A long audio query on a running ``omnivec api``: what it costs the server, and what it costs the
text queries that arrive meanwhile.

For each checkout (``--checkout``, repeatable; default: this one), with that checkout's ``omnivec``
(PYTHONPATH) and this interpreter: builds a store of a few short sounds and notes (tiny random CLIP
and CLAP, or ``--clap-size default`` for the architecture of laion/clap-htsat-unfused), starts
``omnivec api`` on 127.0.0.1, then

1. times text queries with the server idle (each text new to the server: a forward every time);
2. uploads a ``--minutes``-long 8 kHz FLAC (default 60) to ``POST /search`` and, one second after
   the upload started, sends text queries one after another until the audio answer arrives;
3. reads the server's peak RSS (VmHWM) before and after the audio query.

It prints, per checkout: text latency idle; the time to the first text answer during the audio
query; text answers received before the audio answer; the audio query's wall time and status; the
server's peak-RSS growth. ``OMNIVEC_MAX_QUERY_AUDIO_S`` is set above the file's length for a checkout
that has the setting. Ends with one JSON line.

    .venv/bin/python benchmarks/query_audio.py --checkout /work/main --checkout .
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
from typing import Any

TEXTS = ["a dog barking in the park", "rain falling on a window", "a pure sine tone", "an engine running"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))


def write_long_flac(path: Path, minutes: int, rate: int = 8000) -> Path:
    """A quiet sweep written a minute at a time (small on disk, never whole in memory)."""
    import numpy as np
    import soundfile as sf

    with sf.SoundFile(path, "w", samplerate=rate, channels=1, format="FLAC", subtype="PCM_16") as f:
        for m in range(minutes):
            t = (np.arange(60 * rate) + m * 60 * rate) / rate
            f.write((0.002 * np.sin(2 * np.pi * (300 + m) * t)).astype(np.float32))
    return path


def write_corpus(root: Path) -> Path:
    import numpy as np
    import soundfile as sf

    (root / "audio").mkdir(parents=True)
    for i, freq in enumerate((220.0, 440.0, 880.0)):
        t = np.arange(12 * 16000) / 16000
        sf.write(root / "audio" / f"tone{i}.wav", (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000)
    for i, text in enumerate(TEXTS):
        (root / f"note{i}.txt").write_text(text + ".\n")
    return root


def measure(checkout: Path, models: dict[str, Path], corpus: Path, flac: Path, work: Path,
            text_rounds: int) -> dict[str, Any]:
    import httpx

    env = {**os.environ, "PYTHONPATH": str(checkout), "OMNIVEC_SPACES__TEXT__ENABLED": "false",
           "TOKENIZERS_PARALLELISM": "false"}
    if "max_query_audio_s" in (checkout / "omnivec" / "config.py").read_text():  # unknown keys are refused
        env["OMNIVEC_MAX_QUERY_AUDIO_S"] = str(24 * 3600)
    flags = ["--store", str(work / "store"), "--model", f"local-dir:{models['clip']}", "--clap-model",
             str(models["clap"])]
    cli = [sys.executable, "-m", "flows.cli"]
    subprocess.run([*cli, "ingest", str(corpus), *flags, "--local", "--json"], check=True, env=env, cwd=checkout,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800)
    port = _free_port()
    log = open(work / "api.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen([*cli, "api", "--port", str(port), "--max-upload-mb", "256", "--log-level", "warning",
                               *flags], env=env, cwd=checkout, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=3600) as c:
            for _ in range(600):
                try:
                    if c.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None:
                    raise RuntimeError(f"omnivec api exited: {(work / 'api.log').read_text()[-2000:]}")
                time.sleep(0.5)
            n = 0

            def text_query() -> float:
                nonlocal n
                n += 1
                t0 = time.perf_counter()
                r = c.get("/search", params={"q": f"{TEXTS[n % len(TEXTS)]} {n}", "k": 5})
                r.raise_for_status()
                return time.perf_counter() - t0

            text_query()  # the first request's one-off costs
            idle = [text_query() for _ in range(text_rounds)]
            rss_before = _kib(server.pid, "VmRSS")
            hwm_before = _kib(server.pid, "VmHWM")
            audio: dict[str, Any] = {}

            def upload() -> None:
                t0 = time.perf_counter()
                with httpx.Client(base_url=base, timeout=3600) as a, open(flac, "rb") as fh:
                    r = a.post("/search", files={"file": (flac.name, fh, "audio/flac")}, data={"k": "3"})
                audio.update(seconds=time.perf_counter() - t0, status=r.status_code, end=time.perf_counter(),
                             detail=r.text[:300] if r.status_code != 200 else "")

            worker = threading.Thread(target=upload)
            started = time.perf_counter()
            worker.start()
            time.sleep(1.0)
            during: list[tuple[float, float]] = []  # (latency, when it answered)
            while worker.is_alive():
                lat = text_query()
                during.append((lat, time.perf_counter()))
            worker.join()
            hwm_after = _kib(server.pid, "VmHWM")
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    before_audio = [lat for lat, when in during if when < audio["end"]]
    return {
        "checkout": str(checkout),
        "text_idle_p50_s": round(statistics.median(idle), 3),
        "first_text_answer_during_audio_s": round(during[0][0], 3) if during else None,
        "text_answers_before_audio_answer": len(before_audio),
        "audio_query_s": round(audio["seconds"], 2),
        "audio_status": audio["status"],
        "audio_detail": audio["detail"],
        "audio_started_to_first_text_answer_s": round(during[0][1] - started, 2) if during else None,
        "server_peak_rss_growth_mb": round(max(0, hwm_after - rss_before) / 1024, 1),
        "server_hwm_before_mb": round(hwm_before / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkout", action="append", default=None, help="checkout to measure (repeatable)")
    ap.add_argument("--minutes", type=int, default=60, help="length of the audio query")
    ap.add_argument("--clap-size", choices=["tiny", "default"], default="tiny")
    ap.add_argument("--text-rounds", type=int, default=10, help="idle text queries timed")
    args = ap.parse_args()
    here = Path(__file__).resolve().parents[1]
    checkouts = [Path(c).resolve() for c in (args.checkout or [str(here)])]
    sys.path.insert(0, str(here))
    from omnivec.testing import make_tiny_clap, make_tiny_open_clip

    results = []
    with tempfile.TemporaryDirectory(prefix="omnivec-qaudio-") as tmp:
        root = Path(tmp)
        models = {"clip": make_tiny_open_clip(root / "clip"),
                  "clap": make_tiny_clap(root / "clap", size=args.clap_size)}
        corpus = write_corpus(root / "corpus")
        flac = write_long_flac(root / "long.flac", args.minutes)
        print(f"audio query: {args.minutes} min of 8 kHz FLAC, {flac.stat().st_size / 1e6:.1f} MB; "
              f"CLAP {args.clap_size}")
        for i, checkout in enumerate(checkouts):
            work = root / f"run{i}"
            work.mkdir()
            r = measure(checkout, models, corpus, flac, work, args.text_rounds)
            results.append(r)
            print(f"{checkout}: text idle p50 {r['text_idle_p50_s']} s; during the audio query: first text "
                  f"answer in {r['first_text_answer_during_audio_s']} s, {r['text_answers_before_audio_answer']} "
                  f"text answers before the audio one; audio query {r['audio_query_s']} s "
                  f"(HTTP {r['audio_status']}{' ' + r['audio_detail'] if r['audio_detail'] else ''}); "
                  f"server peak RSS +{r['server_peak_rss_growth_mb']} MB")
    print(json.dumps({"minutes": args.minutes, "clap_size": args.clap_size, "results": results}))


if __name__ == "__main__":
    main()
