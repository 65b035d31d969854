"""Lance datasets for reading, one per table version, sharing one cache of indices and metadata.

Opening a table's Lance dataset costs about 0.7 ms, and a dataset opened on its own starts with
empty caches, so its vector index would be read again from disk. A long-lived reader (``omnivec
api``) asks here instead: the dataset of each (table, version) is opened once, all of them share one
``lance.Session`` (index and metadata caches survive a new version: an index file is immutable), and
the least recently used are closed beyond :data:`MAX_OPEN`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

MAX_OPEN = 16

_open: OrderedDict[tuple[str, int], Any] = OrderedDict()
_lock = threading.Lock()
_session: Any = None


def _shared_session() -> Any:
    global _session
    if _session is None:
        import lance

        _session = lance.Session()
    return _session


def dataset(tbl: Any, version: int | None = None) -> Any:
    """The Lance dataset of a LanceDB table at the version ``tbl`` has checked out (``version``, when
    the caller has just read it: each read is a round trip through LanceDB's event loop)."""
    path = str(getattr(tbl, "_dataset_path", "") or tbl.name)
    key = (path, int(tbl.version if version is None else version))
    with _lock:
        ds = _open.get(key)
        if ds is not None:
            _open.move_to_end(key)
            return ds
        session = _shared_session()
    try:
        ds = tbl.to_lance(session=session)
    except TypeError:  # a table kind whose to_lance takes no options
        ds = tbl.to_lance()
    with _lock:
        _open[key] = ds
        while len(_open) > MAX_OPEN:
            _open.popitem(last=False)
    return ds
