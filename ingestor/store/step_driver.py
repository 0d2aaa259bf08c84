"""Runs a sequence of steps (core.settle_steps) with a backend's primitives: each step
yielded is performed, its result sent back, its error thrown back in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

R = TypeVar("R")


class _Driver:
    """Where a run of `steps` is: the last step's result or error, and the final value."""

    def __init__(self, steps: Generator[Any, Any, R]) -> None:
        self.steps = steps
        self.result: Any = None
        self.error: BaseException | None = None
        self.value: Any = None

    def next_step(self) -> Any:
        """The next step (the last result or error sent in); None once the steps end."""
        try:
            if self.error is not None:
                return self.steps.throw(self.error)
            return self.steps.send(self.result)
        except StopIteration as done:
            self.value = done.value
            return None


def run_steps(steps: Generator[Any, Any, R], perform: Callable[[Any], Any]) -> R:
    """Drive `steps`, performing each with `perform`; its errors go back into `steps`."""
    run = _Driver(steps)
    while (step := run.next_step()) is not None:
        try:
            run.result, run.error = perform(step), None
        except BaseException as exc:
            run.result, run.error = None, exc
    return run.value  # type: ignore[no-any-return]


async def run_steps_async(
    steps: Generator[Any, Any, R], perform: Callable[[Any], Awaitable[Any]]
) -> R:
    """run_steps for a backend whose steps are awaited."""
    run = _Driver(steps)
    while (step := run.next_step()) is not None:
        try:
            run.result, run.error = await perform(step), None
        except BaseException as exc:
            run.result, run.error = None, exc
    return run.value  # type: ignore[no-any-return]
