"""Environment defaults applied before Prefect is imported (a user's own settings win).

- analytics off, so offline runs print no telemetry errors;
- a longer start timeout for the temporary server Prefect starts when no PREFECT_API_URL is
  set (16-22 s on a 2-core machine, close to Prefect's 20 s default).
"""

from __future__ import annotations

import os

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_UI_SHOW_PROMOTIONAL_CONTENT": "false",
}


def apply() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


apply()
