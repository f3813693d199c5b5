"""Entry points of a run: the closed loop (`closed_loop`) and the open loop (`open_loop`), sync or async."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from shoal_batch.closed_loop import run_batch_async
from shoal_batch.config import BatchConfig, LoadConfig
from shoal_batch.open_loop import run_open_loop_async
from shoal_batch.report import Report

__all__ = ["run_batch", "run_batch_async", "run_coroutine", "run_open_loop", "run_open_loop_async"]

T = TypeVar("T")


def run_coroutine(coro: Coroutine[Any, Any, T], *, use_uvloop: bool = True) -> T:
    """``asyncio.run`` on uvloop when it is installed, else on the default loop."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(coro)
    return asyncio.run(coro)


def run_batch(config: BatchConfig, *, use_uvloop: bool = True) -> Report:
    """Synchronous wrapper of ``run_batch_async`` (for scripts and tests outside an event loop)."""
    return run_coroutine(run_batch_async(config), use_uvloop=use_uvloop)


def run_open_loop(config: LoadConfig, *, use_uvloop: bool = True) -> Report:
    return run_coroutine(run_open_loop_async(config), use_uvloop=use_uvloop)
