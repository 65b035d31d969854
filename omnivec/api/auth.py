"""Optional bearer token: ``OMNIVEC_API_TOKEN`` (or ``create_app(token=...)``).

With a token set, every data route needs ``Authorization: Bearer <token>`` or the ``omnivec_token``
cookie the search page sets (images and audio players cannot send headers). ``/healthz``, the page
itself and its static files stay open: they hold no data.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

COOKIE = "omnivec_token"


def check_token(request: Request, token: str | None) -> None:
    if not token:
        return
    header = request.headers.get("authorization", "")
    given = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(COOKIE, "")
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPException(status_code=401, detail="missing or wrong token (Authorization: Bearer <token>)",
                            headers={"WWW-Authenticate": "Bearer"})
