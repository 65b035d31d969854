"""User-facing errors. Each names the object it is about and lists the ways out."""

from __future__ import annotations


class OmnivecError(Exception):
    """An error a user can act on: a one-line problem plus numbered remedies."""

    def __init__(self, problem: str, remedies: list[str] | None = None) -> None:
        self.problem = problem
        self.remedies = list(remedies or [])
        super().__init__(self.render())

    def render(self) -> str:
        if not self.remedies:
            return self.problem
        lines = [self.problem, "To resolve this, you can:"]
        lines += [f"  {i}. {r}" for i, r in enumerate(self.remedies, 1)]
        return "\n".join(lines)


class ConfigError(OmnivecError):
    """Settings that cannot be used (unknown key, bad value, unreadable file)."""


class SourceError(OmnivecError):
    """A source path that does not exist or cannot be read."""


class StoreError(OmnivecError):
    """The store cannot be opened or written."""


class DamagedTableError(StoreError):
    """A table of the store is damaged: a file it needs is missing, cut short or overwritten."""

    def __init__(self, table: str, store: str, problem: str, remedies: list[str] | None = None) -> None:
        self.table = table
        self.store = store
        self.detail = problem
        super().__init__(f"table {table} of store {store} is damaged: {problem}", remedies)

    def __reduce__(self) -> tuple[type, tuple[str, str, str, list[str]]]:  # pickled between processes
        return type(self), (self.table, self.store, self.detail, self.remedies)


class ModelUnavailableError(OmnivecError):
    """An encoder's model or weights cannot be loaded (offline and not cached, bad path...)."""


class SpaceMismatchError(OmnivecError):
    """A query or ingest uses a space whose recipe differs from what the store holds."""


class SpaceRetiredError(OmnivecError):
    """The configured model's space was retired: it is kept, but not searched."""


class SpaceAbsentError(OmnivecError):
    """A space searched as of a run, version or time before it had vectors."""


class UnknownEncoderError(OmnivecError, KeyError):
    """No encoder is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.render()


class DecodeError(Exception):
    """One file could not be read or decoded; becomes an `errors` row, never a crash."""

    def __init__(self, message: str, stage: str = "decode") -> None:
        self.stage = stage
        super().__init__(message)
