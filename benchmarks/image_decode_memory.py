"""Peak memory of decoding one large 16-bit PNG with ``omnivec.media.decode_image``.

Writes a 16-bit greyscale PNG (default 9400x9400, a smooth gradient: ~170 KB on disk), then decodes
it in a fresh process per checkout and prints the growth of peak RSS (``ru_maxrss``) over the RSS
after the file's bytes were read, and the seconds the decode took::

    .venv/bin/python benchmarks/image_decode_memory.py --checkout /work/main --checkout .

Each checkout's ``omnivec`` is imported from that folder (PYTHONPATH), with this interpreter.
Ends with one JSON line: ``{"png_bytes": ..., "results": [{"checkout", "peak_rss_growth_mb", "seconds"}]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
path, max_pixels = sys.argv[1], int(sys.argv[2])
from omnivec.media import decode_image
data = open(path, "rb").read()
def rss_mb():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS:")) / 1024
base = rss_mb()
t0 = time.perf_counter()
img = decode_image(data, max_pixels)
secs = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak_rss_growth_mb": round(peak - base, 1), "seconds": round(secs, 2),
                  "mode": img.mode, "size": list(img.size)}))
"""


def write_png(path: Path, side: int) -> None:
    import numpy as np
    from PIL import Image

    ramp = (np.arange(side, dtype=np.uint32) * 65535 // max(side - 1, 1)).astype(np.uint16)
    arr = np.broadcast_to(ramp, (side, side)).copy()
    Image.fromarray(arr).save(path, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkout", action="append", default=None,
                    help="a checkout whose omnivec to measure (repeatable; default: this one)")
    ap.add_argument("--side", type=int, default=9400, help="width and height in pixels")
    ap.add_argument("--rounds", type=int, default=1, help="processes per checkout")
    args = ap.parse_args()
    checkouts = args.checkout or [str(Path(__file__).resolve().parents[1])]
    with tempfile.TemporaryDirectory(prefix="omnivec-imgmem-") as tmp:
        png = Path(tmp) / f"grey16-{args.side}.png"
        write_png(png, args.side)
        size = png.stat().st_size
        print(f"{png.name}: {args.side}x{args.side} 16-bit grey, {size / 1024:.0f} KB")
        results = []
        for checkout in checkouts:
            root = str(Path(checkout).resolve())
            for _ in range(args.rounds):
                env = {**os.environ, "PYTHONPATH": root}
                done = subprocess.run([sys.executable, "-c", CHILD, str(png), str(args.side * args.side)],
                                      capture_output=True, text=True, env=env, cwd=root, timeout=900)
                if done.returncode != 0:
                    print(f"{root}: failed\n{done.stderr[-2000:]}")
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"{root}: peak RSS +{r['peak_rss_growth_mb']:.0f} MB, {r['seconds']:.2f} s "
                      f"-> {r['mode']} {r['size'][0]}x{r['size'][1]}")
                results.append({"checkout": root, **r})
    print(json.dumps({"png_bytes": size, "results": results}))


if __name__ == "__main__":
    main()
