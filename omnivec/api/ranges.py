"""Send a checked file from its descriptor, whole or one byte range (RFC 9110 Range requests).

Each block is read with ``pread`` from the descriptor that was checked, and the descriptor is
``fstat``-ed after the read: a block read after the file changed is never sent (the response stops
short and the connection is closed, so a player sees a failed read, not other bytes).
"""

from __future__ import annotations

import logging
import os
import re

import anyio
from fastapi import HTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from omnivec.api.gate import HEAD
from omnivec.api.verify import BLOCK, Opened

log = logging.getLogger("omnivec.api")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def byte_range(header: str | None, size: int, if_range: str | None, etag: str) -> tuple[int, int] | None:
    """(first, last) byte of a single satisfiable range, or None to send the whole file (no Range,
    an If-Range that no longer matches, several ranges or a malformed header: a server may ignore
    those). Raises HTTPException 416 for a well-formed range outside the file."""
    if not header or (if_range is not None and if_range.strip() != etag):
        return None
    m = _RANGE.match(header.strip().replace(" ", ""))
    if m is None or (not m[1] and not m[2]):
        return None
    if not m[1]:  # the last N bytes
        n = int(m[2])
        if n == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - n), size - 1
    first = int(m[1])
    last = int(m[2]) if m[2] else size - 1
    if m[2] and last < first:
        return None  # malformed
    if first >= size:
        raise _unsatisfiable(size)
    return first, min(last, size - 1)


def _unsatisfiable(size: int) -> HTTPException:
    return HTTPException(416, f"the range is outside the file ({size:,} bytes)",
                         headers={"Content-Range": f"bytes */{size}"})


class CheckedFileResponse(Response):
    """The bytes ``first..last`` of a checked descriptor; the response owns (and closes) it."""

    def __init__(self, opened: Opened, media_type: str, etag: str, span: tuple[int, int] | None,
                 headers: dict[str, str] | None = None) -> None:
        self.opened = opened
        self.background = None
        first, last = span if span is not None else (0, opened.size - 1)
        self.first, self.last = first, last
        self.status_code = 206 if span is not None else 200
        self.media_type = media_type
        raw = {"content-type": media_type, "content-length": str(max(0, last - first + 1)),
               "accept-ranges": "bytes", "etag": etag, **{k.lower(): v for k, v in (headers or {}).items()}}
        if span is not None:
            raw["content-range"] = f"bytes {first}-{last}/{opened.size}"
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in raw.items()]

    def _block(self, pos: int) -> bytes:
        data = os.pread(self.opened.fd, min(BLOCK, self.last + 1 - pos), pos)
        if not data or not self.opened.still_same():
            raise OSError("the file changed while it was being sent")
        return data

    async def _stream(self, send: Send) -> None:
        pos = self.first
        while pos <= self.last:
            try:
                data = await anyio.to_thread.run_sync(self._block, pos)
            except OSError as exc:
                log.warning("stopped sending %s bytes %d-%d at %d: %s", self.media_type, self.first, self.last,
                            pos, exc)
                return  # an incomplete response: the server closes the connection
            pos += len(data)
            await send({"type": "http.response.body", "body": data, "more_body": pos <= self.last})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if scope.get("method") == "HEAD" or scope.get(HEAD) or self.last < self.first:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            async with anyio.create_task_group() as tg:

                async def stop_on_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(stop_on_disconnect)
                await self._stream(send)
                tg.cancel_scope.cancel()
        finally:
            self.opened.close()
