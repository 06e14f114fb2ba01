"""``Timed``: one block or every call of a function timed, sync or async, with its outcome."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Timed:
    """Times one block or every call of a function; sync or async.

    Use it as ``with``, ``async with``, or decorate a sync or async function
    (each call is timed separately). An exception (re-raised) or a call to
    :meth:`fail` makes the outcome ``"failure"``; otherwise ``"success"``.
    """

    __slots__ = ("_finish", "_start", "value")

    def __init__(self, finish: Callable[[str, float], None]):
        self._finish = finish
        self._start = 0.0
        self.value = "success"

    @property
    def outcome(self) -> str:
        return self.value

    def fail(self) -> None:
        """Mark a soft failure (no exception, but the work did not succeed)."""
        self.value = "failure"

    def __enter__(self) -> Timed:
        self.value = "success"
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self.value = "failure"
        self._finish(self.value, time.perf_counter() - self._start)
        return False

    async def __aenter__(self) -> Timed:
        return self.__enter__()

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        return self.__exit__(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        finish = self._finish
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def timed_async(*args, **kwargs):
                with Timed(finish):
                    return await func(*args, **kwargs)

            return timed_async  # type: ignore[return-value]

        @functools.wraps(func)
        def timed(*args, **kwargs):
            with Timed(finish):
                return func(*args, **kwargs)

        return timed  # type: ignore[return-value]
