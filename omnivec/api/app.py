"""The query service: a read-only FastAPI app over one store.

Routes: ``GET /search``, ``POST /search`` (an uploaded image or audio file), ``GET /items/{id}``,
``GET /media/{id}``, ``GET /spaces``, ``GET /runs``, ``GET /healthz``, the search page at ``/`` and
OpenAPI at ``/docs``; ``HEAD`` wherever ``GET`` answers. No route writes to the store. Encoders are
loaded once per process and shared by all requests; request handlers run in FastAPI's thread pool.
The token, body limits and security headers are applied in front of the routes
(:mod:`omnivec.api.gate`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from importlib import resources
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from omnivec.api.gate import Gate
from omnivec.api.media import THUMB_MAX, Media, find_item
from omnivec.api.searching import add_search_routes
from omnivec.api.thumbs import DEFAULT_DECODES, DecodeSlots, Thumbnails
from omnivec.api.verify import Verifier
from omnivec.config import Settings, load_settings
from omnivec.errors import DecodeError, OmnivecError, StoreError
from omnivec.store.health import HealthCache
from omnivec.store.store import Store, sql_in

DEFAULT_MAX_UPLOAD = 32 * 1024 * 1024


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if k == "vector":
            continue
        if hasattr(v, "isoformat"):
            v = v.isoformat()
        elif isinstance(v, str) and k in ("counts", "sources", "versions", "recipe", "settings") and v[:1] in "{[":
            with contextlib.suppress(ValueError):
                v = json.loads(v)
        out[k] = v
    return out


def _redactor(settings: Settings, store: Store) -> Callable[[str], str]:
    """A function that says "the store" wherever a message names the store's location."""
    places = {settings.store, store.uri}
    places |= {os.path.abspath(p) for p in places if "://" not in p} | {os.path.realpath(p) for p in places
                                                                          if "://" not in p}
    places = {p.rstrip("/") for p in places if p and p.rstrip("/")}
    ordered = sorted(places, key=len, reverse=True)

    def say(text: str) -> str:
        for p in ordered:
            text = text.replace(f"store {p}", "the store").replace(p, "the store")
        return text

    return say


def _said(value: Any, say: Callable[[str], str]) -> Any:
    """``value`` (a problem report: strings in dicts and lists) with ``say`` applied to every string."""
    if isinstance(value, str):
        return say(value)
    if isinstance(value, dict):
        return {k: _said(v, say) for k, v in value.items()}
    if isinstance(value, list):
        return [_said(v, say) for v in value]
    return value


def create_app(settings: Settings | None = None, token: str | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD, cors_origins: list[str] | None = None,
               decodes: int = DEFAULT_DECODES, body_idle_s: float = 30.0) -> FastAPI:
    """The app over ``settings.store``. ``token`` defaults to ``$OMNIVEC_API_TOKEN``; CORS is off
    unless ``cors_origins`` names the origins allowed. ``decodes``: images decoded at once (thumbnails
    and image uploads); ``body_idle_s``: how long a request body may stall."""
    settings = settings or load_settings()
    token = token if token is not None else (os.environ.get("OMNIVEC_API_TOKEN") or None)
    store = Store(settings.store)  # read-only use: no create, no writes
    slots = DecodeSlots(decodes)
    media_of = Media(settings, Verifier(), Thumbnails(slots))
    app = FastAPI(title="omnivec", version="1", summary="Search a store of versioned image, text and audio vectors.",
                  description="Read-only. Set OMNIVEC_API_TOKEN to require `Authorization: Bearer <token>`.")
    app.state.media, app.state.slots = media_of, slots
    app.add_middleware(Gate, token=token, max_body=max_upload_bytes, idle_s=body_idle_s)
    if cors_origins:  # outside the gate: a preflight carries no token
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    say = _redactor(settings, store) if token else str

    @app.exception_handler(OmnivecError)
    def _user_error(request: Request, exc: OmnivecError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": say(exc.problem),
                                                      "remedies": [say(r) for r in exc.remedies]})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc.detail, str):
            exc = StarletteHTTPException(exc.status_code, say(exc.detail), exc.headers)
        return await http_exception_handler(request, exc)

    @app.exception_handler(StoreError)  # a damaged or unreadable store: the service, not the request
    def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": say(exc.problem),
                                                      "remedies": [say(r) for r in exc.remedies]})

    health = HealthCache()

    @app.get("/healthz", tags=["service"], responses={503: {"description": "the store is damaged"}})
    def healthz() -> Any:
        """Liveness, the store it serves and whether every table of it is whole (checked once per
        version of the tables, and at least every minute): 503 with the problems when one is damaged."""
        checked = health.get(store)
        where = {} if token else {"store": store.uri}  # with a token, nothing about the host's paths
        if checked.damaged:
            return JSONResponse(status_code=503, content={"status": "damaged", **where,
                                                          "problems": [_said(p, say) for p in checked.problems]})
        return {"status": "ok", **where, "tables": len(store.table_names())}

    add_search_routes(app, settings, store, max_upload_bytes, slots)

    @app.get("/items/{item_id}", tags=["items"])
    def item(item_id: str) -> dict[str, Any]:
        """One stored file: its row, its segments in each space, and its errors."""
        row = find_item(store, item_id)
        if row is None:
            raise HTTPException(404, "no such item in the store")
        where = sql_in("item_id", [item_id])
        spaces = {}
        for name, space_id, table in store.vector_tables():
            cols = ["segment", "char_start", "char_end", "start_s", "end_s", "text"]
            segs = store.read(table, cols, where=where).to_pylist()
            if segs:
                spaces[f"{name}:{space_id}"] = sorted(segs, key=lambda r: r["segment"])
        errors = [_jsonable(r) for r in store.read("errors", where=where).to_pylist()]
        return {"item": _jsonable(row), "segments": spaces, "errors": errors, "media_url": f"/media/{item_id}"}

    @app.get("/media/{item_id}", tags=["items"], response_class=Response)
    def media(request: Request, item_id: str, size: Annotated[int, Query(ge=16, le=THUMB_MAX)] = 320) -> Response:
        """The item's content: a JPEG thumbnail (at most ``size`` px) for an image, the file for audio
        (Range requests work), the text for text. Only the bytes that were ingested are ever served:
        a file that changed since is 409."""
        row = find_item(store, item_id)
        if row is None:
            raise HTTPException(404, "no such item in the store")
        try:
            return media_of.respond(row, size, request.headers.get("range"), request.headers.get("if-range"))
        except DecodeError as exc:
            raise HTTPException(422, f"the item's file cannot be shown: {exc}") from None

    @app.get("/spaces", tags=["store"])
    def spaces() -> list[dict[str, Any]]:
        """Every space identity of the store, with its vector count and whether it is the default."""
        defaults = {n: (store.default_space(n) or {}).get("space_id") for n in {r["name"] for r in store.space_rows()}}
        keep = ("name", "space_id", "encoder", "model", "pretrained", "dimension", "modalities", "status", "created_at")
        return [_jsonable({k: r.get(k) for k in keep}) | {"vectors": store.count(r["table_name"]),
                                                          "default": defaults.get(r["name"]) == r["space_id"]}
                for r in store.space_rows()]

    @app.get("/runs", tags=["store"])
    def runs(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        """Runs, newest first: each can be searched as of its end (``as_of=<run_name>``)."""
        rows = sorted(store.read("runs").to_pylist(), key=lambda r: r["started_at"], reverse=True)[:limit]
        return [_jsonable({k: r[k] for k in ("run_name", "run_id", "started_at", "ended_at", "status", "counts",
                                             "seconds")}) for r in rows]

    static = resources.files("omnivec.api") / "static"

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app
