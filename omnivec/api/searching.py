"""The search routes: ``GET /search`` (text) and ``POST /search`` (an uploaded image or audio file),
over files or, with ``assets=true``, over assets (groups of files by their fused vectors).

A parameter the route does not know is refused with 400 naming it (a typo is never ignored). A space
switched off in the settings is refused before any model is loaded.
"""

from __future__ import annotations

import tempfile
from contextlib import nullcontext
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile

from omnivec.api.media import upload_kind
from omnivec.api.thumbs import DecodeSlots
from omnivec.config import Settings
from omnivec.errors import DecodeError, OmnivecError, StoreError
from omnivec.query import MODALITY_FILTERS, Hit, search
from omnivec.query_assets import AssetHit, search_assets
from omnivec.sources import item_id_for
from omnivec.store.store import Store

MAX_K = 200
SEARCH_PARAMS = frozenset({"q", "k", "modality", "space", "as_of", "hybrid", "where", "assets"})
UPLOAD_FIELDS = frozenset({"file", "k", "modality", "space", "as_of", "assets"})
ASSETS_REFUSE = "assets=true takes no where, hybrid, modality or as_of (assets have no versions or filters)"


def _hit(h: Hit) -> dict[str, Any]:
    return h.to_dict() | {"media_url": f"/media/{h.item_id}", "item_url": f"/items/{h.item_id}"}


def _asset(a: AssetHit) -> dict[str, Any]:
    out = a.to_dict()
    for m in out["members"]:
        m["item_id"] = item_id_for(m["uri"])
        m["media_url"] = f"/media/{m['item_id']}"
    return out


def _refuse_unknown(names: Any, allowed: frozenset[str], what: str) -> None:
    unknown = sorted(set(names) - allowed)
    if unknown:
        raise HTTPException(400, f"unknown {what}{'s' if len(unknown) > 1 else ''} "
                                 f"{', '.join(repr(n) for n in unknown)}; "
                                 f"this route takes {', '.join(sorted(allowed)) or 'none'}")


def known_query(request: Request) -> None:
    _refuse_unknown(request.query_params.keys(), SEARCH_PARAMS, "query parameter")


async def known_form(request: Request) -> None:
    _refuse_unknown(request.query_params.keys(), frozenset(), "query parameter")
    _refuse_unknown((await request.form()).keys(), UPLOAD_FIELDS, "form field")


def add_search_routes(app: FastAPI, settings: Settings, store: Store, max_upload_bytes: int,
                      slots: DecodeSlots) -> None:
    """``GET /search`` and ``POST /search`` over ``store``."""
    def check(modality: str | None, space: str | None) -> None:
        if modality is not None and modality not in MODALITY_FILTERS:
            raise HTTPException(400, f"modality must be one of {', '.join(MODALITY_FILTERS)}")
        cfg = settings.spaces.get(space) if space else None
        if cfg is not None and not cfg.enabled:
            raise OmnivecError(f"space {space!r} is switched off (enabled = false): it is not searched",
                               ["search without space=", f"set [spaces.{space}] enabled = true and restart "
                                                         "omnivec api"])

    @app.get("/search", dependencies=[Depends(known_query)], tags=["search"])
    def search_text(q: Annotated[str, Query(min_length=1, max_length=4096, description="text query")],
                    k: Annotated[int, Query(ge=1, le=MAX_K)] = 12,
                    modality: Annotated[str | None, Query(description="image | text | audio")] = None,
                    space: str | None = None,
                    as_of: Annotated[str | None, Query(description="run name, version or ISO time")] = None,
                    hybrid: bool = False,
                    where: Annotated[list[str] | None, Query(description="uri=GLOB, after=ISO, run=NAME...")] = None,
                    assets: Annotated[bool, Query(description="search assets (groups of files)")] = False,
                    ) -> dict[str, Any]:
        """Search with text: every space that embeds text, fused by reciprocal rank; with
        ``assets=true``, assets by their fused vectors."""
        check(modality, space)
        if assets:
            if where or hybrid or modality or as_of:
                raise HTTPException(400, ASSETS_REFUSE)
            found = search_assets(q, k=k, space=space or None, settings=settings)
            return {"query": q, "assets": True, "hits": [_asset(a) for a in found]}
        hits = search(q, k=k, modality=modality or None, space=space or None, as_of=as_of or None,
                      hybrid=hybrid, where=where, settings=settings, store=store)
        return {"query": q, "hits": [_hit(h) for h in hits]}

    @app.post("/search", dependencies=[Depends(known_form)], tags=["search"])
    def search_file(file: Annotated[UploadFile, File(description="an image or audio file")],
                    k: Annotated[int, Form(ge=1, le=MAX_K)] = 12, modality: Annotated[str | None, Form()] = None,
                    space: Annotated[str | None, Form()] = None, as_of: Annotated[str | None, Form()] = None,
                    assets: Annotated[bool, Form()] = False) -> dict[str, Any]:
        """Search with an uploaded image or audio file (its kind is read from its content)."""
        check(modality, space)
        if assets and (modality or as_of):
            raise HTTPException(400, ASSETS_REFUSE)
        data = file.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload larger than {max_upload_bytes} bytes")
        if not data:
            raise HTTPException(400, "the upload is empty")
        name = (file.filename or "")[:200]
        try:
            kind, suffix = upload_kind(data[:16], file.filename)
        except DecodeError as exc:
            raise HTTPException(400, str(exc)) from None
        with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
            tmp.write(data)
            tmp.flush()
            image, audio = (tmp.name, None) if kind == "image" else (None, tmp.name)
            try:
                with slots.slot() if kind == "image" else nullcontext():
                    if assets:
                        found: list[Any] = search_assets(image=image, audio=audio, k=k, space=space or None,
                                                         settings=settings)
                    else:
                        found = search(image=image, audio=audio, k=k, modality=modality or None,
                                       space=space or None, as_of=as_of or None, settings=settings, store=store)
            except StoreError:
                raise  # a damaged store: 503 from the app's handler, not a fault of the upload
            except OmnivecError as exc:
                message = exc.problem.replace(f"query file {tmp.name}", f"upload {name}".strip())
                raise HTTPException(400, message.replace(tmp.name, "upload")) from None
            except (DecodeError, ValueError) as exc:
                raise HTTPException(400, f"the upload cannot be read: {exc}".replace(tmp.name, "upload")) from None
        query = {"upload": name, "kind": kind, "bytes": len(data)}
        if assets:
            return {"query": query, "assets": True, "hits": [_asset(a) for a in found]}
        return {"query": query, "hits": [_hit(h) for h in found]}

