"""The LanceDB store."""

from omnivec.store.store import Store

__all__ = ["Store"]
