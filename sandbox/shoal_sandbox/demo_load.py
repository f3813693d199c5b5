"""The demo's load: the batch client's open loop in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any


class BackgroundLoad(threading.Thread):
    """The batch client's open loop in a thread with its own event loop, stoppable from outside."""

    def __init__(self, url: str, curve: Any) -> None:
        super().__init__(name="load", daemon=True)
        from shoal_batch.config import LoadConfig

        self.cfg = LoadConfig(
            endpoints=[url],
            curve=curve,
            # A well-behaved client: a 429 (load shed while replicas start) is retried after its Retry-After.
            max_attempts=6,
            timeout_s=300.0,
            params={"max_tokens": 24},
            drain_timeout_s=120.0,
            max_duration_s=curve.duration,
        )
        self.report: Any = None
        self.error: BaseException | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    def run(self) -> None:
        from shoal_batch.runner import run_open_loop_async

        async def go() -> None:
            self._event_loop, self._stop_event = asyncio.get_running_loop(), asyncio.Event()
            self.report = await run_open_loop_async(self.cfg, stop=self._stop_event)

        try:
            asyncio.run(go())
        except Exception as exc:
            self.error = exc

    def stop(self, wait_s: float) -> None:
        """Ends the load early (requests in flight finish) and waits for the thread."""
        loop, event = self._event_loop, self._stop_event
        if self.is_alive() and loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile: the load has ended
                loop.call_soon_threadsafe(event.set)
        self.join(wait_s)
