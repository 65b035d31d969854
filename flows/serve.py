"""`omnivec serve`: one long-running process that serves the ingest, maintain and reembed
deployments with their schedules (Prefect's ``serve``; a restart does not pause the schedules).

Schedules live on a Prefect server, so a real one is required: ``prefect server start`` and
``PREFECT_API_URL=http://127.0.0.1:4200/api``.
"""

from __future__ import annotations

import os
from typing import Any

import flows.prefect_env  # noqa: F401  (must precede the prefect import)
from omnivec.config import Settings
from omnivec.errors import OmnivecError

DEFAULT_INGEST_CRON = "*/30 * * * *"
DEFAULT_MAINTAIN_CRON = "0 3 * * *"


def require_server() -> str:
    url = os.environ.get("PREFECT_API_URL", "")
    if not url:
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value() or ""
    if not url:
        raise OmnivecError(
            "schedules need a real Prefect server, and PREFECT_API_URL is not set",
            ["start one: .venv/bin/prefect server start   (dashboard at http://127.0.0.1:4200)",
             "then: export PREFECT_API_URL=http://127.0.0.1:4200/api",
             "or run once without a schedule: omnivec ingest PATH"],
        )
    return url


def build_deployments(sources: list[str], settings: Settings, cron: str = DEFAULT_INGEST_CRON,
                      maintain_cron: str = DEFAULT_MAINTAIN_CRON) -> list[Any]:
    """The three deployments: `ingest` (on ``cron``), `maintain` (on ``maintain_cron``), `reembed` (manual)."""
    from flows.ingest import ingest_flow
    from flows.maintain import maintain_flow
    from flows.reembed import reembed_flow

    dumped = settings.model_dump()
    return [
        ingest_flow.to_deployment(
            name="ingest", cron=cron, tags=["omnivec"],
            parameters={"sources": [os.path.abspath(s) for s in sources], "settings": dumped,
                        "pinned": sorted(settings._pinned)},
            description="Ingest the sources into the store (new, changed and deleted files)."),
        maintain_flow.to_deployment(
            name="maintain", cron=maintain_cron, tags=["omnivec"], parameters={"store": settings.store},
            description="Compaction, index upkeep and cleanup of untagged old versions."),
        reembed_flow.to_deployment(
            name="reembed", tags=["omnivec"], parameters={"settings": dumped},
            description="Re-embed a space into a new model (give space and model when you run it)."),
    ]


def serve(sources: list[str], settings: Settings, cron: str = DEFAULT_INGEST_CRON,
          maintain_cron: str = DEFAULT_MAINTAIN_CRON) -> None:
    """Serve the deployments until interrupted."""
    require_server()
    # each flow run is a child process that picks its task runner when it imports the flow module
    os.environ["OMNIVEC_TASK_RUNNER"] = settings.task_runner
    os.environ["OMNIVEC_WORKERS"] = str(settings.workers)
    if settings.dask_address:
        os.environ["OMNIVEC_DASK_ADDRESS"] = settings.dask_address
    from prefect import serve as prefect_serve

    prefect_serve(*build_deployments(sources, settings, cron, maintain_cron), pause_on_shutdown=False)
