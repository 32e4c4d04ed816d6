"""A minimal progress interface: library code reports, the CLI decides how to show it."""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from typing import Iterator, Protocol


class Task(Protocol):
    """A running unit of work with a known total."""

    def advance(self, n: int = 1) -> None:
        """Mark ``n`` more units done."""

    def update(self, **fields: object) -> None:
        """Show extra fields (e.g. the running loss)."""


class Progress(Protocol):
    """Creates tasks; implemented by the CLI with rich, by :class:`NullProgress` elsewhere."""

    def task(self, description: str, total: int) -> AbstractContextManager[Task]:
        """Context manager yielding a :class:`Task`."""


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass

    def update(self, **fields: object) -> None:
        pass


class NullProgress:
    """Shows nothing."""

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[_NullTask]:
        yield _NullTask()


NULL_PROGRESS = NullProgress()
