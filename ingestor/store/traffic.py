"""What a state store's calls cost, for the metrics and the benchmarks: kept beside the
store (given to it, read by the metrics) rather than in the StateStore interface."""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

# The store method being served (per task, so concurrent calls count apart).
CURRENT_CALL: contextvars.ContextVar[str] = contextvars.ContextVar("state_call", default="other")

C = TypeVar("C", bound=type)


@dataclass
class StoreTraffic:
    """`round_trips`: what reached the database (PostgreSQL: statements, BEGINs and
    COMMITs; SQLite: calls into its state thread, one per group of grouped calls).
    `by_call`: the same per store method (a SQLite group counts once per call in it).
    `thread_cpu_seconds`: CPU spent in the store's own thread (SQLite's; PostgreSQL works
    on the event loop and counts none)."""

    round_trips: int = 0
    by_call: Counter[str] = field(default_factory=Counter)
    thread_cpu_seconds: float = 0.0

    def count(self, trips: int = 1, calls: Iterable[str] | None = None) -> None:
        """`trips` round trips, serving `calls` (by default the call being served)."""
        self.round_trips += trips
        if calls is None:
            self.by_call[CURRENT_CALL.get()] += trips
        else:
            self.by_call.update(calls)


def names_calls(cls: C) -> C:
    """Class decorator: each public coroutine method of `cls` (and of its bases) runs with
    CURRENT_CALL set to its name, so what it sends is counted under that name."""
    for name, method in inspect.getmembers(cls, inspect.iscoroutinefunction):
        if not name.startswith("_"):
            setattr(cls, name, _naming(name, method))
    return cls


def _naming(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def named(*args: Any, **kwargs: Any) -> Any:
        token = CURRENT_CALL.set(name)
        try:
            return await method(*args, **kwargs)
        finally:
            CURRENT_CALL.reset(token)

    return named
