"""What one router process owns, and the type of its background sources. Its own module so discovery can
name `Router` without importing the server (which imports discovery): no cycle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from shoal_router.auth import ApiKeys
from shoal_router.config import RouterConfig
from shoal_router.endpoints import EndpointPool
from shoal_router.flow.dispatcher import Dispatcher
from shoal_router.metrics import RouterMetrics
from shoal_router.proxy import Proxy


@dataclass
class Router:
    """Everything one router owns. Built by `server.build_router`; `server.build_app` serves it."""

    config: RouterConfig
    pool: EndpointPool
    metrics: RouterMetrics
    keys: ApiKeys
    dispatcher: Dispatcher
    proxy: Proxy | None = None
    session: aiohttp.ClientSession | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)
    keys_loaded: bool = True


# A discovery/keys source: a coroutine run for the router's lifetime, given the router.
Source = Callable[[Router], Coroutine[Any, Any, None]]
