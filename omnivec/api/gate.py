"""The ASGI middleware in front of every route: security headers, the token, and request bodies.

FastAPI parses a multipart form before a route's dependencies run, so what must happen before a
body is read happens here, on the raw request:

- with a token set, a request without it is answered 401 before one body byte is read;
- a ``Content-Length`` over the limit is answered 413 at once;
- a body (chunked, or longer than it said) is counted as it arrives and refused with 413 as soon as
  it passes the limit: no more than the limit is ever handed to the app, so nothing spools more;
- a body that stalls for ``idle_s`` seconds is answered 408.

A refusal carries ``Connection: close``. Before the connection is closed, what the client still
sends is read and dropped for at most ``LINGER_S`` seconds, so that the client, still writing its
body, gets to read the answer rather than a connection reset.

A ``HEAD`` request is answered as the ``GET`` of the same URL, without its body.

Every response gets ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` and a
Content-Security-Policy (not the OpenAPI pages, which load Swagger UI from a CDN).
"""

from __future__ import annotations

import json

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from omnivec.api.auth import REFUSED, is_open, token_matches

CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; object-src 'none'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
NO_CSP = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
LINGER_S = 2.0


HEAD = "omnivec.head"  # set in the scope of a HEAD request the app sees as GET


class _Refused(Exception):
    pass


def _without_body(send: Send) -> Send:
    async def send_headers_only(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_headers_only


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((v for k, v in scope["headers"] if k == name), None)


class Gate:
    def __init__(self, app: ASGIApp, token: str | None, max_body: int, idle_s: float = 30.0) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body
        self.idle_s = idle_s

    def _headers(self, scope: Scope, send: Send) -> Send:
        extra = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
        if scope["path"] not in NO_CSP:
            extra.append((b"content-security-policy", CSP.encode()))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *((k, v) for k, v in extra if k not in have)]}
            await send(message)

        return send_with_headers

    async def _refuse(self, receive: Receive, send: Send, status: int, detail: str, body_left: bool,
                      headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            *([(b"connection", b"close")] if body_left else []), *headers]})
        await send({"type": "http.response.body", "body": body, "more_body": body_left})
        if not body_left:
            return
        with anyio.move_on_after(LINGER_S):  # the answer is out; read and drop what is still coming
            while True:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body"):
                    break
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._headers(scope, send)
        if scope["method"] == "HEAD":  # answered as GET would be, without the body
            scope, send = {**scope, "method": "GET", HEAD: True}, _without_body(send)
        length = _header(scope, b"content-length")
        has_body = _header(scope, b"transfer-encoding") is not None or (length is not None and length != b"0")
        if self.token and not is_open(scope["path"]) and not token_matches(scope["headers"], self.token):
            await self._refuse(receive, send, 401, REFUSED, has_body, ((b"www-authenticate", b"Bearer"),))
            return
        if length is not None and length.strip().isdigit() and int(length) > self.max_body:
            await self._refuse(receive, send, 413, self._too_large(int(length)), True)
            return
        if not has_body:
            await self.app(scope, receive, send)
            return
        await self._guarded(scope, receive, send)

    def _too_large(self, size: int | None = None) -> str:
        said = f" ({size:,} bytes)" if size is not None else ""
        return f"the request body{said} is larger than the {self.max_body:,}-byte limit (--max-upload-mb)"

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        seen, done = 0, False
        refusal: tuple[int, str] | None = None
        started = False

        async def counted() -> Message:
            nonlocal seen, done, refusal
            if refusal is not None:
                return {"type": "http.disconnect"}
            if done:
                return await receive()
            try:
                with anyio.fail_after(self.idle_s):
                    message = await receive()
            except TimeoutError:
                refusal = (408, f"the request body stalled: nothing arrived for {self.idle_s:g} s")
                raise _Refused from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    refusal = (413, self._too_large())
                    raise _Refused
                done = not message.get("more_body", False)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if refusal is not None:
                return  # the app's own answer to a body it did not get is dropped
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except Exception:
            if refusal is None:
                raise
        if refusal is not None and not started:
            await self._refuse(receive, send, *refusal, body_left=True)
