"""Fuzz omnivec's decoders with hypothesis: mutated real files and raw bytes, for N minutes.

Targets: ``sniff``, ``image`` (decode_image), ``text`` (decode_text), ``read_file``, ``audio`` (probe +
iter_windows), ``chunking`` (chunk_text, with its contract checked), ``manifest`` (read_manifest,
read_caption and discover over the manifest's folder) and ``caption_uri`` (read_caption on any
string). Inputs are seed files of every supported format (several image modes, every audio container,
CSV/JSONL/Parquet manifests) put through random byte flips, interesting integers, truncation,
insertion, deletion, splicing and repetition, plus raw random bytes.

Anything raised other than :class:`DecodeError` / :class:`OmnivecError` (and their subclasses) is a
finding, and so is a call slower than ``--slow`` seconds or a broken chunking contract. Hypothesis
shrinks each new finding; its smallest input is saved under ``--out`` as
``<target>/<signature>/input.<ext>`` with ``report.txt`` (exception, traceback, how to replay).
Known signatures are counted, not re-shrunk, so the run keeps exploring.

    .venv/bin/python benchmarks/fuzz_decoders.py --minutes 5
    .venv/bin/python benchmarks/fuzz_decoders.py --minutes 2 --targets image,audio --out /tmp/findings
    .venv/bin/python benchmarks/fuzz_decoders.py --replay fuzz-findings/image/<signature>/input.png

Exits 1 when there are findings. Ends with one JSON line: examples run per target and findings.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import resource
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from omnivec.errors import DecodeError, OmnivecError  # noqa: E402

ALLOWED: tuple[type[BaseException], ...] = (DecodeError, OmnivecError)
MAX_PIXELS = 4_000_000  # decode_image's limit while fuzzing (keeps each example fast)
AUDIO_RATE, WINDOW_S, HOP_S = 16000, 1.0, 0.5
MAX_WINDOWS = 2000  # windows pulled from one fuzzed audio file
INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
               0xFFFFFFFF)


class ContractBroken(AssertionError):
    """A decoder returned, but what it returned breaks its contract."""


class TooSlow(Exception):
    """One call ran past ``--slow`` seconds (raised by a timer signal inside the call)."""


@contextlib.contextmanager
def _alarm(seconds: float) -> Any:
    """Raise TooSlow in the main thread after ``seconds`` (Python code and most C calls that return
    to the interpreter are interrupted; a C loop that never does is not)."""
    import signal

    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise TooSlow(f"still running after --slow {seconds:g} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# --------------------------------------------------------------------------- seeds


def _img(mode: str, fmt: str, size: tuple[int, int] = (12, 9), **params: Any) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(len(mode) * 31 + len(fmt))
    if mode in ("I;16", "I"):
        img = Image.fromarray(rng.integers(0, 65535, (size[1], size[0])).astype(np.uint16 if mode == "I;16"
                                                                                 else np.int32))
    elif mode == "F":
        img = Image.fromarray(rng.random((size[1], size[0])).astype(np.float32))
    else:
        img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "RGB").convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def image_seeds() -> list[bytes]:
    from PIL import Image

    seeds = [_img("RGB", "PNG"), _img("RGBA", "PNG"), _img("P", "PNG"), _img("LA", "PNG"), _img("I;16", "PNG"),
             _img("1", "PNG"), _img("RGB", "JPEG"), _img("L", "JPEG"), _img("CMYK", "JPEG"),
             _img("RGB", "JPEG", progressive=True), _img("P", "GIF"), _img("RGB", "BMP"), _img("P", "BMP"),
             _img("RGB", "TIFF"), _img("RGB", "TIFF", compression="tiff_lzw"), _img("F", "TIFF"),
             _img("I;16", "TIFF"), _img("RGB", "WEBP"), _img("RGBA", "WEBP", lossless=True)]
    frames = [Image.new("P", (8, 8), i) for i in range(3)]  # an animated GIF
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=10, loop=0)
    seeds.append(buf.getvalue())
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: exif_transpose runs
    buf = io.BytesIO()
    Image.new("RGB", (6, 4), (1, 2, 3)).save(buf, "JPEG", exif=exif.tobytes())
    seeds.append(buf.getvalue())
    return seeds


def audio_seeds(folder: Path) -> list[tuple[str, bytes]]:
    """(extension, bytes) of 0.3 s files of every container omnivec reads."""
    import soundfile as sf

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from fixtures.audio_files import sine, write_av

    out = []
    x = sine(0.3, 8000)
    for ext, fmt, sub in (("wav", "WAV", "PCM_16"), ("wav", "WAV", "FLOAT"), ("flac", "FLAC", "PCM_16"),
                          ("ogg", "OGG", "VORBIS"), ("mp3", "MP3", "MPEG_LAYER_III")):
        buf = io.BytesIO()
        sf.write(buf, np.stack([x, x], axis=1) if sub == "FLOAT" else x, 8000, format=fmt, subtype=sub)
        out.append((ext, buf.getvalue()))
    folder.mkdir(parents=True, exist_ok=True)
    for ext, fmt, codec in (("m4a", "ipod", "aac"), ("aac", "adts", "aac"), ("opus", "ogg", "libopus"),
                            ("webm", "webm", "libopus")):
        out.append((ext, write_av(folder / f"seed.{ext}", fmt, codec, seconds=0.3).read_bytes()))
    return out


def manifest_seeds() -> list[tuple[str, bytes]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv = b"id,image,caption,audio\na,pic.png,a red square,\nb,,\"quoted, caption\",snd.wav\n"
    jsonl = (b'{"id": 1, "image": "pic.png", "caption": "hello"}\n'
             b'{"image_2": "sub/x.jpg", "caption_de": "hallo \\u00fc"}\n')
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ["x", "y"], "image": ["pic.png", None], "caption": ["one", "two"]}), buf)
    return [("csv", csv), ("jsonl", jsonl), ("parquet", buf.getvalue())]


MANIFEST_KEYS = ["id", "image", "image_2", "audio", "text", "caption", "caption_de", "Caption", "IMAGE", "notes"]


def _odd_text() -> st.SearchStrategy[str]:
    """Text that manifests and file names can hold: control characters, lone surrogates (from JSON's
    \\u escapes), separators, paths."""
    surrogates = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)
    pieces = st.one_of(st.text(max_size=12), surrogates, st.sampled_from(
        ["pic.png", "../pic.png", "/dev/zero", "sub/x.jpg", "a#row=0&col=caption", "\x00", "\n", ",", '"', "snd.wav",
         "x.txt", " ", "#", "&col="]))
    return st.lists(pieces, max_size=4).map("".join)


def json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _odd_text())
    return st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=3),
                                                     st.dictionaries(_odd_text(), c, max_size=3)), max_leaves=6)


def _jsonl(rows: list[dict[str, Any]], ascii_only: bool) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=ascii_only) + "\n" for r in rows).encode("utf-8", "surrogatepass")


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    import csv

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8", "surrogatepass")


def generated_manifests() -> st.SearchStrategy[tuple[str, bytes]]:
    keys = st.one_of(st.sampled_from(MANIFEST_KEYS), _odd_text())
    rows = st.lists(st.dictionaries(keys, json_values(), max_size=5), max_size=5)
    jsonl = st.builds(_jsonl, rows, st.booleans()).map(lambda b: ("jsonl", b))
    header = st.lists(keys, min_size=1, max_size=4)
    csv = header.flatmap(lambda h: st.builds(
        _csv, st.just(h), st.lists(st.lists(_odd_text(), min_size=len(h), max_size=len(h) + 1), max_size=4)))
    return st.one_of(jsonl, csv.map(lambda b: ("csv", b)))


TEXT_SEEDS = ["plain words here", "\ufeffwith a BOM", "naïve café 日本語 😀", "line\r\nbreaks\n\n\ttabs",
              "x" * 300, ""]


# --------------------------------------------------------------------------- strategies


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with up to 6 random edits, or (1 in 8) raw random bytes."""
    if draw(st.integers(0, 7)) == 0:
        return draw(st.binary(max_size=4096))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "byte", "int", "insert", "delete", "truncate", "splice", "repeat"]))
        n = len(data)
        # half the edits land in the first 64 bytes, where headers (sizes, rates, counts) live
        pos = draw(st.one_of(st.integers(0, max(0, min(n, 64) - 1)), st.integers(0, max(0, n - 1))))
        if op == "flip" and n:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte" and n:
            data[pos] = draw(st.integers(0, 255))
        elif op == "int" and n:
            width = draw(st.sampled_from([1, 2, 4]))
            value = draw(st.sampled_from(INTERESTING)) & ((1 << (8 * width)) - 1)
            data[pos : pos + width] = value.to_bytes(width, draw(st.sampled_from(["little", "big"])))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete" and n:
            del data[pos : pos + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[pos:]
        elif op == "splice":
            other = draw(st.sampled_from(seeds))
            start = draw(st.integers(0, max(0, len(other) - 1)))
            data[pos:] = other[start:]
        elif op == "repeat" and n:
            piece = bytes(data[pos : pos + draw(st.integers(1, 32))])
            data[pos:pos] = piece * draw(st.integers(1, 200))
    return bytes(data)


def texts() -> st.SearchStrategy[str]:
    words = st.text(st.characters(codec="utf-8"), max_size=40)
    seps = st.sampled_from([" ", "  ", "\n", "\n\n", "\t", "\u3000", "\u00a0", "\r\n", ""])
    joined = st.lists(st.tuples(words, seps), max_size=60).map(lambda ps: "".join(w + s for w, s in ps))
    return st.one_of(joined, st.sampled_from(TEXT_SEEDS), st.text(max_size=300),
                     st.builds(lambda c, n: c * n, st.characters(codec="utf-8"), st.integers(1, 2000)),
                     st.builds(lambda w, n: " ".join([w * n] * 3), st.text(min_size=1, max_size=3).filter(
                         lambda w: not any(ch.isspace() for ch in w)), st.integers(1000, 40000)))


# --------------------------------------------------------------------------- targets


def _words(s: str) -> int:
    return len(s.split())


def _chars(s: str) -> int:
    return len(s)


def _bytes(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


def _bpe_like(s: str) -> int:
    """Tokens of a toy BPE: merge the first adjacent pair of pieces that fits in 4 characters, rescan,
    repeat. Quadratic in the length of a word, as real BPE tokenizers are."""
    total = 0
    for word in s.split():
        toks = list(word)
        i = 0
        while i < len(toks) - 1:
            if len(toks[i]) + len(toks[i + 1]) <= 4:
                toks[i : i + 2] = [toks[i] + toks[i + 1]]
                i = 0
            else:
                i += 1
        total += len(toks)
    return total


COUNTERS: dict[str, Callable[[str], int]] = {"words": _words, "chars": _chars, "bytes": _bytes, "bpe": _bpe_like}


def check_chunks(text: str, count_name: str, max_tokens: int, overlap: int) -> None:
    from omnivec.chunking import chunk_text

    count = COUNTERS[count_name]
    chunks = chunk_text(text, count, max_tokens, overlap)
    covered = bytearray(len(text))
    prev = -1
    for c in chunks:
        if count(c.text) > max_tokens and len(c.text) > 1:  # one character cannot be cut further
            raise ContractBroken(f"a chunk has {count(c.text)} tokens > {max_tokens}")
        if not (0 <= c.start < c.end <= len(text)) or text[c.start : c.end] != c.text:
            raise ContractBroken(f"chunk offsets {c.start}:{c.end} do not match its text")
        if c.start <= prev:
            raise ContractBroken("chunks do not move forward")
        prev = c.start
        covered[c.start : c.end] = b"\x01" * (c.end - c.start)
    lost = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    if lost:
        raise ContractBroken(f"characters at {lost[:5]} are in no chunk")


@dataclass
class Target:
    name: str
    strategy: st.SearchStrategy[Any]
    run: Callable[[Any], None]
    ext: Callable[[Any], str] = lambda _: "bin"
    dump: Callable[[Any], bytes] = lambda x: x if isinstance(x, bytes) else repr(x).encode("utf-8", "backslashreplace")


class Workspace:
    """A scratch folder the file-based targets write into (one file at a time)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="omnivec-fuzz-"))
        self.n = 0

    def write(self, name: str, data: bytes) -> Path:
        self.n += 1
        folder = self.root / f"{self.n % 4}"
        if folder.exists():
            for p in folder.iterdir():
                p.unlink()
        folder.mkdir(exist_ok=True)
        path = folder / name
        path.write_bytes(data)
        return path


def make_targets(ws: Workspace) -> dict[str, Target]:
    from omnivec.audio import iter_windows, probe
    from omnivec.manifests import read_caption, read_manifest
    from omnivec.media import decode_image, decode_text, read_file, sniff
    from omnivec.sources import discover

    imgs = image_seeds()
    auds = audio_seeds(ws.root / "seeds")
    mans = manifest_seeds()
    text_bytes = [t.encode("utf-8") for t in TEXT_SEEDS] + [b"\xef\xbb\xbfbom", "é".encode("latin-1")]

    def run_image(data: bytes) -> None:
        img = decode_image(data, MAX_PIXELS)
        if img.mode != "RGB" or img.size[0] * img.size[1] > MAX_PIXELS:
            raise ContractBroken(f"decode_image returned mode {img.mode} size {img.size}")

    def run_text(data: bytes) -> None:
        if not isinstance(decode_text(data), str):
            raise ContractBroken("decode_text returned a non-string")

    def run_read(data: bytes) -> None:
        path = ws.write("f.bin", data)
        fb = read_file(str(path), 2048)
        if fb.data != data or fb.size != len(data):
            raise ContractBroken("read_file returned other bytes than the file holds")

    def run_audio(case: tuple[str, bytes]) -> None:
        ext, data = case
        path = ws.write(f"a.{ext}", data)
        info = probe(str(path))
        for n, w in enumerate(iter_windows(info, AUDIO_RATE, WINDOW_S, HOP_S)):
            if w.samples.shape != (int(AUDIO_RATE * WINDOW_S),) or not np.isfinite(w.samples).all():
                raise ContractBroken(f"window {n} has shape {w.samples.shape} or non-finite samples")
            if n >= MAX_WINDOWS:
                break

    def run_manifest(case: tuple[str, bytes]) -> None:
        ext, data = case
        path = ws.write(f"m.{ext}", data)
        (path.parent / "pic.png").write_bytes(imgs[0])
        rows = None
        with contextlib.suppress(*ALLOWED):
            rows = read_manifest(str(path))
        for row in rows or ():
            for col, uri, text in row.captions:
                if read_caption(uri) != text:
                    raise ContractBroken(f"read_caption({uri!r}) differs from the manifest's {col}")
        discover([str(path.parent)])

    def run_caption_uri(uri: str) -> None:
        read_caption(uri)

    audio_strategy = st.sampled_from(auds).flatmap(
        lambda seed: st.tuples(st.sampled_from([seed[0]] * 3 + ["wav", "flac", "ogg", "mp3", "m4a", "aac", "opus",
                                                                "webm"]),
                               mutated([seed[1]] + [d for e, d in auds if e == seed[0]])))
    manifest_strategy = st.one_of(
        st.sampled_from(mans).flatmap(lambda seed: st.tuples(st.just(seed[0]), mutated([seed[1]]))),
        generated_manifests())
    uris = st.one_of(st.text(max_size=80), st.builds(
        lambda m, r, c: f"{m}#row={r}&col={c}", st.text(max_size=30), st.text(max_size=8), st.text(max_size=10)))

    def dump_pair(x: tuple[str, bytes]) -> bytes:
        return x[1]

    return {
        "sniff": Target("sniff", st.binary(max_size=32), lambda d: (sniff(d), None)[1]),
        "image": Target("image", mutated(imgs), run_image, ext=lambda d: _image_ext(d)),
        "text": Target("text", st.one_of(mutated(text_bytes), texts().map(
            lambda t: t.encode("utf-8", "surrogatepass"))), run_text, ext=lambda _: "txt"),
        "read_file": Target("read_file", st.binary(max_size=3000), run_read),
        "audio": Target("audio", audio_strategy, run_audio, ext=lambda x: x[0], dump=dump_pair),
        "chunking": Target("chunking", st.tuples(texts(), st.sampled_from(sorted(COUNTERS)), st.integers(1, 80),
                                                 st.integers(0, 100)),
                           lambda a: check_chunks(*a), ext=lambda _: "json",
                           dump=lambda a: json.dumps(list(a), ensure_ascii=True).encode()),
        "manifest": Target("manifest", manifest_strategy, run_manifest, ext=lambda x: x[0], dump=dump_pair),
        "caption_uri": Target("caption_uri", uris, run_caption_uri, ext=lambda _: "txt",
                              dump=lambda u: u.encode("utf-8", "surrogatepass")),
    }


def _image_ext(data: bytes) -> str:
    from omnivec.media import sniff

    return {"PNG image": "png", "JPEG image": "jpg", "GIF image": "gif", "BMP image": "bmp",
            "TIFF image": "tiff", "WEBP image": "webp"}.get(sniff(data[:16]) or "", "img")


# --------------------------------------------------------------------------- the driver


@dataclass
class Finding:
    target: str
    signature: str
    error: str
    trace: str
    example: Any
    hits: int = 1


@dataclass
class Fuzzer:
    targets: dict[str, Target]
    out: Path
    slow_s: float
    findings: dict[str, Finding] = field(default_factory=dict)
    examples: Counter[str] = field(default_factory=Counter)

    def signature(self, target: str, exc: BaseException) -> str:
        """Exception type + the innermost frame of omnivec (else the innermost frame at all)."""
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.name != "fire"]  # not the alarm's
        ours = [f for f in frames if "/omnivec/" in f.filename] or frames
        where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
        detail = re.sub(r"\d+", "N", str(exc))[:60] if isinstance(exc, ContractBroken) else ""
        return f"{target}:{type(exc).__name__}:{where}:{detail}"

    def round(self, name: str, examples: int) -> None:
        target = self.targets[name]
        last: dict[str, Any] = {}

        @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                  suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink],
                  report_multiple_bugs=False)
        @given(target.strategy)
        def fuzz(example: Any) -> None:
            self.examples[name] += 1
            try:
                with _alarm(self.slow_s):
                    target.run(example)
            except ALLOWED:
                pass
            except TooSlow as exc:  # recorded as it is: shrinking would re-run slow examples
                self.slow(name, exc, example)
            except Exception as exc:  # noqa: BLE001 - a finding
                self._maybe_raise(name, exc, example, last)

        try:
            fuzz()
        except Exception as exc:  # noqa: BLE001 - hypothesis re-raises the shrunk failure
            sig, example = last.get("sig"), last.get("example")
            if sig is None:
                raise
            self.findings[sig] = Finding(name, sig, f"{type(exc).__name__}: {exc}"[:2000],
                                         "".join(traceback.format_exception(exc))[-6000:], example)
            self.save(self.findings[sig])

    def slow(self, name: str, exc: TooSlow, example: Any) -> None:
        sig = self.signature(name, exc)
        if sig in self.findings:
            self.findings[sig].hits += 1
            return
        self.findings[sig] = Finding(name, sig, f"TooSlow: {exc}", "".join(traceback.format_exception(exc))[-6000:],
                                     example)
        self.save(self.findings[sig])

    def _maybe_raise(self, name: str, exc: BaseException, example: Any, last: dict[str, Any]) -> None:
        sig = self.signature(name, exc)
        if sig in self.findings:  # known: count it and keep exploring
            self.findings[sig].hits += 1
            return
        last["sig"], last["example"] = sig, example
        raise exc

    def save(self, f: Finding) -> Path:
        target = self.targets[f.target]
        folder = self.out / f.target / hashlib.sha256(f.signature.encode()).hexdigest()[:12]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"input.{target.ext(f.example)}"
        path.write_bytes(target.dump(f.example))
        (folder / "report.txt").write_text(
            f"target: {f.target}\nsignature: {f.signature}\nerror: {f.error}\n\nreplay:\n"
            f"  .venv/bin/python benchmarks/fuzz_decoders.py --replay {path} --target {f.target}\n\n{f.trace}",
            encoding="utf-8")
        print(f"FINDING {f.signature}\n  {f.error[:300]}\n  saved {path}", flush=True)
        return path


def replay(path: Path, target_name: str | None) -> int:
    """Run one saved input through its target and print what happens."""
    ws = Workspace()
    name = target_name or path.parent.parent.name
    target = make_targets(ws)[name]
    data = path.read_bytes()
    example: Any
    if name in ("audio", "manifest"):
        example = (path.suffix.lstrip("."), data)
    elif name == "chunking":
        example = tuple(json.loads(data))
    elif name == "caption_uri":
        example = data.decode("utf-8", "surrogatepass")
    else:
        example = data
    try:
        target.run(example)
    except ALLOWED as exc:
        print(f"handled: {type(exc).__name__}: {exc}")
        return 0
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        return 1
    print("no error")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0, help="total time, shared round-robin by the targets")
    ap.add_argument("--targets", default="all", help="comma-separated targets (default: all)")
    ap.add_argument("--out", type=Path, default=Path("fuzz-findings"), help="folder for reproducing inputs")
    ap.add_argument("--examples", type=int, default=200, help="examples per round of one target")
    ap.add_argument("--slow", type=float, default=10.0, help="seconds after which one call is a finding")
    ap.add_argument("--max-memory-gb", type=float, default=4.0,
                    help="address-space limit: a memory blow-up becomes a MemoryError finding (0: none)")
    ap.add_argument("--replay", type=Path, help="run one saved input through its target and exit")
    ap.add_argument("--target", help="with --replay: the target (default: the input's folder name)")
    ap.add_argument("--verbose", action="store_true", help="keep the C libraries' complaints on stderr")
    args = ap.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore")  # libmpg123 and PIL complain loudly about broken files
    if args.max_memory_gb > 0:
        limit = int(args.max_memory_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if args.replay:
        return replay(args.replay, args.target)
    if not args.verbose:  # libmpg123, libtiff and FFmpeg write to fd 2 directly on every broken file
        sys.stdout.flush()
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    ws = Workspace()
    targets = make_targets(ws)
    names = sorted(targets) if args.targets == "all" else args.targets.split(",")
    fuzzer = Fuzzer({n: targets[n] for n in names}, args.out, args.slow)
    end = time.monotonic() + args.minutes * 60
    rounds = 0
    while time.monotonic() < end:
        for name in names:
            if time.monotonic() >= end:
                break
            fuzzer.round(name, args.examples)
        rounds += 1
        print(f"round {rounds}: {dict(fuzzer.examples)} examples, {len(fuzzer.findings)} findings", flush=True)
    summary = {"minutes": args.minutes, "examples": dict(fuzzer.examples),
               "findings": [{"signature": f.signature, "hits": f.hits, "error": f.error[:200]}
                            for f in fuzzer.findings.values()]}
    print(json.dumps(summary))
    return 1 if fuzzer.findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
