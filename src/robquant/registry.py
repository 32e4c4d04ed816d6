"""A small name -> factory registry, one per pluggable family (datasets, models, attacks, ...)."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from robquant.errors import UnknownNameError
from robquant.plugins import load_plugins

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; unknown names raise an error that lists the known ones.

    Args:
        kind: What the registry holds, used in error messages (e.g. ``"dataset"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """Return the factory for ``name``.

        Raises:
            UnknownNameError: if ``name`` is not registered; the message lists the known names.
        """
        if name not in self._items:
            load_plugins()  # a name registered by a plug-in (robquant.plugins)
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(self.names())
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        """Registered names (the plug-ins' included), sorted."""
        load_plugins()
        return sorted(self._items)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plug-in's tests clean up after themselves)."""
        self._items.pop(name, None)

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs in registration order."""
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            load_plugins()
        return name in self._items
