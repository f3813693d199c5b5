"""Waking from zero: which routers and endpoint pickers are asked (pure), and asking them over real HTTP on
127.0.0.1."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from shoal_operator.autoscaler import wake

pytestmark = pytest.mark.unit


def _pod(
    name: str, component: str, isvc: str = "chat", ip: str | None = "198.18.0.5", **meta: Any
) -> dict[str, Any]:
    labels = {"shoal.dev/inferenceservice": isvc, "app.kubernetes.io/component": component}
    status: dict[str, Any] = {"podIP": ip} if ip else {}
    return {"metadata": {"name": name, "namespace": "ns", "labels": labels, **meta}, "status": status}


def test_only_live_front_end_pods_of_services_at_zero_are_asked() -> None:
    pods = [
        _pod("chat-router-a", "router"),
        _pod("chat-router-b", "router", ip="fd00::7"),
        _pod("chat-router-gone", "router", deletionTimestamp="2026-11-28T10:00:00Z"),
        _pod("chat-router-new", "router", ip=None),  # no IP yet
        _pod("chat-model-a", "model-server"),
        _pod("other-router-a", "router", isvc="other"),  # not at zero
        _pod("gw-epp-a", "endpoint-picker", isvc="gw", ip="198.18.0.9"),  # Gateway mode
        _pod("gw-model-a", "model-server", isvc="gw"),
        _pod("chat-entry", "entry-point"),  # a shared entry point holds nothing of its own
    ]
    assert wake.front_end_targets(pods, frozenset({("ns", "chat"), ("ns", "gw")})) == {
        ("ns", "chat"): ["http://198.18.0.5:8080/readyz", "http://[fd00::7]:8080/readyz"],
        ("ns", "gw"): ["http://198.18.0.9:9090/healthz"],
    }
    assert wake.front_end_targets(pods, frozenset()) == {}


async def test_held_sums_each_services_routers_and_an_unreachable_one_holds_nothing(
    unused_tcp_port_factory: Any,
) -> None:
    answers = {"/a": {"pending": 2, "synced": True}, "/b": {"pending": 1}, "/idle": {"pending": 0}}

    async def readyz(request: web.Request) -> web.Response:
        if request.path == "/garbage":
            return web.Response(text="not json")
        return web.json_response(answers[request.path], status=503 if request.path == "/b" else 200)

    app = web.Application()
    app.router.add_get("/{tail:.*}", readyz)
    runner = web.AppRunner(app)
    await runner.setup()
    port = unused_tcp_port_factory()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    closed = unused_tcp_port_factory()  # nothing listens there
    base = f"http://127.0.0.1:{port}"
    targets = {
        ("ns", "chat"): [f"{base}/a", f"{base}/b", f"http://127.0.0.1:{closed}/readyz"],
        ("ns", "idle"): [f"{base}/idle", f"{base}/garbage"],
    }
    try:
        async with wake.probe_session() as session:
            assert await wake.FrontEndProbe(session).held(targets) == {("ns", "chat"): 3.0}
    finally:
        await runner.cleanup()
