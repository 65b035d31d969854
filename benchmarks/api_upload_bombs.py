"""Upload bombs against a real ``omnivec api``: what a huge request body costs the server.

Builds a small store (a few images, a tiny random open_clip model), then for each bomb starts
``omnivec api`` from a checkout (``--checkout``, default this one) as its own process on 127.0.0.1
with a token set, and sends over a raw socket:

- ``chunked``: a 1.2 GB multipart upload with the token, ``Transfer-Encoding: chunked``;
- ``no-token``: a 500 MB multipart upload with ``Content-Length`` and no token.

It stops sending when the answer arrives (or the server closes). Printed per bomb: the status, the
MB the client sent before the answer, the seconds until the answer, and the server's peak resident
memory (``VmHWM`` in ``/proc/PID/status``) before and after the bomb, and the most bytes it held in
temporary files (spooled upload parts, seen through ``/proc/PID/fd``, sampled every 20 ms). Compare two checkouts::

    .venv/bin/python benchmarks/api_upload_bombs.py --checkout /work/main
    .venv/bin/python benchmarks/api_upload_bombs.py

Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOKEN = "bomb-token"
BOUNDARY = "omnivecbomb"
MB = 1 << 20


def build_store(root: Path) -> tuple[Path, Path]:
    from PIL import Image

    from omnivec.config import load_settings
    from omnivec.pipeline.run import ingest
    from omnivec.testing import make_tiny_open_clip

    model = make_tiny_open_clip(root / "model")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(4):
        Image.new("RGB", (64, 48), (60 * i, 100, 200 - 40 * i)).save(corpus / f"c{i}.png")
    settings = load_settings(overrides={"store": str(root / "store"), "spaces": {
        "clip": {"model": f"local-dir:{model}"}, "clap": {"enabled": False}, "text": {"enabled": False}}}, env={})
    ingest([str(corpus)], settings)
    return root / "store", model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def vm_hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def temp_files_mb(pid: int, folder: Path) -> float:
    """Bytes in the files under ``folder`` the process holds open (a spooled upload is an unlinked
    file: only its descriptor shows it)."""
    total = 0
    fds = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fds)
    except OSError:
        return 0.0
    for name in names:
        try:
            if os.readlink(os.path.join(fds, name)).startswith(str(folder)):
                total += os.stat(os.path.join(fds, name)).st_size
        except OSError:
            pass
    return total / MB


class Server:
    def __init__(self, checkout: Path, store: Path, model: Path, max_upload_mb: float, tmp: Path) -> None:
        self.port = _free_port()
        self.tmp = tmp
        env = {**os.environ, "PYTHONPATH": str(checkout), "OMNIVEC_API_TOKEN": TOKEN, "TMPDIR": str(tmp),
               "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, "-m", "flows.cli", "api", "--store", str(store), "--model", f"local-dir:{model}",
               "--port", str(self.port), "--no-warm", "--max-upload-mb", str(max_upload_mb), "--log-level",
               "warning"]
        self.proc = subprocess.Popen(cmd, cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"omnivec api exited {self.proc.returncode}: {self.proc.stderr.read().decode()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("omnivec api did not start within 120 s")
            time.sleep(0.2)
        self.disk_peak = 0.0
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._watch_disk, daemon=True)
        self._watch.start()

    def _watch_disk(self) -> None:
        while not self._stop.wait(0.02):
            self.disk_peak = max(self.disk_peak, temp_files_mb(self.proc.pid, self.tmp))

    def stop(self) -> None:
        self._stop.set()
        self._watch.join()
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def send_bomb(port: int, total: int, chunked: bool, token: bool, timeout: float = 600) -> dict[str, object]:
    """Send a multipart upload of ``total`` bytes; stop when the server answers or closes."""
    part = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"bomb.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + b"\xff\xd8\xff"
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    head = ["POST /search HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: multipart/form-data; boundary={BOUNDARY}"]
    if token:
        head.append(f"Authorization: Bearer {TOKEN}")
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    block = b"\0" * MB
    sock = socket.create_connection(("127.0.0.1", port))
    t0 = time.perf_counter()
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    sock.setblocking(False)
    sent, pending, answer, error = 0, b"", b"", ""

    def next_piece() -> bytes:
        nonlocal sent
        if sent == 0:
            data = part
        elif sent + len(tail) >= total:
            data = tail
        else:
            data = block[: max(0, min(MB, total - len(tail) - sent))]
        sent += len(data)
        piece = (f"{len(data):x}\r\n".encode() + data + b"\r\n") if chunked else data
        if chunked and sent >= total:
            piece += b"0\r\n\r\n"
        return piece

    answered_at = None
    while time.perf_counter() - t0 < timeout:
        readable, writable, _ = select.select([sock], [sock] if (pending or sent < total) else [], [], 1.0)
        if readable:
            try:
                data = sock.recv(65536)
            except OSError as exc:
                error = str(exc)
                break
            if not data:
                break
            if not answer:
                answered_at = (time.perf_counter() - t0, sent - len(pending))
            answer += data
            if b"\r\n\r\n" in answer:
                break
        if writable:
            if not pending:
                pending = next_piece()
            try:
                n = sock.send(pending)
            except OSError as exc:  # the server closed: read what it answered
                error = str(exc)
                sock.setblocking(True)
                sock.settimeout(5)
                with contextlib.suppress(OSError):
                    answer += sock.recv(65536)
                break
            pending = pending[n:]
    seconds = time.perf_counter() - t0
    sock.close()
    if answered_at is None:
        answered_at = (seconds, sent - len(pending))
    status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "none"
    return {"status": status, "sent_mb": round(answered_at[1] / MB, 1), "seconds": round(answered_at[0], 2),
            "send_error": error}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkout", type=Path, default=ROOT, help="the omnivec checkout whose server is measured")
    ap.add_argument("--chunked-mb", type=float, default=1200)
    ap.add_argument("--unauth-mb", type=float, default=500)
    ap.add_argument("--max-upload-mb", type=float, default=32)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="omnivec-bombs-") as tmp:
        root = Path(tmp)
        store, model = build_store(root)
        for name, total, chunked, token in (("chunked", args.chunked_mb, True, True),
                                            ("no-token", args.unauth_mb, False, False)):
            server_tmp = root / f"server-tmp-{name}"
            server_tmp.mkdir()
            server = Server(args.checkout.resolve(), store, model, args.max_upload_mb, server_tmp)
            try:
                before = vm_hwm_mb(server.proc.pid)
                result = send_bomb(server.port, int(total * MB), chunked, token)
                time.sleep(0.5)
                after = vm_hwm_mb(server.proc.pid)
                alive = server.proc.poll() is None
            finally:
                server.stop()
                shutil.rmtree(server_tmp, ignore_errors=True)
            row = {"checkout": str(args.checkout), "bomb": name, "body_mb": total, **result,
                   "vmhwm_before_mb": round(before, 1), "vmhwm_after_mb": round(after, 1),
                   "tmp_disk_peak_mb": round(server.disk_peak, 1), "server_alive": alive}
            rows.append(row)
            print(f"{name:9} {total:7.0f} MB body: {row['status']} after {row['sent_mb']} MB sent, "
                  f"{row['seconds']} s; server VmHWM {row['vmhwm_before_mb']} -> {row['vmhwm_after_mb']} MB, "
                  f"temp files peak {row['tmp_disk_peak_mb']} MB", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
