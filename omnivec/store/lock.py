"""One writer per store: an exclusive lock held for a whole ingest, reembed, restore or maintain.

A second writer on the same store waits (printing who holds the lock) instead of racing; readers
never take it. The lock is an ``flock`` on ``<store>/.omnivec-writer.lock``, released by the kernel
when the holder dies, so a killed run never leaves a stale lock behind. For an object-store store
(``s3://...``) the lock file lives on the local machine, keyed by the store's address
(``$XDG_CACHE_HOME/omnivec/locks``): writers on one machine take turns; writers on different
machines are kept apart by the table format's own commit protocol, which makes a conflicting
commit retry or fail rather than overwrite.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from omnivec.errors import StoreError

LOCK_NAME = ".omnivec-writer.lock"


def _holder(fd: int, patience: float = 1.0) -> str:
    """Who holds the lock, from what the holder wrote into the file. A holder writes it just after
    taking the lock, so an empty file is read again for up to ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while True:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, ValueError):
            info = {}
        if info.get("pid") or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if not info.get("pid"):
        return "another writer"
    return f"{info.get('what', 'a writer')} (pid {info['pid']} on {info.get('host')}, since {info.get('since')})"


def lock_path(store_uri: str) -> str:
    """Where the writer lock of a store lives (made if missing)."""
    if "://" not in store_uri:
        os.makedirs(store_uri, exist_ok=True)
        return os.path.join(store_uri, LOCK_NAME)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(cache, "omnivec", "locks")
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, hashlib.sha256(store_uri.rstrip("/").encode()).hexdigest()[:32] + ".lock")


@contextlib.contextmanager
def writer_lock(store_uri: str, what: str, timeout: float | None = None,
                on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the store's writer lock; wait for it (``on_wait`` is told once) up to ``timeout`` seconds."""
    fd = os.open(lock_path(store_uri), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(f"store {store_uri} is being written by {_holder(fd)}; waiting for it to finish")
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() > deadline:
                        raise StoreError(f"store {store_uri} is still being written by {_holder(fd)} after "
                                         f"{timeout:.0f} s") from None
                    time.sleep(0.2)
        info = {"what": what, "pid": os.getpid(), "host": socket.gethostname(),
                "since": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):  # who holds it is only for the message; a full disk must not stop here
            os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
