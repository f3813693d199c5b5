"""Polls each endpoint's `GET /load` (the model-server's cheap load report) every `interval_s`.

It is the replicas' load signal between answers, and the health probe that brings a connect-ejected
endpoint back: any HTTP answer means the replica is reachable (a server without `/load` answers 404 and
is still alive); a refused or reset connection means it is not. A timeout says nothing: a replica busy
enough to answer slowly must not be ejected for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp

from shoal_router.endpoints import EndpointPool
from shoal_router.flow.capacity import parse_adapters, parse_load_json

log = logging.getLogger("shoal_router.flow.poller")

LOAD_PATH = "/load"


async def poll_once(session: aiohttp.ClientSession, pool: EndpointPool, url: str, timeout_s: float) -> None:
    try:
        await _poll(session, pool, url, timeout_s)
    finally:
        pool.polled(url)  # whatever the answer: the endpoint is no longer "never polled"


async def _poll(session: aiohttp.ClientSession, pool: EndpointPool, url: str, timeout_s: float) -> None:
    try:
        async with session.get(url + LOAD_PATH, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            doc = await resp.json(content_type=None) if resp.status == 200 else None
    except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        pool.probe_result(url, False)  # refused or reset: not there
        return
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return  # slow or odd: a busy replica is not a dead one; no verdict
    pool.probe_result(url, True)
    pool.report_adapters(url, parse_adapters(doc))
    report = parse_load_json(doc)
    if report is not None:
        pool.report_load(url, report)


async def poll_loads(
    session: aiohttp.ClientSession, pool: EndpointPool, interval_s: float, timeout_s: float | None = None
) -> None:
    """Forever: poll every ready endpoint (ejected ones too) concurrently, then sleep the rest of the
    interval, or less when discovery adds one. Ends only by cancellation."""
    timeout = timeout_s if timeout_s is not None else max(0.05, min(1.0, interval_s * 5))
    loop = asyncio.get_running_loop()
    new = pool.new_endpoint_event()
    pool.await_first_poll = True
    while True:
        started = loop.time()
        new.clear()
        urls = [s.url for s in pool.states() if s.ready and not s.terminating and not s.removed]
        if urls:
            with contextlib.suppress(Exception):
                await asyncio.gather(*(poll_once(session, pool, u, timeout) for u in urls))
        # sleep out the interval, but wake at once when discovery adds an endpoint
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(new.wait(), max(0.0, interval_s - (loop.time() - started)))
