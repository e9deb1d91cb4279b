"""Name -> implementation tables, so recipes select rewards, advantages, losses and engines by name.

Adding an algorithm means writing one function and decorating it; the training loop never
branches on names (the verl ``core_algos`` pattern).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from frugalrl.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A table of named implementations of one kind (``"reward"``, ``"advantage estimator"``...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = item
            return item

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UserError(
                f"unknown {self.kind} '{name}'; valid choices: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


def keyword_params(fn: Callable) -> set[str] | None:
    """The keyword-only parameters of ``fn``, its own knobs; None if it takes any (``**params``)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind is p.KEYWORD_ONLY}


def check_params(fn: Callable, params: Mapping[str, Any], what: str) -> None:
    """A UserError naming ``what`` if ``params`` holds a key that ``fn`` does not take."""
    known = keyword_params(fn)
    if known is None:
        return
    unknown = sorted(set(params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "no parameters"
        raise UserError(f"{what} has no parameter '{unknown[0]}'; it takes: {takes}")
