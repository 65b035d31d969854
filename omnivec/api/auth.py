"""Optional bearer token: ``OMNIVEC_API_TOKEN`` (or ``create_app(token=...)``).

With a token set, every route but the open ones needs ``Authorization: Bearer <token>`` or the
``omnivec_token`` cookie the search page sets (images and audio players cannot send headers). The
page, its static files, ``/healthz`` and the OpenAPI docs stay open: they hold no data. The check
runs on the raw header bytes before any request body is read. A token is UTF-8; a client may send it
as UTF-8 bytes or percent-encoded (the page percent-encodes it, since neither a cookie nor a
browser's ``fetch`` header can carry other characters). Digests are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import unquote_to_bytes

COOKIE = "omnivec_token"
OPEN_PATHS = frozenset({"/", "/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
OPEN_PREFIXES = ("/static/",)
REFUSED = "missing or wrong token (Authorization: Bearer <token>)"
_MAX_CANDIDATES = 16


def is_open(path: str) -> bool:
    """Whether ``path`` needs no token (a path with ``.`` or ``..`` segments always needs it)."""
    if path in OPEN_PATHS:
        return True
    return path.startswith(OPEN_PREFIXES) and not {".", ".."} & set(path.split("/"))


def token_bytes(token: str) -> bytes:
    """The token as the bytes a client sends (an environment value keeps undecodable bytes as is)."""
    return token.encode("utf-8", "surrogateescape")


def _candidates(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    out = []
    cookie = COOKIE.encode()
    for name, value in headers:
        if name == b"authorization":
            scheme, _, rest = value.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                out.append(rest.strip())
        elif name == b"cookie":
            for part in value.split(b";"):
                key, _, val = part.strip().partition(b"=")
                if key == cookie:
                    out.append(val.strip().strip(b'"'))
    return out[:_MAX_CANDIDATES]


def token_matches(headers: list[tuple[bytes, bytes]], token: str) -> bool:
    """Whether the raw request headers carry ``token`` (as is or percent-encoded) in the
    Authorization header or the cookie."""
    want = hashlib.sha256(token_bytes(token)).digest()
    ok = False
    for given in _candidates(headers):
        for form in (given, unquote_to_bytes(given)):
            ok |= hmac.compare_digest(hashlib.sha256(form).digest(), want)
    return ok
