"""The query service: a read-only FastAPI app over one store.

Routes: ``GET /search``, ``POST /search`` (an uploaded image or audio file), ``GET /items/{id}``,
``GET /media/{id}``, ``GET /spaces``, ``GET /runs``, ``GET /healthz``, the search page at ``/`` and
OpenAPI at ``/docs``. No route writes to the store. Encoders are loaded once per process and shared
by all requests; request handlers run in FastAPI's thread pool.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from omnivec.api.auth import check_token
from omnivec.api.media import AUDIO_TYPES, THUMB_MAX, Thumbnails, find_item, upload_kind
from omnivec.config import Settings, load_settings
from omnivec.errors import DecodeError, OmnivecError, StoreError
from omnivec.media import decode_text, read_file
from omnivec.query import MODALITY_FILTERS, Hit, search
from omnivec.store.health import HealthCache
from omnivec.store.store import Store, sql_in

DEFAULT_MAX_UPLOAD = 32 * 1024 * 1024
MAX_K = 200


def _hit(h: Hit) -> dict[str, Any]:
    return h.to_dict() | {"media_url": f"/media/{h.item_id}", "item_url": f"/items/{h.item_id}"}


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


def create_app(settings: Settings | None = None, token: str | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD, cors_origins: list[str] | None = None) -> FastAPI:
    """The app over ``settings.store``. ``token`` defaults to ``$OMNIVEC_API_TOKEN``; CORS is off
    unless ``cors_origins`` names the origins allowed."""
    settings = settings or load_settings()
    token = token if token is not None else (os.environ.get("OMNIVEC_API_TOKEN") or None)
    store = Store(settings.store)  # read-only use: no create, no writes
    thumbs = Thumbnails()
    app = FastAPI(title="omnivec", version="1", summary="Search a store of versioned image, text and audio vectors.",
                  description="Read-only. Set OMNIVEC_API_TOKEN to require `Authorization: Bearer <token>`.")
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    def auth(request: Request) -> None:
        check_token(request, token)

    guarded = [Depends(auth)]

    @app.exception_handler(OmnivecError)
    def _user_error(request: Request, exc: OmnivecError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"detail": exc.problem, "remedies": exc.remedies})

    @app.exception_handler(StoreError)  # a damaged or unreadable store: the service, not the request
    def _store_error(request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": exc.problem, "remedies": exc.remedies})

    def _check(k: int, modality: str | None) -> None:
        if modality is not None and modality not in MODALITY_FILTERS:
            raise HTTPException(400, f"modality must be one of {', '.join(MODALITY_FILTERS)}")

    health = HealthCache()

    @app.get("/healthz", tags=["service"], responses={503: {"description": "the store is damaged"}})
    def healthz() -> Any:
        """Liveness, the store it serves and whether every table of it is whole (checked once per
        version of the tables, and at least every minute): 503 with the problems when one is damaged."""
        checked = health.get(store)
        if checked.damaged:
            return JSONResponse(status_code=503, content={"status": "damaged", "store": store.uri,
                                                          "problems": checked.problems})
        return {"status": "ok", "store": store.uri, "tables": len(store.table_names())}

    @app.get("/search", dependencies=guarded, tags=["search"])
    def search_text(q: Annotated[str, Query(min_length=1, max_length=4096, description="text query")],
                    k: Annotated[int, Query(ge=1, le=MAX_K)] = 12,
                    modality: Annotated[str | None, Query(description="image | text | audio")] = None,
                    space: str | None = None,
                    as_of: Annotated[str | None, Query(description="run name, version or ISO time")] = None,
                    hybrid: bool = False,
                    where: Annotated[list[str] | None, Query(description="uri=GLOB, after=ISO, run=NAME...")] = None,
                    ) -> dict[str, Any]:
        """Search with text: every space that embeds text, fused by reciprocal rank."""
        _check(k, modality)
        hits = search(q, k=k, modality=modality or None, space=space or None, as_of=as_of or None,
                      hybrid=hybrid, where=where, settings=settings, store=store)
        return {"query": q, "hits": [_hit(h) for h in hits]}

    @app.post("/search", dependencies=guarded, tags=["search"])
    def search_file(request: Request, file: Annotated[UploadFile, File(description="an image or audio file")],
                    k: Annotated[int, Form(ge=1, le=MAX_K)] = 12, modality: Annotated[str | None, Form()] = None,
                    space: Annotated[str | None, Form()] = None, as_of: Annotated[str | None, Form()] = None,
                    ) -> dict[str, Any]:
        """Search with an uploaded image or audio file (its kind is read from its content)."""
        _check(k, modality)
        data = file.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload larger than {max_upload_bytes} bytes")
        if not data:
            raise HTTPException(400, "the upload is empty")
        try:
            kind, suffix = upload_kind(data[:16], file.filename)
        except DecodeError as exc:
            raise HTTPException(400, str(exc)) from None
        with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
            tmp.write(data)
            tmp.flush()
            try:
                hits = search(image=tmp.name if kind == "image" else None, audio=tmp.name if kind == "audio" else None,
                              k=k, modality=modality or None, space=space or None, as_of=as_of or None,
                              settings=settings, store=store)
            except OmnivecError as exc:
                message = exc.problem.replace(tmp.name, f"upload {file.filename or ''}".strip())
                raise HTTPException(400, message) from None
            except (DecodeError, ValueError) as exc:
                raise HTTPException(400, f"the upload cannot be read: {exc}") from None
        return {"query": {"upload": file.filename, "kind": kind, "bytes": len(data)}, "hits": [_hit(h) for h in hits]}

    @app.get("/items/{item_id}", dependencies=guarded, tags=["items"])
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

    @app.get("/media/{item_id}", dependencies=guarded, tags=["items"], response_class=Response)
    def media(item_id: str, size: Annotated[int, Query(ge=16, le=THUMB_MAX)] = 320) -> Response:
        """The item's content: a JPEG thumbnail (at most ``size`` px) for an image, the file for audio,
        the text for text. Only files that are items of the store are ever served."""
        row = find_item(store, item_id)
        if row is None:
            raise HTTPException(404, "no such item in the store")
        path = row["uri"]
        if not os.path.isfile(path):
            raise HTTPException(404, "the item's file is no longer where it was ingested")
        try:
            if row["modality"] == "image":
                data = thumbs.get(row, size, settings.max_image_bytes, settings.max_image_pixels)
                return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})
            if row["modality"] == "audio":
                ext = os.path.splitext(path)[1].lower()
                return FileResponse(path, media_type=AUDIO_TYPES.get(ext, "application/octet-stream"))
            return PlainTextResponse(decode_text(read_file(path, settings.max_text_bytes).data))
        except DecodeError as exc:
            raise HTTPException(422, f"the item's file cannot be shown: {exc}") from None

    @app.get("/spaces", dependencies=guarded, tags=["store"])
    def spaces() -> list[dict[str, Any]]:
        """Every space identity of the store, with its vector count and whether it is the default."""
        defaults = {n: (store.default_space(n) or {}).get("space_id") for n in {r["name"] for r in store.space_rows()}}
        keep = ("name", "space_id", "encoder", "model", "pretrained", "dimension", "modalities", "status", "created_at")
        return [_jsonable({k: r.get(k) for k in keep}) | {"vectors": store.count(r["table_name"]),
                                                          "default": defaults.get(r["name"]) == r["space_id"]}
                for r in store.space_rows()]

    @app.get("/runs", dependencies=guarded, tags=["store"])
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
