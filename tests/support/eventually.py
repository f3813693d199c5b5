"""Bounded waiting for tests: poll a condition until it holds or a deadline passes. Never a bare sleep.

    pod = eventually(lambda: get_ready_pod(), timeout=30, desc="pod Ready")
    await aeventually(check_metrics, timeout=10)

The probe "holds" when it returns a truthy value without raising AssertionError (or one of `retry_on`).
The last failure is reported in the timeout message, so a red test says what it was waiting for.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
DEFAULT_INTERVAL = 0.2


class EventuallyTimeout(AssertionError):
    pass


def _describe(value: object, error: BaseException | None) -> str:
    if error is not None:
        return f"{type(error).__name__}: {error}"
    return f"last value {value!r}"


def eventually(
    probe: Callable[[], T],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    desc: str = "",
    retry_on: tuple[type[BaseException], ...] = (AssertionError,),
) -> T:
    """Calls `probe` until it returns a truthy value; returns that value or raises EventuallyTimeout."""
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        attempts += 1
        error: BaseException | None = None
        value: T | None = None
        try:
            value = probe()
            if value:
                return value
        except retry_on as exc:
            error = exc
        if time.monotonic() + interval > deadline:
            what = desc or getattr(probe, "__name__", "condition")
            raise EventuallyTimeout(
                f"{what} did not hold within {timeout:.1f}s ({attempts} attempts); {_describe(value, error)}"
            ) from error
        time.sleep(interval)


async def aeventually(
    probe: Callable[[], Awaitable[T] | T],
    *,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 -- the same signature as `eventually`, on purpose
    interval: float = DEFAULT_INTERVAL,
    desc: str = "",
    retry_on: tuple[type[BaseException], ...] = (AssertionError,),
) -> T:
    """The async twin of `eventually`; `probe` may be a coroutine function or a plain function."""
    deadline = time.monotonic() + timeout
    attempts = 0
    while True:
        attempts += 1
        error: BaseException | None = None
        value: T | None = None
        try:
            result = probe()
            value = await result if inspect.isawaitable(result) else result
            if value:
                return value
        except retry_on as exc:
            error = exc
        if time.monotonic() + interval > deadline:
            what = desc or getattr(probe, "__name__", "condition")
            raise EventuallyTimeout(
                f"{what} did not hold within {timeout:.1f}s ({attempts} attempts); {_describe(value, error)}"
            ) from error
        await asyncio.sleep(interval)
