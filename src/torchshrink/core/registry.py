"""Typed registries: the explicit extension points of torchshrink.

Example:
    >>> reg: Registry[int] = Registry("answer")
    >>> @reg.register("forty-two")
    ... def _f() -> int:
    ...     return 42
    >>> reg.get("forty-two")()
    42
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from torchshrink.core.errors import UnknownModelError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object mapping with a clear error that lists valid names on a miss."""

    def __init__(self, kind: str, error: type[Exception] = UnknownModelError) -> None:
        self.kind = kind
        self._error = error
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name`` (case-insensitive)."""

        def deco(obj: T) -> T:
            key = name.lower()
            if key in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the object registered under ``name`` or raise with the valid names."""
        try:
            return self._items[name.lower()]
        except KeyError:
            valid = ", ".join(sorted(self._items))
            raise self._error(f"unknown {self.kind} '{name}'; valid names: {valid}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
