"""What ``/media`` and ``POST /search`` do with files: look an item up, thumbnail an image, name an
upload's kind.

``/media`` only ever serves a file that is an item of the store: the id is checked against the
form omnivec gives ids (32 hex digits) and then looked up in the ``items`` table; the path comes
from that row, never from the request.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections import OrderedDict
from typing import Any

from omnivec.errors import DecodeError
from omnivec.media import IMAGE_KINDS, decode_image, read_file, sniff
from omnivec.store.store import Store, sql_in

ITEM_ID = re.compile(r"^[0-9a-f]{32}$")
AUDIO_KINDS = {"WAV audio": ".wav", "FLAC audio": ".flac", "Ogg audio": ".ogg", "MP3 audio": ".mp3",
               "MP4/M4A media": ".m4a"}
AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".mp3": "audio/mpeg",
               ".m4a": "audio/mp4", ".aac": "audio/aac", ".opus": "audio/ogg", ".webm": "audio/webm"}
IMAGE_SUFFIX = {"PNG image": ".png", "JPEG image": ".jpg", "GIF image": ".gif", "BMP image": ".bmp",
                "TIFF image": ".tif", "WEBP image": ".webp"}
THUMB_MAX = 1024


def find_item(store: Store, item_id: str) -> dict[str, Any] | None:
    """The ``items`` row of ``item_id``, or None (also for anything that is not an omnivec id)."""
    if not ITEM_ID.match(item_id):
        return None
    rows = store.read("items", where=sql_in("item_id", [item_id])).to_pylist()
    return rows[0] if rows else None


def upload_kind(head: bytes, filename: str | None) -> tuple[str, str]:
    """(modality, suffix) of an uploaded query file, from its content (the name only breaks ties for
    audio containers the content does not name). Raises DecodeError for anything else."""
    kind = sniff(head[:16])
    if kind in IMAGE_KINDS:
        return "image", IMAGE_SUFFIX[kind]
    if kind in AUDIO_KINDS:
        return "audio", AUDIO_KINDS[kind]
    ext = os.path.splitext(filename or "")[1].lower()
    if kind is None and ext in AUDIO_TYPES and ext not in (".wav", ".flac", ".ogg", ".mp3", ".m4a"):
        return "audio", ext  # aac / opus / webm: the decoder checks the content
    if kind is None and ext == ".mp3" and head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio", ".mp3"  # an MP3 without ID3 tag starts with a frame header
    raise DecodeError(f"the upload is {kind or 'not a recognised file'}; send an image "
                      "(JPEG, PNG, GIF, BMP, TIFF, WEBP) or audio (WAV, FLAC, Ogg, MP3, M4A)")


class Thumbnails:
    """Bounded-size JPEG thumbnails, cached by (item, content hash, size)."""

    def __init__(self, entries: int = 512) -> None:
        self._cache: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self._entries = entries
        self._lock = threading.Lock()

    def get(self, item: dict[str, Any], size: int, max_bytes: int, max_pixels: int) -> bytes:
        key = (item["item_id"], item.get("content_hash") or "", size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        img = decode_image(read_file(item["uri"], max_bytes).data, max_pixels)
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        data = buf.getvalue()
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > self._entries:
                self._cache.popitem(last=False)
        return data
