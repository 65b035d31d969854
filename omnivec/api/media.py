"""What ``/media`` and ``POST /search`` do with files: look an item up, serve its checked content,
name an upload's kind.

``/media`` only ever serves a file that is an item of the store: the id is checked against the
form omnivec gives ids (32 hex digits) and then looked up in the ``items`` table; the path comes
from that row, never from the request, and only the bytes that were ingested are served
(:mod:`omnivec.api.verify`).
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

from fastapi.responses import PlainTextResponse, Response

from omnivec.api.ranges import CheckedFileResponse, byte_range
from omnivec.api.thumbs import Thumbnails
from omnivec.api.verify import Verifier, changed
from omnivec.config import Settings
from omnivec.errors import DecodeError
from omnivec.manifests import read_caption, split_caption_uri
from omnivec.media import IMAGE_KINDS, decode_text, sniff
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


def is_caption(uri: str) -> bool:
    """Whether ``uri`` names a manifest row's inline caption (a real file of that name wins)."""
    return split_caption_uri(uri) is not None and not os.path.lexists(uri)


class Media:
    """The content of items, checked against the ``items`` row before anything is sent: a JPEG
    thumbnail for an image, the file (whole or a byte range) for audio, the text for text."""

    CACHE = {"Cache-Control": "private, max-age=300"}

    def __init__(self, settings: Settings, verifier: Verifier, thumbs: Thumbnails) -> None:
        self.settings = settings
        self.verifier = verifier
        self.thumbs = thumbs

    def respond(self, row: dict[str, Any], size: int, range_header: str | None, if_range: str | None) -> Response:
        uri, want = row["uri"], row.get("content_hash")
        if row["modality"] == "text" and is_caption(uri):
            return self._caption(uri, want)
        if row["modality"] == "image":
            opened = self.verifier.open(uri, want, row.get("size"), keep=self.settings.max_image_bytes)
            try:
                data = self.thumbs.get(row["item_id"], opened.key[0], size, lambda: self.verifier.read(opened),
                                       self.settings.max_image_pixels, self.settings.max_image_decoded_bytes)
            finally:
                opened.close()
            return Response(data, media_type="image/jpeg", headers=self.CACHE)
        if row["modality"] == "audio":
            opened = self.verifier.open(uri, want, row.get("size"))
            etag = f'"{opened.key[0]}"'
            try:
                span = byte_range(range_header, opened.size, if_range, etag)
            except BaseException:
                opened.close()
                raise
            kind = AUDIO_TYPES.get(os.path.splitext(uri)[1].lower(), "application/octet-stream")
            return CheckedFileResponse(opened, kind, etag, span, self.CACHE)
        opened = self.verifier.open(uri, want, row.get("size"), keep=self.settings.max_text_bytes)
        try:
            data = self.verifier.read(opened)
        finally:
            opened.close()
        return PlainTextResponse(decode_text(data), headers=self.CACHE)

    def _caption(self, uri: str, want: str | None) -> Response:
        try:
            data = read_caption(uri).encode("utf-8")
        except (DecodeError, UnicodeEncodeError) as exc:
            raise changed(str(exc)) from None
        if not want or hashlib.sha256(data).hexdigest() != want:
            raise changed("the manifest's caption is not the one ingested")
        return PlainTextResponse(data.decode("utf-8"), headers=self.CACHE)
