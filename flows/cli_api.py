"""`omnivec api`: serve the read-only query service and its search page (no Prefect involved)."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli_common import (
    ClapOpt,
    ConfigOpt,
    DeviceOpt,
    ModelOpt,
    PretrainedOpt,
    StoreOpt,
    TextOpt,
    _guard,
    _settings,
    app,
    err,
)


@app.command("api")
def api_cmd(
    host: Annotated[str, typer.Option("--host", help="address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    store: StoreOpt = None, model: ModelOpt = None, pretrained: PretrainedOpt = None, clap_model: ClapOpt = None,
    text_model: TextOpt = None, device: DeviceOpt = None, config: ConfigOpt = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.001, help="largest query upload accepted")] = 32.0,
    cors_origin: Annotated[list[str] | None, typer.Option("--cors-origin", help="allow this browser origin (repeatable; CORS is off by default)")] = None,
    warm: Annotated[bool, typer.Option("--warm/--no-warm", help="load the text encoders before the first request")] = True,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
) -> None:
    """Serve search over HTTP: GET/POST /search, /items, /media, /spaces, /runs, /healthz, a page at /
    and OpenAPI at /docs. Read-only. Set OMNIVEC_API_TOKEN to require a bearer token."""

    def body() -> None:
        import os

        import uvicorn

        from omnivec.api import create_app

        s = _settings(config, store, model, pretrained, device, clap_model, text_model)
        application = create_app(s, max_upload_bytes=int(max_upload_mb * 1024 * 1024), cors_origins=cors_origin)
        if warm:
            from omnivec.api.warm import warm_encoders

            for line in warm_encoders(s):
                err.print(line, highlight=False, markup=False)
        token = "on" if os.environ.get("OMNIVEC_API_TOKEN") else "off"
        err.print(f"omnivec api on http://{host}:{port} (page /, docs /docs), store {s.store}, token {token}",
                  highlight=False, soft_wrap=True, markup=False)
        uvicorn.run(application, host=host, port=port, log_level=log_level)

    _guard(body)
