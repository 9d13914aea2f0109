"""Conversions remembered per value, by identity, for immutable values that are converted again
and again: flowd writes a task's config to its store and sends it on the wire at every state
change, and the config never changes (an evolved TaskRecord shares its config object)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class IdentityMemo(Generic[K, V]):
    """`convert(value)`, remembered for up to `size` values. Only for immutable values, and for
    results no caller changes: both are shared. An entry holds its value, so that value's id
    cannot be reused by another object while it is remembered. Safe from any thread without a
    lock: each step is one dict operation, and a full memo starts again empty."""

    def __init__(self, convert: Callable[[K], V], size: int = 1024) -> None:
        self._convert = convert
        self._size = size
        self._entries: dict[int, tuple[K, V]] = {}

    def __call__(self, value: K) -> V:
        found = self._entries.get(id(value))
        if found is not None and found[0] is value:
            return found[1]
        converted = self._convert(value)
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[id(value)] = (value, converted)
        return converted


__all__ = ["IdentityMemo"]
