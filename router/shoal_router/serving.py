"""Process plumbing shared by the router's front ends: serve an aiohttp app until SIGTERM, run on uvloop.

The per-InferenceService router and the multi-model entry point differ in their app, not in how a
process listens, drains and stops; this is that one way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from shoal_router.config import RouterConfig

log = logging.getLogger("shoal_router")


async def serve_app(
    app: web.Application,
    config: RouterConfig,
    what: str,
    details: dict[str, Any],
    stop: asyncio.Event | None = None,
) -> None:
    """Listens on the configured address until `stop` (or SIGTERM/SIGINT); then drains in-flight requests."""
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log=None, shutdown_timeout=config.shutdown_timeout_s
    )
    await runner.setup()
    site = web.TCPSite(runner, config.listen_host, config.port, backlog=1024, reuse_address=True)
    await site.start()
    log.info(f"{what} listening", extra={"host": config.listen_host, "port": config.port, **details})
    try:
        await wait_for_stop(stop)
        log.info(
            f"{what} stopping; finishing in-flight requests", extra={"timeout_s": config.shutdown_timeout_s}
        )
    finally:
        await runner.cleanup()


async def wait_for_stop(stop: asyncio.Event | None) -> None:
    """Returns once `stop` is set or the process gets SIGTERM or SIGINT."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def run(main: Coroutine[Any, Any, None], log_level: str) -> int:
    """Configures logging and runs `main` to completion, on uvloop when it is installed."""
    from shoal_common.logging import configure_logging

    configure_logging(log_level)
    try:
        import uvloop  # optional: faster loop when installed
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
    return 0
