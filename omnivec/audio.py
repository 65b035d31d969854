"""Audio: open, stream-decode, downmix, resample and cut into fixed windows.

Memory does not grow with duration: files are read in blocks, resampled with a streaming soxr
resampler, and windows are yielded one at a time. Windows are deterministic: window ``k`` starts at
``k * hop`` seconds; the last partial window is zero-padded, never dropped, and a window is only
emitted while the previous one did not reach the end of the file. The same file gives the same
windows, sample for sample, on every run.

wav, flac, ogg and mp3 are read with soundfile (libsndfile); m4a, aac, opus and webm (and anything
libsndfile refuses) with PyAV.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from omnivec.errors import DecodeError, OmnivecError
from omnivec.media import open_regular, sniff

SOUNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3"})
BLOCK_SECONDS = 2.0
MAX_BLOCK_SAMPLES = 1 << 21  # samples (all channels) decoded at once: 8 MB of float32
MIN_RATE, MAX_RATE = 1_000, 768_000  # Hz: a header outside this is corrupt, not a recording
MAX_CHANNELS = 1024


@dataclass(frozen=True, slots=True)
class AudioInfo:
    path: str
    sample_rate: int
    channels: int
    frames: int | None  # None when the container does not say
    backend: str  # soundfile | pyav
    max_s: float | None = None  # decoding past this many seconds raises DecodeError (a query's limit)
    inside: tuple[str, ...] | None = None  # real paths the file must resolve into (see media.open_regular)

    @property
    def duration_s(self) -> float | None:
        return None if self.frames is None else self.frames / self.sample_rate


@dataclass(frozen=True, slots=True)
class Window:
    start_s: float
    end_s: float  # end of real audio in this window (< start + window for a padded last window)
    samples: np.ndarray  # float32 mono at the target rate, exactly window length


@contextlib.contextmanager
def _opened(path: str, inside: Sequence[str] | None) -> Iterator[BinaryIO]:
    """The file, opened once with omnivec's checks (a regular file, inside ``inside``): decoders read
    this descriptor, never the path again, so the file cannot be swapped under them."""
    fd, _ = open_regular(path, inside)  # a pipe or a device is refused here, before a decoder can block on it
    with os.fdopen(fd, "rb") as fh:
        yield fh


def _check_content(fh: BinaryIO) -> None:
    try:
        head = fh.read(16)
        fh.seek(0)
    except OSError as exc:
        raise DecodeError(f"cannot read the file: {exc.strerror or exc}", stage="read") from None
    if not head:
        raise DecodeError("file is empty (0 bytes)", stage="read")
    kind = sniff(head)
    if kind is not None and not kind.endswith(("audio", "media")) and kind not in ("RIFF data",):
        raise DecodeError(f"content is {kind}, not audio (wrong extension?)")


def _checked(info: AudioInfo) -> AudioInfo:
    """Refuse headers no real recording has: they would turn a small file into days of windows (a 1 Hz
    rate resampled to 48 kHz) or blocks of gigabytes."""
    if not MIN_RATE <= info.sample_rate <= MAX_RATE:
        raise DecodeError(f"sample rate {info.sample_rate:,} Hz is outside the {MIN_RATE:,}-{MAX_RATE:,} Hz "
                          "omnivec decodes (corrupt header?)")
    if info.channels > MAX_CHANNELS:
        raise DecodeError(f"{info.channels:,} channels, over the {MAX_CHANNELS} omnivec decodes (corrupt header?)")
    return info


def probe(path: str, inside: Sequence[str] | None = None) -> AudioInfo:
    """Open the file's header; raises DecodeError with a readable reason if it is not audio, or if it
    resolves outside ``inside`` (the source folders)."""
    ext = os.path.splitext(path)[1].lower()
    sf_error: str | None = None
    found = tuple(inside) if inside is not None else None
    with _opened(path, inside) as fh:
        _check_content(fh)
        if ext in SOUNDFILE_EXTENSIONS:
            import soundfile as sf

            try:
                info = sf.info(fh)
                if info.samplerate <= 0 or info.channels <= 0:
                    raise DecodeError(f"invalid header: {info.samplerate} Hz, {info.channels} channels "
                                      "(corrupt header?)")
                return _checked(AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames),
                                          "soundfile", inside=found))
            except (RuntimeError, sf.LibsndfileError) as exc:
                sf_error = re.sub(r"^Error opening .*?: ", "", str(exc))
            fh.seek(0)
        return _checked(dataclasses.replace(_probe_av(fh, sf_error), path=path, inside=found))


def probe_query(path: str, max_s: float) -> AudioInfo:
    """The header of a query file that may hold at most ``max_s`` seconds: refused up front when its
    header says it is longer, and its windows raise DecodeError once its samples run past ``max_s``
    (a header that does not say, or lies)."""
    info = probe(path)
    if info.duration_s is not None and info.duration_s > max_s:
        raise OmnivecError(f"query file {path}: {info.duration_s:,.0f} s of audio, over the {max_s:g} s a query "
                           "may be (max_query_audio_s)",
                           ["search with an excerpt: the part whose like you are looking for",
                            "or raise max_query_audio_s (OMNIVEC_MAX_QUERY_AUDIO_S)"])
    return dataclasses.replace(info, max_s=max_s)


def _probe_av(fh: BinaryIO, sf_error: str | None) -> AudioInfo:
    import av

    try:
        with av.open(fh, mode="r") as container:
            if not container.streams.audio:
                raise DecodeError("the file has no audio stream")
            st: Any = container.streams.audio[0]
            rate = int(st.codec_context.sample_rate or st.rate or 0)
            channels = int(st.codec_context.channels or 0)
            frames = None
            if st.duration is not None and st.time_base is not None and rate:
                frames = int(round(float(st.duration * st.time_base) * rate))
            if rate <= 0 or channels <= 0:
                raise DecodeError(f"invalid audio stream: {rate} Hz, {channels} channels "
                                  "(corrupt or truncated header?)")
            return AudioInfo("", rate, channels, frames, "pyav")
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - any container error means "not decodable"
        av_error = re.sub(r": '[^']*'$", "", f"{type(exc).__name__}: {exc}")  # the file's name, if it is said
        detail = f"libsndfile: {sf_error}; PyAV: {av_error}" if sf_error else av_error
        raise DecodeError(f"not a decodable audio file (corrupt header or wrong extension?): {detail}") from None


def _blocks_soundfile(info: AudioInfo) -> Iterator[np.ndarray]:
    import soundfile as sf

    # BLOCK_SECONDS of audio, but never more than MAX_BLOCK_SAMPLES samples over all channels
    block = max(1, min(int(info.sample_rate * BLOCK_SECONDS), MAX_BLOCK_SAMPLES // info.channels))
    try:
        with _opened(info.path, info.inside) as fh, sf.SoundFile(fh) as f:
            while True:
                data = f.read(block, dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    return
                yield data
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise DecodeError(f"corrupt audio data: {exc}") from None


def _blocks_av(info: AudioInfo) -> Iterator[np.ndarray]:
    import av

    try:
        with _opened(info.path, info.inside) as fh, av.open(fh, mode="r") as container:
            resampler = av.AudioResampler(format="flt", layout=None, rate=None)
            frame: Any
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    arr = out.to_ndarray()  # packed float: (1, samples * channels)
                    yield arr.reshape(-1, len(out.layout.channels)).astype(np.float32, copy=False)
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DecodeError(f"corrupt audio data: {type(exc).__name__}: {exc}") from None


def iter_mono(info: AudioInfo, target_rate: int) -> Iterator[np.ndarray]:
    """float32 mono blocks at ``target_rate``; non-finite samples raise DecodeError."""
    import soxr

    blocks = _blocks_soundfile(info) if info.backend == "soundfile" else _blocks_av(info)
    resampler = None if info.sample_rate == target_rate else soxr.ResampleStream(
        info.sample_rate, target_rate, 1, dtype="float32", quality="HQ")
    seen = 0
    limit = None if info.max_s is None else int(info.max_s * info.sample_rate)
    for block in blocks:
        if limit is not None and seen + block.shape[0] > limit:
            raise DecodeError(f"the audio runs past {info.max_s:g} s, the longest a query may be "
                              "(max_query_audio_s)")
        mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        bad = int(np.count_nonzero(~np.isfinite(mono)))
        if bad:
            raise DecodeError(f"{bad} non-finite samples (NaN/inf) near {seen / info.sample_rate:.1f} s: "
                              "the file is corrupt")
        seen += mono.shape[0]
        mono = np.clip(mono, -1.0, 1.0)
        out = mono if resampler is None else resampler.resample_chunk(mono, last=False)
        if out.size:
            yield np.ascontiguousarray(out, dtype=np.float32)
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if tail.size:
            yield np.ascontiguousarray(tail, dtype=np.float32)
    if seen == 0:
        raise DecodeError("the file holds no audio samples")


def iter_windows(info: AudioInfo, target_rate: int, window_s: float, hop_s: float) -> Iterator[Window]:
    """Fixed windows over the whole file (see the module docstring for the rule)."""
    win = int(round(window_s * target_rate))
    hop = int(round(hop_s * target_rate))
    if win <= 0 or hop <= 0 or hop > win:
        raise ValueError("window and hop must be positive, and hop <= window (every sample is covered)")
    buf = np.zeros(0, dtype=np.float32)
    start = 0  # sample index of buf[0]
    emitted_end = 0  # end (in samples) of real audio covered by emitted windows
    for block in iter_mono(info, target_rate):
        buf = np.concatenate([buf, block]) if buf.size else block
        while buf.size >= win:
            yield Window(start / target_rate, (start + win) / target_rate, buf[:win].copy())
            emitted_end = start + win
            buf = buf[hop:]
            start += hop
    total = start + buf.size
    if total > emitted_end and buf.size:  # the tail no full window covered: pad it
        padded = np.zeros(win, dtype=np.float32)
        padded[: buf.size] = buf
        yield Window(start / target_rate, total / target_rate, padded)


def decode_all(path: str, target_rate: int) -> np.ndarray:
    """The whole file as one mono array (queries and tests only: memory grows with duration)."""
    info = probe(path)
    parts = list(iter_mono(info, target_rate))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
