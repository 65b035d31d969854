"""The read-only query service: a FastAPI app over a store (``omnivec api``) and its search page."""

from omnivec.api.app import create_app

__all__ = ["create_app"]
