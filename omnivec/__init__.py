"""omnivec: images, text and audio into versioned, searchable vectors.

The core library (this package) never imports Prefect; ``flows/`` and ``tasks/`` do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from omnivec.config import Settings, load_settings
    from omnivec.pipeline.run import ingest
    from omnivec.query import Hit, search
    from omnivec.query_assets import AssetHit, search_assets
    from omnivec.store import Store

_LAZY = {
    "Settings": "omnivec.config",
    "load_settings": "omnivec.config",
    "ingest": "omnivec.pipeline.run",
    "Hit": "omnivec.query",
    "search": "omnivec.query",
    "AssetHit": "omnivec.query_assets",
    "search_assets": "omnivec.query_assets",
    "Store": "omnivec.store",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'omnivec' has no attribute {name!r}")


__all__ = ["AssetHit", "Hit", "Settings", "Store", "ingest", "load_settings", "search", "search_assets",
           "__version__"]
