"""sha256 of weight files, cached by (path, size, mtime) so a reload costs a stat, not a read."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from omnivec.usercache import cache_file, read_json, write_json

_LOCK = threading.Lock()


def _cache_path() -> Path:
    return cache_file("weights-sha256.json")


def file_sha256(path: str | os.PathLike[str]) -> str:
    real = os.path.realpath(path)
    st = os.stat(real)
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}"
    cache = _cache_path()
    with _LOCK:
        known = read_json(cache)
        if key in known:
            return known[key]
        digest = hashlib.sha256()
        with open(real, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        known[key] = digest.hexdigest()
        write_json(cache, known)  # a read-only home only costs a re-hash next time
        return str(known[key])
