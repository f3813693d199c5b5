"""Live progress (rich): done / failed / in flight, rate and ETA, redrawn a few times a second."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Counters:
    total: int = 0  # requests this run will send (closed loop) or schedules (open loop)
    done: int = 0
    failed: int = 0
    inflight: int = 0
    retries: int = 0
    started_at: float = 0.0


class Progress:
    """Reads ``Counters`` on a timer; costs nothing per request."""

    def __init__(self, counters: Counters, *, enabled: bool, label: str = "batch") -> None:
        self.counters = counters
        self.enabled = enabled
        self.label = label
        self._task: asyncio.Task[None] | None = None
        self._progress: Any = None
        self._task_id: Any = None

    def _describe(self) -> str:
        c = self.counters
        elapsed = max(1e-9, time.perf_counter() - c.started_at)
        finished = c.done + c.failed
        rate = finished / elapsed
        remaining = c.total - finished
        eta = remaining / rate if rate > 0 else float("inf")
        eta_text = f"{eta:,.0f}s" if eta != float("inf") else "?"
        return (
            f"done {c.done} failed {c.failed} in flight {c.inflight} retries {c.retries}"
            f" | {rate:,.1f} req/s | ETA {eta_text}"
        )

    async def _loop(self) -> None:
        while True:
            c = self.counters
            self._progress.update(self._task_id, completed=c.done + c.failed, description=self._describe())
            await asyncio.sleep(0.25)

    def start(self) -> None:
        if not self.enabled:
            return
        from rich.progress import BarColumn, TextColumn
        from rich.progress import Progress as RichProgress

        self._progress = RichProgress(
            TextColumn(self.label),
            BarColumn(bar_width=24),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.description}"),
            transient=False,
        )
        self._task_id = self._progress.add_task(self._describe(), total=max(1, self.counters.total))
        self._progress.start()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._progress is not None:
            c = self.counters
            self._progress.update(self._task_id, completed=c.done + c.failed, description=self._describe())
            self._progress.stop()
            self._progress = None
