"""Read and decode one file: bytes -> checked content (RGB image or UTF-8 text).

Every failure raises :class:`DecodeError` with a sentence a user can act on; the pipeline turns
it into an ``errors`` row. Content is sniffed, so a PNG named ``.txt`` never reaches a text model.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from omnivec.errors import DecodeError

# omnivec enforces its own pixel limit (max_image_pixels) before decoding, with a clearer message
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_SIGNATURES: list[tuple[int, bytes, str]] = [
    (0, b"\x89PNG\r\n\x1a\n", "PNG image"),
    (0, b"\xff\xd8\xff", "JPEG image"),
    (0, b"GIF87a", "GIF image"),
    (0, b"GIF89a", "GIF image"),
    (0, b"II*\x00", "TIFF image"),
    (0, b"MM\x00*", "TIFF image"),
    (0, b"%PDF", "PDF document"),
    (0, b"PK\x03\x04", "ZIP archive"),
    (0, b"\x1f\x8b", "gzip data"),
    (0, b"\x7fELF", "ELF executable"),
    (0, b"fLaC", "FLAC audio"),
    (0, b"OggS", "Ogg audio"),
    (4, b"ftyp", "MP4/M4A media"),
]
IMAGE_KINDS = frozenset({"PNG image", "JPEG image", "GIF image", "BMP image", "TIFF image", "WEBP image"})


def sniff(head: bytes) -> str | None:
    """Name the kind of binary content from its first bytes, or None if not recognised."""
    if head[:4] == b"RIFF" and len(head) >= 12:
        return {b"WEBP": "WEBP image", b"WAVE": "WAV audio", b"AVI ": "AVI video"}.get(
            head[8:12], "RIFF data"
        )
    # "BM" and "ID3" alone are too weak (text can start "BMW ..." or "ID3 tags ..."): also check
    # the zero reserved bytes of a BMP header and the version byte of an ID3v2 header
    if head[:2] == b"BM" and head[6:10] == b"\x00\x00\x00\x00":
        return "BMP image"
    if head[:3] == b"ID3" and len(head) >= 5 and head[3] in (2, 3, 4) and head[4] == 0:
        return "MP3 audio"
    for offset, magic, kind in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return kind
    return None


@dataclass(frozen=True, slots=True)
class FileBytes:
    data: bytes
    size: int
    mtime_ns: int


_SPECIAL_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def special_kind(mode: int) -> str | None:
    """What a non-regular file is ("a named pipe", "a character device", ...); None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _SPECIAL_KINDS if test(mode)), "not a regular file")


def not_regular(kind: str) -> str:
    return f"not a regular file ({kind}); omnivec reads regular files only"


def storable(text: str) -> bool:
    """Whether ``text`` can be stored as UTF-8 (no lone surrogates, as undecodable file names have)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def display_path(text: str) -> str:
    """``text`` (a path or any string) as valid UTF-8: the bytes of an undecodable file name are shown
    as ``\\xNN`` escapes, other lone surrogates as ``\\udNNN``."""
    if storable(text):
        return text
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name can hold (from JSON, say)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


_FD_PATHS = "/proc/self/fd"  # Linux: the real path of an open descriptor, race-free


def lies_within(real: str, roots: Sequence[str]) -> bool:
    """Whether the real path ``real`` is one of ``roots`` or lies under one of them."""
    return any(real == r or real.startswith(r if r.endswith(os.sep) else r + os.sep) for r in roots)


def _outside() -> DecodeError:
    return DecodeError("the file now resolves outside the source folders (replaced by a symlink, or a folder on "
                       "its path by one, after it was found); not read. Pass --follow-links (follow_links = "
                       "true) to read what links point to", stage="read")


def _descriptor_path(fd: int) -> str | None:
    try:
        return os.readlink(f"{_FD_PATHS}/{fd}")
    except OSError:  # no /proc (not Linux, or not mounted)
        return None


def open_regular(path: str, inside: Sequence[str] | None = None) -> tuple[int, os.stat_result]:
    """Open a regular file for reading without ever blocking on a pipe or a device; returns the
    descriptor (the caller closes it) and its stat. Raises DecodeError(stage="read") otherwise.

    ``inside``: real paths the file must resolve into (the source folders), checked on the open
    descriptor where the system names it (Linux), so a link swapped in at any moment is caught; elsewhere
    on the path's real path just before it is opened."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    if inside is not None and not os.path.isdir(_FD_PATHS) and not lies_within(os.path.realpath(path), inside):
        raise _outside()
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise DecodeError("file vanished before it could be read", stage="read") from None
    except PermissionError:
        raise DecodeError("permission denied while reading the file", stage="read") from None
    except OSError as exc:  # ELOOP, ENXIO (a socket), EACCES on a folder on the way, ...
        raise DecodeError(f"cannot read the file: {exc.strerror or exc}", stage="read") from None
    try:
        st = os.fstat(fd)
        kind = special_kind(st.st_mode)
        if kind == "a folder":
            raise DecodeError("path is now a folder, not a file", stage="read")
        if kind is not None:
            raise DecodeError(not_regular(kind), stage="read")
        if inside is not None:
            real = _descriptor_path(fd)
            if not lies_within(os.path.realpath(path) if real is None else real, inside):
                raise _outside()
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _read_at_most(fd: int, expected: int, limit: int) -> bytes:
    """Read to the end, but never more than ``limit + 1`` bytes (a file that grows while it is read
    cannot take memory with it). The first read asks for the size stat gave, so memory is not
    reserved for the limit."""
    parts: list[bytes] = []
    total, ask = 0, min(expected, limit) + 1
    while total <= limit:
        part = os.read(fd, min(ask, limit + 1 - total))
        if not part:
            break
        parts.append(part)
        total += len(part)
        ask = 1 << 20
    return b"".join(parts)


def read_file(path: str, max_bytes: int, inside: Sequence[str] | None = None) -> FileBytes:
    """Read a whole file (it is hashed and decoded from memory), refusing empty or huge ones, and
    anything that is not a regular file (a pipe would block, /dev/zero would never end), or that
    resolves outside ``inside`` (see :func:`open_regular`)."""
    fd, st = open_regular(path, inside)
    try:
        if st.st_size > max_bytes:
            raise DecodeError(
                f"file is {st.st_size:,} bytes, over the {max_bytes:,}-byte limit for this modality",
                stage="read",
            )
        data = _read_at_most(fd, st.st_size, max_bytes)
    except PermissionError:
        raise DecodeError("permission denied while reading the file", stage="read") from None
    except IsADirectoryError:
        raise DecodeError("path is now a folder, not a file", stage="read") from None
    except OSError as exc:
        raise DecodeError(f"cannot read the file: {exc.strerror or exc}", stage="read") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise DecodeError(f"file grew past the {max_bytes:,}-byte limit while being read", stage="read")
    if not data:
        raise DecodeError("file is empty (0 bytes)", stage="read")
    return FileBytes(data, len(data), st.st_mtime_ns)


def _flatten_alpha(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


BLOCK_PIXELS = 1 << 18  # pixels converted at once from 16-bit or float (2 MB of float64)
HIGH_BIT_DEPTH_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
DEFAULT_MAX_DECODED_BYTES = 1 << 30  # max_image_decoded_bytes


def _row_blocks(img: Image.Image) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, pixels as float64) of consecutive row blocks: never a float copy of the whole image."""
    width, height = img.size
    rows = max(1, BLOCK_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        yield top, np.asarray(img.crop((0, top, width, min(top + rows, height)))).astype(np.float64)


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    """16-bit or float pixels scaled to 8-bit grey: I;16 over 0-65535; I over 0-255, or over 0-65535
    when a pixel exceeds 255; F from its minimum to its maximum (NaN is black). Row block by row block:
    memory is the 8-bit result plus one block, whatever the image's size."""
    lo, top = 0.0, 65535.0
    if img.mode == "I":
        top = 65535.0 if any(b.max(initial=0) > 255 for _, b in _row_blocks(img)) else 255.0
    elif img.mode == "F":
        lows, highs = [], []
        for _, b in _row_blocks(img):
            finite = b[~np.isnan(b)]
            if finite.size:
                lows.append(float(finite.min()))
                highs.append(float(finite.max()))
        lo, hi = (min(lows), max(highs)) if lows else (0.0, 0.0)
        top = (hi - lo) or 1.0
    out = np.empty((img.size[1], img.size[0]), dtype=np.uint8)
    with np.errstate(invalid="ignore", over="ignore"):
        for row, b in _row_blocks(img):  # in place: (b - lo) / top * 255 + 0.5, NaN as 0, clipped
            b -= lo
            np.nan_to_num(b, copy=False)
            b /= top
            b *= 255.0
            b += 0.5
            out[row : row + b.shape[0]] = np.clip(b, 0, 255, out=b)
    return Image.fromarray(out)


def to_rgb(img: Image.Image, release: bool = False) -> Image.Image:
    """Convert any PIL mode (CMYK, palette, LA, 16-bit, float) to 8-bit RGB. ``release``: close ``img``
    as soon as its pixels are no longer needed (a 16-bit image goes before its RGB copy is made)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return _flatten_alpha(img)
    if img.mode in HIGH_BIT_DEPTH_MODES:
        grey = _high_bit_depth_to_l(img)
        if release:
            img.close()
        return grey.convert("RGB")
    return img.convert("RGB")


def decoded_bytes(mode: str, size: tuple[int, int]) -> int:
    """Memory that decoding an image of ``mode`` and ``size`` to 8-bit RGB takes, known from its header:
    the decoded frame (Pillow keeps 1 byte per pixel for modes 1, L and P, 2 for 16-bit grey, 4 for
    every other mode) plus its RGB copy (4 bytes per pixel) unless it is RGB already."""
    pixels = size[0] * size[1]
    frame = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    return pixels * (frame + (0 if mode == "RGB" else 4))


def _chunk_bomb(exc: BaseException) -> DecodeError | None:
    """PIL's refusal of a compressed text or colour-profile chunk that inflates too far, if it is one."""
    msg = str(exc)
    if "decompressed data too large" in msg.lower() or "too much memory used in text chunks" in msg.lower():
        return DecodeError(f"refused as a likely decompression bomb: a compressed metadata chunk inflates "
                           f"past the safe limit ({msg})")
    return None


def decode_image(data: bytes, max_pixels: int, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> Image.Image:
    """Decode the first frame of an image, apply EXIF orientation, return 8-bit RGB. Refused before any
    pixel is decoded: over ``max_pixels``, or a decode that would take more than ``max_decoded_bytes``
    (:func:`decoded_bytes` of its mode and size)."""
    kind = sniff(data[:16])
    if kind is not None and kind not in IMAGE_KINDS:
        raise DecodeError(f"content is {kind}, not an image")
    try:
        img: Image.Image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"refused as a likely decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise DecodeError("not a recognised image format (corrupt file or wrong extension?)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise _chunk_bomb(exc) or DecodeError(f"corrupt image header: {exc}") from None
    width, height = img.size
    if width * height > max_pixels:
        raise DecodeError(
            f"image declares {width}x{height} = {width * height / 1e6:.1f} MP, over the "
            f"{max_pixels / 1e6:.1f} MP limit (max_image_pixels); refused as a possible "
            "decompression bomb"
        )
    need = decoded_bytes(img.mode, img.size)
    if need > max_decoded_bytes:
        raise DecodeError(
            f"image {width}x{height} in mode {img.mode} takes {need / 2**20:,.0f} MiB to decode and convert, "
            f"over the {max_decoded_bytes / 2**20:,.0f} MiB limit (max_image_decoded_bytes)"
        )
    try:
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img) or img
        return to_rgb(img, release=True)
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"refused as a likely decompression bomb: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error) as exc:
        raise _chunk_bomb(exc) or DecodeError(f"truncated or corrupt {img.format or 'image'} data: {exc}") from None


_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
              (b"\xfe\xff", "UTF-16"))


def decode_text(data: bytes) -> str:
    """Decode UTF-8 text (a BOM is dropped); binary content or bad bytes raise DecodeError."""
    kind = sniff(data[:16])
    if kind is not None:
        raise DecodeError(f"content is {kind}, not text (wrong extension?)")
    for mark, encoding in _WIDE_BOMS:
        if data.startswith(mark):
            raise DecodeError(f"content is {encoding} text (byte order mark), not UTF-8; convert the file to UTF-8")
    if b"\x00" in data[:65536]:
        raise DecodeError("content is binary (NUL bytes), not text")
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        # offsets are into the whole file, BOM included
        raise DecodeError(
            f"not valid UTF-8: byte 0x{data[bom + exc.start]:02x} at offset {bom + exc.start}; "
            "convert the file to UTF-8"
        ) from None
    if not text.strip():
        raise DecodeError("text is empty (only whitespace)")
    return text
