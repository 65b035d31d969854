"""Serve only the bytes that were ingested.

An item's file is opened without following a link (``O_NOFOLLOW``), must be a regular file of the
size the ``items`` row holds, and its sha256 must equal the row's ``content_hash`` before anything
is sent. An item ingested through a link (one that stays inside the ingested folders) is opened at
the link's target, again with ``O_NOFOLLOW``, and held to the same check: a link swapped in later
leads to other bytes and is refused, whatever it points at. The descriptor that was checked is the
one read from; the path is never opened again. A successful check is remembered per (content hash,
device, inode, size, mtime, ctime), so an audio player's many Range requests cost an ``open`` and an
``fstat``, not a re-hash; a write, a rename over the file, a new link or a changed mode moves one of
those and the next request checks again.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass

from fastapi import HTTPException

BLOCK = 1 << 20
CHANGED = "the file changed since it was ingested; run `omnivec ingest` again"
Key = tuple[str, int, int, int, int, int]


def changed(why: str = "") -> HTTPException:
    return HTTPException(409, f"{CHANGED}{f' ({why})' if why else ''}")


def gone() -> HTTPException:
    return HTTPException(404, "the item's file is no longer where it was ingested")


@dataclass(slots=True)
class Opened:
    """A checked descriptor (the caller closes it, or hands it to a response that does)."""

    fd: int
    key: Key
    size: int
    data: bytes | None = None  # the whole content, when the check read it into memory

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def still_same(self) -> bool:
        """Whether the descriptor still has the size and times it had when it was checked."""
        return _key(self.key[0], os.fstat(self.fd)) == self.key


def _key(content_hash: str, st: os.stat_result) -> Key:
    return content_hash, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _open_nofollow(path: str, hop: bool = True) -> int:
    flags = (os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
             | getattr(os, "O_CLOEXEC", 0))
    try:
        return os.open(path, flags)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise gone() from None
        if exc.errno == errno.ELOOP and hop:  # a link: its target, itself not a link, must hold the bytes
            return _open_nofollow(os.path.realpath(path), hop=False)
        if exc.errno == errno.ELOOP:
            raise changed("it is a symbolic link") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise HTTPException(403, "the item's file cannot be read (permission denied)") from None
        raise changed(exc.strerror or str(exc)) from None


def _read_all(fd: int, size: int) -> bytes:
    parts, pos = [], 0
    while pos < size:
        part = os.pread(fd, min(BLOCK, size - pos), pos)
        if not part:
            break
        parts.append(part)
        pos += len(part)
    return b"".join(parts)


def _hash_stream(fd: int, size: int) -> str:
    digest, pos = hashlib.sha256(), 0
    while pos < size:
        part = os.pread(fd, min(BLOCK, size - pos), pos)
        if not part:
            break
        digest.update(part)
        pos += len(part)
    return digest.hexdigest()


class Verifier:
    """Opens items' files and checks them against their ``items`` rows; remembers what it checked."""

    def __init__(self, entries: int = 4096) -> None:
        self._ok: OrderedDict[Key, None] = OrderedDict()
        self._entries = entries
        self._lock = threading.Lock()
        self.hashed = 0  # how many files were read to check them (the cache's misses)

    def _known(self, key: Key) -> bool:
        with self._lock:
            if key in self._ok:
                self._ok.move_to_end(key)
                return True
            return False

    def _remember(self, key: Key) -> None:
        with self._lock:
            self._ok[key] = None
            while len(self._ok) > self._entries:
                self._ok.popitem(last=False)
            self.hashed += 1

    def open(self, path: str, content_hash: str | None, size: int | None, keep: int = 0) -> Opened:
        """The checked descriptor of ``path``. ``keep``: largest file whose bytes are kept in memory
        when they have to be read for the check (images and texts); a larger one is hashed in blocks.
        Raises HTTPException 404 (gone), 403 (unreadable) or 409 (not the ingested bytes)."""
        if not content_hash or size is None:
            raise HTTPException(404, "the item's content was never read (see its errors at /items/{id})")
        fd = _open_nofollow(path)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise changed("it is no longer a regular file")
            if st.st_size != size:
                raise changed(f"it holds {st.st_size:,} bytes, {size:,} were ingested")
            opened = Opened(fd, _key(content_hash, st), st.st_size)
            if self._known(opened.key):
                return opened
            if st.st_size <= keep:
                opened.data = _read_all(fd, st.st_size)
                digest = hashlib.sha256(opened.data).hexdigest()
            else:
                digest = _hash_stream(fd, st.st_size)
            if digest != content_hash or not opened.still_same():
                raise changed()
            self._remember(opened.key)
            return opened
        except BaseException:
            os.close(fd)
            raise

    def read(self, opened: Opened) -> bytes:
        """The whole content of a checked descriptor, hashed again as it is read (a write between the
        check and this read cannot slip other bytes in)."""
        if opened.data is not None:
            return opened.data
        data = _read_all(opened.fd, opened.size)
        if hashlib.sha256(data).hexdigest() != opened.key[0]:
            raise changed()
        opened.data = data
        return data
