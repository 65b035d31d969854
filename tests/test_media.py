"""Tests for omnivec.media: sniffing, reading, and decoding real files made with PIL."""

from __future__ import annotations

import io
import os
import random
import resource
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from omnivec.errors import DecodeError
from omnivec.media import FileBytes, decode_image, decode_text, read_file, sniff, to_rgb

DEFAULT_MAX_PIXELS = 89_478_485  # Settings.max_image_pixels default
RED = (220, 20, 30)


# --------------------------------------------------------------------------- helpers


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def close_to(pixel, expected, tol: int) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected, strict=True))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body))
        + kind
        + body
        + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def png_declaring(width: int, height: int) -> bytes:
    """A small, well-formed PNG file whose IHDR declares ``width`` x ``height`` RGB pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)  # far too little data for the declared size
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------- sniff


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "PNG image"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "JPEG image"),
        (b"GIF89a\x01\x00\x01\x00", "GIF image"),
        (b"GIF87a\x01\x00\x01\x00", "GIF image"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "WEBP image"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt ", "WAV audio"),
        (b"II*\x00\x08\x00\x00\x00", "TIFF image"),
        (b"MM\x00*\x00\x00\x00\x08", "TIFF image"),
        (b"%PDF-1.7\n", "PDF document"),
        (b"PK\x03\x04\x14\x00", "ZIP archive"),
        (b"\x7fELF\x02\x01\x01", "ELF executable"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00", "MP3 audio"),
        (b"\x00\x00\x00\x18ftypmp42", "MP4/M4A media"),
        (b"hello world", None),
        (b"", None),
    ],
)
def test_sniff_names_known_signatures(head: bytes, kind: str | None) -> None:
    assert sniff(head) == kind


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"])
def test_sniff_recognises_real_pil_output_as_an_image(fmt: str) -> None:
    data = encode(Image.new("RGB", (4, 4), RED), fmt)
    assert sniff(data[:16]) == f"{'WEBP' if fmt == 'WEBP' else fmt} image"


@pytest.mark.parametrize("text", [b"BMW owners club minutes", b"ID3 tags explained\n"])
def test_sniff_does_not_mistake_text_for_bmp_or_mp3(text: bytes) -> None:
    assert sniff(text[:16]) is None


# --------------------------------------------------------------------------- read_file


def test_read_file_returns_bytes_size_and_mtime(tmp_path: Path) -> None:
    data = encode(Image.new("RGB", (8, 8), RED), "PNG")
    path = write(tmp_path / "a.png", data)
    got = read_file(path, max_bytes=len(data))  # exactly at the limit is allowed
    assert isinstance(got, FileBytes)
    assert got.data == data
    assert got.size == len(data)
    assert got.mtime_ns == os.stat(path).st_mtime_ns


def test_read_file_empty_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.jpg", b"")
    with pytest.raises(DecodeError, match="empty") as info:
        read_file(path, max_bytes=1024)
    assert info.value.stage == "read"


def test_read_file_over_max_bytes_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "big.txt", b"x" * 101)
    with pytest.raises(DecodeError, match="limit") as info:
        read_file(path, max_bytes=100)
    assert info.value.stage == "read"
    assert "101" in str(info.value)


def test_read_file_missing_file_is_a_read_error(tmp_path: Path) -> None:
    with pytest.raises(DecodeError) as info:
        read_file(str(tmp_path / "gone.png"), max_bytes=1024)
    assert info.value.stage == "read"


def test_read_file_on_a_folder_is_a_read_error(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="folder") as info:
        read_file(str(tmp_path), max_bytes=1024)
    assert info.value.stage == "read"


# --------------------------------------------------------------------------- decode_image: formats


@pytest.mark.parametrize(
    ("fmt", "ext", "params", "tol"),
    [
        ("JPEG", "jpg", {"quality": 95}, 12),
        ("PNG", "png", {}, 0),
        ("WEBP", "webp", {"lossless": True}, 0),
        ("GIF", "gif", {}, 8),
        ("BMP", "bmp", {}, 0),
        ("TIFF", "tiff", {}, 0),
    ],
)
def test_decode_image_formats_to_rgb(
    tmp_path: Path, fmt: str, ext: str, params: dict, tol: int
) -> None:
    path = write(tmp_path / f"img.{ext}", encode(Image.new("RGB", (16, 12), RED), fmt, **params))
    img = decode_image(read_file(path, 10**7).data, DEFAULT_MAX_PIXELS)
    assert img.mode == "RGB"
    assert img.size == (16, 12)
    assert close_to(img.getpixel((8, 6)), RED, tol)


def test_decode_image_animated_gif_returns_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (10, 10), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    data = write(tmp_path / "anim.gif", buf.getvalue())
    assert Image.open(data).n_frames == 3  # really animated

    img = decode_image(Path(data).read_bytes(), DEFAULT_MAX_PIXELS)
    assert img.mode == "RGB"
    assert img.size == (10, 10)
    assert close_to(img.getpixel((5, 5)), (255, 0, 0), 8)


def test_decode_image_applies_exif_orientation() -> None:
    # 40 wide x 20 high: left half red, right half blue
    src = Image.new("RGB", (40, 20), (0, 0, 255))
    src.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    data = encode(src, "JPEG", quality=95, exif=exif.tobytes())
    assert Image.open(io.BytesIO(data)).getexif()[0x0112] == 6

    img = decode_image(data, DEFAULT_MAX_PIXELS)
    assert img.mode == "RGB"
    assert img.size == (20, 40)  # transposed
    # a clockwise turn puts the left (red) half on top
    assert close_to(img.getpixel((10, 5)), (255, 0, 0), 40)
    assert close_to(img.getpixel((10, 34)), (0, 0, 255), 40)


def test_decode_image_without_exif_keeps_size() -> None:
    data = encode(Image.new("RGB", (40, 20), RED), "JPEG")
    assert decode_image(data, DEFAULT_MAX_PIXELS).size == (40, 20)


# --------------------------------------------------------------------------- decode_image: modes


def test_decode_image_cmyk_jpeg_to_rgb() -> None:
    src = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    data = encode(src, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    img = decode_image(data, DEFAULT_MAX_PIXELS)
    assert img.mode == "RGB"
    r, g, b = img.getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60


def test_decode_image_palette_png_with_transparency_to_rgb() -> None:
    src = Image.new("P", (4, 4), 0)
    src.putpalette([0, 0, 0, 200, 10, 10] + [0, 0, 0] * 254)
    src.putpixel((3, 3), 1)  # opaque red-ish pixel; index 0 is transparent black
    data = encode(src, "PNG", transparency=0)
    opened = Image.open(io.BytesIO(data))
    assert opened.mode == "P" and "transparency" in opened.info

    img = decode_image(data, DEFAULT_MAX_PIXELS)
    assert img.mode == "RGB"
    assert img.getpixel((3, 3)) == (200, 10, 10)
    # fully transparent pixels are flattened onto white, not left as the hidden black
    assert img.getpixel((0, 0)) == (255, 255, 255)


def test_decode_image_rgba_png_flattens_alpha() -> None:
    src = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    src.putpixel((1, 1), (10, 200, 10, 255))
    img = decode_image(encode(src, "PNG"), DEFAULT_MAX_PIXELS)
    assert img.mode == "RGB"
    assert img.getpixel((1, 1)) == (10, 200, 10)
    assert img.getpixel((0, 0)) == (255, 255, 255)


def test_decode_image_la_png_to_rgb() -> None:
    data = encode(Image.new("LA", (4, 4), (100, 255)), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "LA"
    img = decode_image(data, DEFAULT_MAX_PIXELS)
    assert img.mode == "RGB"
    assert img.getpixel((2, 2)) == (100, 100, 100)


def test_decode_image_16bit_grayscale_png_is_scaled_not_clipped() -> None:
    arr = np.zeros((4, 4), dtype=np.uint16)
    arr[0, 0] = 65535
    arr[1, 1] = 32768
    arr[2, 2] = 200  # dark on a 16-bit scale
    data = encode(Image.fromarray(arr), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")

    img = decode_image(data, DEFAULT_MAX_PIXELS)
    assert img.mode == "RGB"
    assert img.getpixel((0, 0))[0] >= 254
    assert 120 <= img.getpixel((1, 1))[0] <= 135
    assert img.getpixel((2, 2))[0] <= 2
    assert img.getpixel((3, 3)) == (0, 0, 0)
    assert len(set(img.getpixel((0, 0)))) == 1  # grey stays grey


def test_decode_image_grayscale_and_bilevel_to_rgb() -> None:
    grey = decode_image(encode(Image.new("L", (4, 4), 77), "PNG"), DEFAULT_MAX_PIXELS)
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (77, 77, 77)
    bilevel = decode_image(encode(Image.new("1", (4, 4), 1), "PNG"), DEFAULT_MAX_PIXELS)
    assert bilevel.mode == "RGB" and bilevel.getpixel((0, 0)) == (255, 255, 255)


def test_to_rgb_rgb_is_returned_unchanged() -> None:
    img = Image.new("RGB", (2, 2), RED)
    assert to_rgb(img) is img


def test_to_rgb_float_image_is_normalised_to_full_range() -> None:
    arr = np.array([[-1.0, 0.0], [0.5, 3.0]], dtype=np.float32)
    img = to_rgb(Image.fromarray(arr, mode="F"))
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (0, 0, 0)  # minimum
    assert img.getpixel((1, 1)) == (255, 255, 255)  # maximum


def test_to_rgb_int32_image_with_16bit_values() -> None:
    arr = np.array([[0, 65535]], dtype=np.int32)
    img = to_rgb(Image.fromarray(arr, mode="I"))
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (0, 0, 0)
    assert img.getpixel((1, 0)) == (255, 255, 255)


# --------------------------------------------------------------------------- decode_image: failures


def test_decode_image_zero_bytes_via_read_file(tmp_path: Path) -> None:
    path = write(tmp_path / "zero.png", b"")
    with pytest.raises(DecodeError, match="empty"):
        read_file(path, 10**6)
    with pytest.raises(DecodeError):
        decode_image(b"", DEFAULT_MAX_PIXELS)


def test_decode_image_truncated_jpeg(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
    full = encode(noise, "JPEG", quality=95)
    path = write(tmp_path / "cut.jpg", full[: len(full) // 2])
    data = read_file(path, 10**6).data
    assert sniff(data[:16]) == "JPEG image"  # the header survived the cut
    with pytest.raises(DecodeError) as info:
        decode_image(data, DEFAULT_MAX_PIXELS)
    assert info.value.stage == "decode"


def test_decode_image_truncated_png() -> None:
    full = encode(Image.new("RGB", (64, 64), RED), "PNG", compress_level=0)
    with pytest.raises(DecodeError):
        decode_image(full[: len(full) // 2], DEFAULT_MAX_PIXELS)


def test_decode_image_random_bytes() -> None:
    data = random.Random(1234).randbytes(4096)
    assert sniff(data[:16]) is None
    with pytest.raises(DecodeError, match="not a recognised image"):
        decode_image(data, DEFAULT_MAX_PIXELS)


def test_decode_image_text_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "notes.jpg", b"just some notes, not a picture\n")
    with pytest.raises(DecodeError):
        decode_image(read_file(path, 10**6).data, DEFAULT_MAX_PIXELS)


def test_decode_image_non_image_binary_is_named() -> None:
    with pytest.raises(DecodeError, match="PDF"):
        decode_image(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", DEFAULT_MAX_PIXELS)


def _forbid_pixel_loading(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make PIL's pixel decoding record a call instead of allocating anything."""
    calls: list[str] = []

    def no_load(self, *args, **kwargs):
        calls.append(self.format or "?")
        raise AssertionError("pixel data was loaded for an image over the pixel limit")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    return calls


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def test_decode_image_refuses_png_declaring_30000x30000(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "bomb.png", png_declaring(30000, 30000))
    data = read_file(path, 10**6).data
    assert len(data) < 2000
    assert struct.unpack(">II", data[16:24]) == (30000, 30000)  # IHDR width, height
    calls = _forbid_pixel_loading(monkeypatch)
    rss_before = _max_rss_bytes()
    with pytest.raises(DecodeError) as info:
        decode_image(data, DEFAULT_MAX_PIXELS)
    msg = str(info.value).lower()
    assert "decompression bomb" in msg
    assert calls == []
    # 30000 x 30000 RGB would be 2.7 GB; nothing near that was allocated
    assert _max_rss_bytes() - rss_before < 256 * 1024 * 1024


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decode_image_refuses_over_configured_pixel_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # 12000 x 12000 = 144 MP: over omnivec's 89.5 MP limit, under PIL's own hard error
    data = png_declaring(12000, 12000)
    calls = _forbid_pixel_loading(monkeypatch)
    with pytest.raises(DecodeError) as info:
        decode_image(data, DEFAULT_MAX_PIXELS)
    msg = str(info.value)
    assert "12000x12000" in msg
    assert "max_image_pixels" in msg
    assert "limit" in msg and "decompression bomb" in msg
    assert calls == []


def test_decode_image_small_custom_pixel_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(Image.new("RGB", (50, 40), RED), "PNG")
    assert decode_image(data, max_pixels=2000).size == (50, 40)  # exactly at the limit
    calls = _forbid_pixel_loading(monkeypatch)
    with pytest.raises(DecodeError, match="max_image_pixels"):
        decode_image(data, max_pixels=1999)
    assert calls == []


# --------------------------------------------------------------------------- decode_text


def test_decode_text_plain_utf8() -> None:
    assert decode_text("café ☕ naïve\nline two\n".encode()) == "café ☕ naïve\nline two\n"


def test_decode_text_strips_utf8_bom() -> None:
    text = decode_text(b"\xef\xbb\xbfhello")
    assert text == "hello"
    assert not text.startswith("\ufeff")


def test_decode_text_png_bytes_are_refused() -> None:
    data = encode(Image.new("RGB", (4, 4), RED), "PNG")
    with pytest.raises(DecodeError, match="PNG"):
        decode_text(data)


def test_decode_text_invalid_utf8_names_byte_and_offset() -> None:
    with pytest.raises(DecodeError) as info:
        decode_text(b"caf\xe9")
    msg = str(info.value)
    assert "UTF-8" in msg
    assert "offset 3" in msg
    assert "0xe9" in msg


def test_decode_text_invalid_utf8_offset_counts_the_bom() -> None:
    # the offset is into the file as stored, BOM included
    with pytest.raises(DecodeError) as info:
        decode_text(b"\xef\xbb\xbfcaf\xe9")
    msg = str(info.value)
    assert "offset 6" in msg
    assert "0xe9" in msg


@pytest.mark.parametrize("data", [b"   \n\t  \r\n", b"\xef\xbb\xbf  \n"])
def test_decode_text_whitespace_only_is_refused(data: bytes) -> None:
    with pytest.raises(DecodeError, match="empty"):
        decode_text(data)


def test_decode_text_nul_bytes_are_refused() -> None:
    with pytest.raises(DecodeError, match="NUL"):
        decode_text(b"hello\x00world")


@pytest.mark.parametrize("data", [b"BMW owners club minutes\n", b"ID3 tags explained\n"])
def test_decode_text_accepts_text_that_starts_like_a_weak_signature(data: bytes) -> None:
    assert decode_text(data) == data.decode()


def test_decode_text_from_a_real_file(tmp_path: Path) -> None:
    path = write(tmp_path / "n.md", b"# Title\n\nbody\n")
    assert decode_text(read_file(path, 10**6).data) == "# Title\n\nbody\n"
