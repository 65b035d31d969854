"""`omnivec api`: serve the read-only query service and its search page (no Prefect involved)."""

from __future__ import annotations

import errno
import socket
from typing import Annotated

import typer

from flows.cli_common import (
    ClapOpt,
    ConfigOpt,
    DeviceOpt,
    ModelOpt,
    PrecisionOpt,
    PretrainedOpt,
    StoreOpt,
    TextOpt,
    ThreadsOpt,
    _guard,
    _settings,
    app,
    err,
)
from omnivec.errors import OmnivecError


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) and listening, so the service is reachable before the line that
    says so is printed; a port in use is an OmnivecError, not a traceback after that line."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise OmnivecError(f"cannot listen on {host!r}: {exc.strerror}", ["give an address or a host name this "
                                                                           "machine has, e.g. --host 127.0.0.1"]) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OmnivecError(f"port {port} on {host} is in use; pick another with --port",
                               [f"stop what listens there (e.g. `ss -ltnp 'sport = :{port}'` shows it)"]) from None
        raise OmnivecError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                           ["pick another --host or --port (ports below 1024 need privileges)"]) from None
    return sock


@app.command("api")
def api_cmd(
    host: Annotated[str, typer.Option("--host", help="address to listen on (0.0.0.0: every interface)")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    store: StoreOpt = None, model: ModelOpt = None, pretrained: PretrainedOpt = None, clap_model: ClapOpt = None,
    text_model: TextOpt = None, device: DeviceOpt = None, precision: PrecisionOpt = None, threads: ThreadsOpt = None,
    config: ConfigOpt = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.001, help="largest request body accepted (a query upload with its form)")] = 32.0,
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

        s = _settings(config, store, model, pretrained, device, clap_model, text_model, precision=precision,
                      threads=threads)
        sock = listen(host, port)
        application = create_app(s, max_upload_bytes=int(max_upload_mb * 1024 * 1024), cors_origins=cors_origin)
        if warm:
            from omnivec.api.warm import warm_encoders

            for line in warm_encoders(s):
                err.print(line, highlight=False, soft_wrap=True, markup=False)
        token = "on" if os.environ.get("OMNIVEC_API_TOKEN") else "off"
        shown = f"[{host}]" if ":" in host else host
        err.print(f"omnivec api on http://{shown}:{port} (page /, docs /docs), store {s.store}, token {token}",
                  highlight=False, soft_wrap=True, markup=False)
        uvicorn.Server(uvicorn.Config(application, log_level=log_level)).run(sockets=[sock])

    _guard(body)
