"""16-bit and float images: the same 8-bit pixels as the whole-image float64 formula, in bounded
memory; and a decode that would take too much memory is refused from the header."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from PIL import Image

from fixtures.bad_files import good_jpeg
from omnivec import media
from omnivec.config import Settings
from omnivec.errors import DecodeError
from omnivec.media import decode_image, decoded_bytes, to_rgb

BIG = 10**9


def _old_formula(img: Image.Image) -> np.ndarray:
    """The conversion omnivec used before, kept here as the reference (one float64 array per step)."""
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(canvas, rgba).convert("RGB"))
    arr = np.asarray(img, dtype=np.float64)
    top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
    if img.mode == "F":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr, top = arr - lo, (hi - lo) or 1.0
    scaled = np.clip(np.nan_to_num(arr) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(scaled).convert("RGB"))


def _png(width: int, height: int, depth: int, colour: int, raw_rows: list[bytes]) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + r for r in raw_rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _cases() -> dict[str, Image.Image]:
    rng = np.random.default_rng(7)
    h, w = 37, 23
    u16 = rng.integers(0, 65536, (h, w), dtype=np.uint16)
    grey16 = Image.open(io.BytesIO(_png(w, h, 16, 0, [u16[y].astype(">u2").tobytes() for y in range(h)])))
    ga16 = rng.integers(0, 65536, (h, w, 2), dtype=np.uint16)
    grey_alpha16 = Image.open(io.BytesIO(_png(w, h, 16, 4, [ga16[y].astype(">u2").tobytes() for y in range(h)])))
    floats = rng.normal(0, 50, (h, w)).astype(np.float32)
    floats[3, 4] = np.nan
    return {
        "I;16 (png)": grey16,
        "I;16": Image.fromarray(u16),
        "I;16B": Image.frombytes("I;16B", (w, h), u16.astype(">u2").tobytes()),
        "I, 16-bit values": Image.fromarray(rng.integers(-500, 70000, (h, w), dtype=np.int32)),
        "I, 8-bit values": Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.int32)),
        "F": Image.fromarray(floats),
        "16-bit grey+alpha (png)": grey_alpha16,
    }


@pytest.mark.parametrize("name", list(_cases()))
@pytest.mark.parametrize("block", [media.BLOCK_PIXELS, 5, 50])  # whole image, parts of rows, several rows
def test_conversion_equals_the_float64_formula(name, block, monkeypatch):
    monkeypatch.setattr(media, "BLOCK_PIXELS", block)
    img = _cases()[name]
    img.load()
    expected = _old_formula(img)
    assert len(np.unique(expected)) > 50  # the images differ pixel to pixel: no trivial match
    got = np.asarray(to_rgb(img))
    assert got.shape == expected.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_the_mode_of_each_case_is_the_one_named():
    modes = {name: img.mode for name, img in _cases().items()}
    assert modes["I;16 (png)"].startswith("I;16") and modes["I;16B"] == "I;16B"
    assert modes["I, 16-bit values"] == "I" and modes["F"] == "F"
    assert modes["16-bit grey+alpha (png)"] == "RGBA"  # Pillow reads it as 8-bit RGBA


def test_sixteen_bit_conversion_holds_no_float_copy_of_the_image():
    side = 1500  # 2.25 MP: a float64 copy is 18 MB, the 8-bit result 2.25 MB
    ramp = (np.arange(side * side, dtype=np.uint64) % 65536).astype(np.uint16).reshape(side, side)
    img = Image.fromarray(ramp)
    tracemalloc.start()
    try:
        out = to_rgb(img)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.size == (side, side) and out.getpixel((1, 0))[0] == 0 and out.getpixel((200, 0))[0] == 1
    float_copy = side * side * 8
    # the 8-bit result, its bytes handed to Pillow and one block: well under one float64 copy
    assert peak < float_copy * 2 // 3, f"numpy peak {peak / 2**20:.1f} MiB"


def _truncated_grey16(side: int) -> bytes:
    data = _png(side, side, 16, 0, [bytes(2 * side)] * side)
    return data[: len(data) // 2]  # the header is whole, the pixel data is cut


def test_a_decode_over_the_byte_budget_is_refused_before_any_pixel_is_decoded():
    data = _truncated_grey16(600)
    need = decoded_bytes("I;16", (600, 600))
    assert need == 600 * 600 * 6
    with pytest.raises(DecodeError, match="truncated|corrupt"):  # decoding it fails: it is damaged
        decode_image(data, BIG, need)
    with pytest.raises(DecodeError, match="max_image_decoded_bytes") as refused:
        decode_image(data, BIG, need - 1)  # refused first: the damaged data was never decoded
    assert "600x600" in str(refused.value) and "I;16" in str(refused.value)


def test_decoded_bytes_by_mode():
    assert decoded_bytes("RGB", (10, 10)) == 400  # returned as decoded
    assert decoded_bytes("L", (10, 10)) == 500 and decoded_bytes("P", (10, 10)) == 500
    assert decoded_bytes("I;16B", (10, 10)) == 600
    assert decoded_bytes("F", (10, 10)) == decoded_bytes("RGBA", (10, 10)) == 800


def test_the_setting_defaults_to_the_decoder_default_and_reaches_ingest(tmp_path, tiny_clip_dir):
    from conftest import make_settings
    from omnivec.pipeline.run import ingest
    from omnivec.store import Store

    assert Settings().max_image_decoded_bytes == media.DEFAULT_MAX_DECODED_BYTES
    root = tmp_path / "imgs"
    root.mkdir()
    big = np.zeros((400, 300), dtype=np.uint16)
    big[::7] = 40000
    Image.fromarray(big).save(root / "deep.png")
    (root / "small.jpg").write_bytes(good_jpeg((1, 2, 3)))
    need = decoded_bytes("I;16", (300, 400))
    settings = make_settings(tmp_path / "store", tiny_clip_dir, max_image_decoded_bytes=need - 1)
    report = ingest([str(root)], settings)
    errors = Store(settings.store).read("errors").to_pylist()
    assert [(e["uri"], e["stage"]) for e in errors] == [(str(root / "deep.png"), "decode")]
    assert "max_image_decoded_bytes" in errors[0]["message"]
    assert report.counts["image"]["new"] == 1 and report.counts["image"]["failed"] == 1
    again = make_settings(tmp_path / "store2", tiny_clip_dir, max_image_decoded_bytes=need)
    assert ingest([str(root)], again).counts["image"]["new"] == 2
