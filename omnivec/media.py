"""Read and decode one file: bytes -> checked content (RGB image or UTF-8 text).

Every failure raises :class:`DecodeError` with a sentence a user can act on; the pipeline turns
it into an ``errors`` row. Content is sniffed, so a PNG named ``.txt`` never reaches a text model.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
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


def read_file(path: str, max_bytes: int) -> FileBytes:
    """Read a whole file (it is hashed and decoded from memory), refusing empty or huge ones."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if st.st_size > max_bytes:
                raise DecodeError(
                    f"file is {st.st_size:,} bytes, over the {max_bytes:,}-byte limit for this modality",
                    stage="read",
                )
            data = fh.read()
    except FileNotFoundError:
        raise DecodeError("file vanished before it could be read", stage="read") from None
    except PermissionError:
        raise DecodeError("permission denied while reading the file", stage="read") from None
    except IsADirectoryError:
        raise DecodeError("path is now a folder, not a file", stage="read") from None
    except OSError as exc:
        raise DecodeError(f"cannot read the file: {exc.strerror or exc}", stage="read") from None
    if len(data) > max_bytes:
        raise DecodeError(f"file grew past the {max_bytes:,}-byte limit while being read", stage="read")
    if not data:
        raise DecodeError("file is empty (0 bytes)", stage="read")
    return FileBytes(data, len(data), st.st_mtime_ns)


def _flatten_alpha(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


def _high_bit_depth_to_rgb(img: Image.Image) -> Image.Image:
    arr = np.asarray(img, dtype=np.float64)
    top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
    if img.mode == "F":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr, top = arr - lo, (hi - lo) or 1.0
    scaled = np.clip(np.nan_to_num(arr) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L").convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode (CMYK, palette, LA, 16-bit, float) to 8-bit RGB."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return _flatten_alpha(img)
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return _high_bit_depth_to_rgb(img)
    return img.convert("RGB")


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode the first frame of an image, apply EXIF orientation, return 8-bit RGB."""
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
        raise DecodeError(f"corrupt image header: {exc}") from None
    width, height = img.size
    if width * height > max_pixels:
        raise DecodeError(
            f"image declares {width}x{height} = {width * height / 1e6:.1f} MP, over the "
            f"{max_pixels / 1e6:.1f} MP limit (max_image_pixels); refused as a possible "
            "decompression bomb"
        )
    try:
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img) or img
        return to_rgb(img)
    except Image.DecompressionBombError as exc:
        raise DecodeError(f"refused as a likely decompression bomb: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error) as exc:
        raise DecodeError(f"truncated or corrupt {img.format or 'image'} data: {exc}") from None


def decode_text(data: bytes) -> str:
    """Decode UTF-8 text (a BOM is dropped); binary content or bad bytes raise DecodeError."""
    kind = sniff(data[:16])
    if kind is not None:
        raise DecodeError(f"content is {kind}, not text (wrong extension?)")
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
