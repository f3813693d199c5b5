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
    ]
    src = wake.HeldSource
    assert wake.front_end_targets(pods, frozenset({("ns", "chat"), ("ns", "gw")})) == {
        ("ns", "chat"): [src("http://198.18.0.5:8080/readyz"), src("http://[fd00::7]:8080/readyz")],
        ("ns", "gw"): [src("http://198.18.0.9:9090/healthz")],
    }
    assert wake.front_end_targets(pods, frozenset()) == {}


def _entry_point(name: str, ns: str = "ns", ip: str | None = "198.18.0.8", **meta: Any) -> dict[str, Any]:
    labels = {"shoal.dev/inferencegateway": "models", "app.kubernetes.io/component": "entry-point"}
    status: dict[str, Any] = {"podIP": ip} if ip else {}
    return {"metadata": {"name": name, "namespace": ns, "labels": labels, **meta}, "status": status}


def test_an_entry_point_is_asked_for_every_service_at_zero_in_its_namespace() -> None:
    pods = [
        _entry_point("models-entry-a"),
        _entry_point("models-entry-gone", ip="198.18.0.10", deletionTimestamp="2026-11-29T03:00:00Z"),
        _entry_point("models-entry-new", ip=None),
        _entry_point("other-entry-a", ns="other", ip="198.18.0.11"),  # another namespace's
        _pod("chat-router-a", "router"),
    ]
    at_zero = frozenset({("ns", "chat"), ("ns", "embed")})
    url = "http://198.18.0.8:8080/readyz"
    assert wake.front_end_targets(pods, at_zero) == {
        ("ns", "chat"): [wake.HeldSource(url, pool="chat"), wake.HeldSource("http://198.18.0.5:8080/readyz")],
        ("ns", "embed"): [wake.HeldSource(url, pool="embed")],
    }


@pytest.mark.parametrize(
    ("answer", "pool", "count"),
    [
        ({"pending": 2}, None, 2.0),
        ({"pending": 2, "held": {"chat": 3}}, "chat", 3.0),  # an entry point: its pool's own count
        ({"pending": 2, "held": {"embed": 3}}, "chat", 0.0),  # holds nothing for this one
        ({"held": ["chat"]}, "chat", 0.0),
        ({"pending": "2"}, None, 0.0),
        ({"pending": -1}, None, 0.0),
        ("not json", None, 0.0),
        (None, "chat", 0.0),
    ],
)
def test_held_in_reads_the_count_or_nothing(answer: object, pool: str | None, count: float) -> None:
    assert wake.held_in(answer, pool) == count


async def test_held_sums_each_services_front_ends_and_an_unreachable_one_holds_nothing(
    unused_tcp_port_factory: Any,
) -> None:
    answers = {
        "/a": {"pending": 2, "synced": True},
        "/b": {"pending": 1},
        "/idle": {"pending": 0},
        "/entry": {"pool": ["chat", "embed"], "held": {"embed": 4}},  # a shared entry point
    }
    asked: list[str] = []

    async def readyz(request: web.Request) -> web.Response:
        asked.append(request.path)
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
    src = wake.HeldSource
    targets = {
        ("ns", "chat"): [src(f"{base}/a"), src(f"{base}/b"), src(f"http://127.0.0.1:{closed}/readyz")],
        ("ns", "idle"): [src(f"{base}/idle"), src(f"{base}/garbage")],
        ("ns", "embed"): [src(f"{base}/entry", pool="embed")],
        ("ns", "chat-too"): [src(f"{base}/entry", pool="chat")],
    }
    try:
        async with wake.probe_session() as session:
            held = await wake.FrontEndProbe(session).held(targets)
        assert held == {("ns", "chat"): 3.0, ("ns", "embed"): 4.0}
        assert asked.count("/entry") == 1  # one answer read for every service it serves
    finally:
        await runner.cleanup()
