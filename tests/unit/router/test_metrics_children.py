"""RouterMetrics caches label children on the per-request paths; a removed endpoint's series must go and
come back fresh, never a stale cached child that no longer belongs to the registry."""

from __future__ import annotations

from shoal_router.metrics import RouterMetrics


def _inflight(m: RouterMetrics) -> dict[str, float]:
    text = m.render().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("shoal_router_endpoint_inflight{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('"')[1]] = float(value)
    return out


def test_inflight_series_follow_set_and_remove() -> None:
    m = RouterMetrics()
    m.set_inflight("http://a:1", 1)
    m.set_inflight("http://a:1", 3)
    m.set_inflight("http://b:1", 2)
    assert _inflight(m) == {"http://a:1": 3.0, "http://b:1": 2.0}
    m.remove_endpoint("http://a:1")
    assert _inflight(m) == {"http://b:1": 2.0}
    m.remove_endpoint("http://a:1")  # twice: no error
    m.set_inflight("http://a:1", 5)  # back (a replica reused the address): a live series again
    assert _inflight(m) == {"http://a:1": 5.0, "http://b:1": 2.0}
