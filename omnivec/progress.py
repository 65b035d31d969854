"""A process-wide progress hook: the CLI installs a progress bar, everyone else gets a no-op.

The pipeline (and the Prefect flow, which runs in the CLI's process) reports through
:func:`reporter`, so flow parameters never carry a callable.
"""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    def start(self, total: int, description: str) -> None: ...
    def advance(self, n: int) -> None: ...
    def stop(self) -> None: ...


class _Silent:
    def start(self, total: int, description: str) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def stop(self) -> None:
        pass


_current: Reporter = _Silent()


def reporter() -> Reporter:
    return _current


def set_reporter(r: Reporter | None) -> None:
    global _current
    _current = r if r is not None else _Silent()
