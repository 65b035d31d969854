"""Image work of the service: a bound on concurrent decodes, and JPEG thumbnails.

At most ``decodes`` images are decoded at once in a process, thumbnails and image-upload queries
together, so a burst of requests cannot hold many full-size bitmaps in memory. Each item gets one
master thumbnail (at most 1024 px, per item and content hash), decoded from the file once; another
``size`` is resized from the master, never from the file again. A JPEG is decoded at a reduced
scale (``Image.draft``): a thumbnail is not part of any vector recipe.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fastapi import HTTPException
from PIL import Image, ImageOps

from omnivec.errors import DecodeError
from omnivec.media import DEFAULT_MAX_DECODED_BYTES, decode_image, decoded_bytes, sniff, to_rgb

MASTER = 1024
DEFAULT_DECODES = 2


class DecodeSlots:
    """A process-wide bound on image decodes running at once; waiting longer than ``wait_s`` is 503."""

    def __init__(self, decodes: int = DEFAULT_DECODES, wait_s: float = 120.0) -> None:
        self.decodes = decodes
        self._slots = threading.BoundedSemaphore(decodes)
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self.running = 0
        self.peak = 0  # the most decodes seen at once

    @contextmanager
    def slot(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=self._wait_s):
            raise HTTPException(503, "the service is busy decoding images; try again shortly",
                                headers={"Retry-After": "5"})
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1
            self._slots.release()


def _decode_reduced(data: bytes, max_pixels: int, max_decoded: int, box: int) -> Image.Image:
    """Decode for a thumbnail: a JPEG at the smallest scale still >= ``box`` px (``draft``), anything
    else as :func:`omnivec.media.decode_image` decodes it (same limits, same errors)."""
    if sniff(data[:16]) != "JPEG image":
        return decode_image(data, max_pixels, max_decoded)
    try:
        img: Image.Image = Image.open(io.BytesIO(data))
        if img.width * img.height > max_pixels or decoded_bytes(img.mode, img.size) > max_decoded:
            return decode_image(data, max_pixels, max_decoded)  # refused there, with its message
        img.draft("RGB", (box, box))
        img.load()
        return to_rgb(ImageOps.exif_transpose(img) or img)
    except (OSError, ValueError, SyntaxError, EOFError, IndexError) as exc:
        raise DecodeError(f"truncated or corrupt JPEG data: {exc}") from None


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class Thumbnails:
    """Thumbnails cached by (item, content hash, size) within ``budget`` bytes, masters included."""

    def __init__(self, slots: DecodeSlots, budget: int = 64 << 20) -> None:
        self._slots = slots
        self._cache: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self._bytes = 0
        self._budget = budget
        self._lock = threading.Lock()
        self.decoded = 0  # how many times a file was decoded (masters made)

    def _cached(self, key: tuple[str, str, int]) -> bytes | None:
        with self._lock:
            data = self._cache.get(key)
            if data is not None:
                self._cache.move_to_end(key)
            return data

    def _put(self, key: tuple[str, str, int], data: bytes) -> None:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = data
                self._bytes += len(data)
            while self._bytes > self._budget and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._bytes -= len(old)

    def get(self, item_id: str, content_hash: str, size: int, load: Callable[[], bytes], max_pixels: int,
            max_decoded: int = DEFAULT_MAX_DECODED_BYTES) -> bytes:
        """A JPEG of at most ``size`` px (<= 1024); ``load`` gives the file's checked bytes."""
        size = min(size, MASTER)
        if (thumb := self._cached((item_id, content_hash, size))) is not None:
            return thumb
        master = self._cached((item_id, content_hash, MASTER))
        if master is None:
            data = load()
            with self._slots.slot():
                img = _decode_reduced(data, max_pixels, max_decoded, MASTER)
                img.thumbnail((MASTER, MASTER))
                master = _jpeg(img, 90)
            self.decoded += 1
            self._put((item_id, content_hash, MASTER), master)
        if size == MASTER:
            return master
        with self._slots.slot():
            img = Image.open(io.BytesIO(master))
            img.draft("RGB", (size, size))
            img.thumbnail((size, size))
            thumb = _jpeg(img, 85)
        self._put((item_id, content_hash, size), thumb)
        return thumb
