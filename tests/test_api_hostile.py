"""Hostile uploads against a real ``uvicorn`` on 127.0.0.1: each ends in a clean status code with a
message (never a 500, never a hang), no more than the limit of a body is accepted before the answer,
and the server keeps answering ``/healthz`` afterwards.

One registry of cases (:data:`CASES`), one driver (:func:`test_hostile_upload`). Raw sockets send
what no well-behaved client would (a lying ``Content-Length``, an endless chunked body, a body that
stalls); httpx sends the hostile files (a 16-bit decompression-bomb PNG, a truncated JPEG, a WAV
whose header lies, an hour of FLAC, thousands of multipart parts, a huge filename).
"""

from __future__ import annotations

import io
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from conftest import make_settings
from fixtures.bad_files import good_jpeg
from fixtures.hostile import wav_with_header
from fixtures.served import connect, get, read_response, serve
from omnivec.api import create_app

TOKEN = "hostile-token"
LIMIT = 24 * 1024 * 1024
BUFFER = 64 * 1024
# what may be in flight between the client and the app when the answer is sent: the client's send
# buffer, the server's receive buffer (each at most twice BUFFER on Linux), uvicorn's 64 KB read-ahead
# and one piece the client was sending
SLACK = 4 * 2 * BUFFER + 64 * 1024 + 64 * 1024
IDLE_S = 1.0
BOUNDARY = "hostileboundary"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Answer:
    status: int
    detail: str
    sent_before_answer: int = 0
    seconds: float = 0.0


@dataclass
class Case:
    name: str
    send: Callable[[int], Answer]
    statuses: set[int]
    words: tuple[str, ...] = ()  # the message names one of these
    most_sent: int | None = None  # bytes the client may send before the answer
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- raw requests


def _head(method: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} /search HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _multipart_head(filename: str = "x.jpg") -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()


def _answer(s: socket.socket, t0: float, sent: int) -> Answer:
    status, _, body = read_response(s)
    import json

    try:
        detail = json.loads(body)["detail"]
    except ValueError:
        detail = body.decode("utf-8", "replace")
    return Answer(status, detail if isinstance(detail, str) else json.dumps(detail), sent, time.perf_counter() - t0)


def _stream(port: int, headers: dict[str, str], pieces: Iterator[bytes], limit_s: float = 60) -> Answer:
    """Send the head, then ``pieces`` until the server answers; count what was sent before."""
    with connect(port, buffer=BUFFER) as s:
        t0 = time.perf_counter()
        s.sendall(_head("POST", headers))
        s.setblocking(False)
        sent, pending = 0, b""
        while time.perf_counter() - t0 < limit_s:
            readable, writable, _ = select.select([s], [s], [], 1.0)
            if readable:
                break
            if writable:
                pending = pending or next(pieces, b"")
                if not pending:
                    readable, _, _ = select.select([s], [], [], limit_s)
                    break
                try:
                    n = s.send(pending)
                except OSError:
                    break
                sent, pending = sent + n, pending[n:]
        s.setblocking(True)
        s.settimeout(10)
        return _answer(s, t0, sent)


def over_limit_length(port: int) -> Answer:
    headers = {**AUTH, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Content-Length": str(LIMIT + 1)}
    return _stream(port, headers, iter(()))


def no_token_big_body(port: int) -> Answer:
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Content-Length": str(10 * LIMIT)}
    return _stream(port, headers, iter(()))  # not one body byte: the answer must not need any


def endless_chunked(port: int) -> Answer:
    def pieces() -> Iterator[bytes]:
        block = b"\0" * 65536
        yield b"%x\r\n" % len(_multipart_head()) + _multipart_head() + b"\r\n"
        while True:
            yield b"%x\r\n" % len(block) + block + b"\r\n"

    headers = {**AUTH, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Transfer-Encoding": "chunked"}
    return _stream(port, headers, pieces())


def length_says_more_then_stalls(port: int) -> Answer:
    headers = {**AUTH, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Content-Length": "100000"}
    return _stream(port, headers, iter([_multipart_head() + b"\xff\xd8\xff" + b"\0" * 100]))


def length_says_less_than_sent(port: int) -> Answer:
    body = _multipart_head() + good_jpeg() + f"\r\n--{BOUNDARY}--\r\n".encode()
    headers = {**AUTH, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Content-Length": "64"}
    return _stream(port, headers, iter([body, b"\0" * (2 << 20)]))


# --------------------------------------------------------------------------- hostile files


def _post(port: int, files: object, data: dict[str, str] | None = None, timeout: float = 600) -> Answer:
    t0 = time.perf_counter()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout) as c:
        r = c.post("/search", files=files, data=data, headers=AUTH)  # type: ignore[arg-type]
    try:
        body = r.json()
    except ValueError:
        body = {"detail": r.text}
    detail = body["detail"] if "detail" in body else f"{len(body['hits'])} hits for a {body['query']['kind']} upload"
    return Answer(r.status_code, detail if isinstance(detail, str) else str(detail), seconds=time.perf_counter() - t0)


def thousands_of_parts(port: int) -> Answer:
    return _post(port, [("file", (f"f{i}.jpg", b"\xff\xd8\xff", "image/jpeg")) for i in range(5000)])


def thousands_of_fields(port: int) -> Answer:
    return _post(port, {"file": ("a.jpg", good_jpeg(), "image/jpeg")}, {f"f{i}": "1" for i in range(5000)})


def huge_filename(port: int) -> Answer:
    return _post(port, {"file": ("n" * (8 << 20) + ".jpg", good_jpeg(), "image/jpeg")})


def bomb_png_16bit(port: int) -> Answer:
    buf = io.BytesIO()
    Image.new("I;16", (9400, 9400), 1000).save(buf, format="PNG")
    assert len(buf.getvalue()) < LIMIT
    return _post(port, {"file": ("bomb.png", buf.getvalue(), "image/png")})


def truncated_jpeg(port: int) -> Answer:
    return _post(port, {"file": ("cut.jpg", good_jpeg()[:300], "image/jpeg")})


def lying_wav(port: int) -> Answer:
    data = bytearray(wav_with_header(rate=16000, channels=1, seconds=1.0))
    data[40:44] = (2**31 - 1).to_bytes(4, "little")  # the data chunk claims 2 GB
    return _post(port, {"file": ("lies.wav", bytes(data), "audio/wav")})


def hour_of_flac(port: int) -> Answer:
    rate, buf = 8000, io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=rate, channels=1, format="FLAC", subtype="PCM_16") as f:
        for minute in range(60):
            t = np.arange(minute * 60 * rate, (minute + 1) * 60 * rate) / rate
            f.write((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    return _post(port, {"file": ("hour.flac", buf.getvalue(), "audio/flac")}, {"k": "3"})


CASES = [
    Case("Content-Length over the limit", over_limit_length, {413}, ("larger than",), most_sent=0),
    Case("no token, 240 MB announced", no_token_big_body, {401}, ("token",), most_sent=0),
    Case("endless chunked body", endless_chunked, {413}, ("larger than",), most_sent=LIMIT + SLACK),
    Case("Content-Length says more, then the body stalls", length_says_more_then_stalls, {408}, ("stalled",)),
    Case("Content-Length says less than is sent", length_says_less_than_sent, {400, 422}),
    Case("5000 file parts", thousands_of_parts, {400}, ("too many",)),
    Case("5000 form fields", thousands_of_fields, {400}, ("too many",)),
    Case("an 8 MB filename", huge_filename, {200, 400}),
    Case("16-bit 9400x9400 PNG bomb", bomb_png_16bit, {200, 400}),
    Case("truncated JPEG", truncated_jpeg, {400}, ("truncated", "corrupt")),
    Case("WAV whose header claims 2 GB", lying_wav, {200, 400}),
    Case("an hour of 8 kHz FLAC", hour_of_flac, {200, 400, 413}),
]


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path, tiny_clap_dir: Path) -> Iterator[int]:
    from omnivec.pipeline.run import ingest
    from omnivec.sample import build_sample_corpus

    root = tmp_path_factory.mktemp("apihostile")
    settings = make_settings(root / "store", tiny_clip_dir, tiny_clap_dir, batch_size=8)
    assert ingest([str(build_sample_corpus(root / "corpus", audio=True))], settings).failed == 0
    app = create_app(settings, token=TOKEN, max_upload_bytes=LIMIT, body_idle_s=IDLE_S)
    with serve(app, buffer=BUFFER) as p:
        yield p


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_upload(port: int, case: Case) -> None:
    answer = case.send(port)
    assert answer.status in case.statuses, (answer.status, answer.detail[:300])
    assert answer.detail.strip(), "every answer says why"
    assert not case.words or any(w in answer.detail.lower() for w in case.words), answer.detail[:300]
    if case.most_sent is not None:
        assert answer.sent_before_answer <= case.most_sent, answer.sent_before_answer
    if answer.status == 408:
        assert answer.seconds < IDLE_S + 10
    status, _, body = get(port, "/healthz")
    assert status == 200 and b'"ok"' in body
    status, _, _ = get(port, "/search?q=circle&k=1", AUTH)
    assert status == 200
