"""The backlog outlook: growth over the last seconds, times the pods' measured startup time."""

from __future__ import annotations

import pytest
from shoal_operator.autoscaler import outlook
from shoal_operator.autoscaler.report import count_pods

pytestmark = pytest.mark.unit


def test_history_keeps_the_growth_window_only() -> None:
    h: outlook.History = ()
    for t in range(0, 30, 3):
        h = outlook.remember(h, float(t), float(t))
    assert [t for t, _ in h] == [18.0, 21.0, 24.0, 27.0]  # within 10 s of the newest


def test_growth_needs_a_span_of_two_seconds() -> None:
    assert outlook.growth(()) is None
    assert outlook.growth(((0.0, 5.0),)) is None
    assert outlook.growth(((0.0, 5.0), (1.0, 50.0))) is None  # one cycle's jump is scrape noise
    assert outlook.growth(((0.0, 10.0), (3.0, 16.0), (6.0, 40.0))) == pytest.approx(5.0)
    assert outlook.growth(((0.0, 40.0), (6.0, 10.0))) == pytest.approx(-5.0)


def test_demand_ahead_is_the_growth_over_the_pods_startup() -> None:
    growing = outlook.outlook(((0.0, 10.0), (4.0, 30.0)), 30.0, startup_s=33.0)
    assert growing.ahead == pytest.approx(30.0 + 5.0 * 33.0)
    assert "grows 5/s" in growing.describe() and "195 then" in growing.describe()
    # shrinking, unknown growth or unknown startup: the demand now
    assert outlook.outlook(((0.0, 30.0), (4.0, 10.0)), 10.0, 33.0).ahead == 10.0
    assert outlook.outlook(((4.0, 30.0),), 30.0, 33.0).ahead == 30.0
    assert outlook.outlook(((0.0, 10.0), (4.0, 30.0)), 30.0, None).ahead == 30.0


def _pod(name: str, created: str, ready: str | None, status: str = "True") -> dict[str, object]:
    conds = [] if ready is None else [{"type": "Ready", "status": status, "lastTransitionTime": ready}]
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": {"shoal.dev/inferenceservice": "svc"},
            "creationTimestamp": created,
        },
        "status": {"phase": "Running", "conditions": conds},
    }


def test_startup_is_the_median_of_the_ready_pods_creation_to_ready() -> None:
    pods = [
        _pod("a", "2026-11-28T10:00:00Z", "2026-11-28T10:00:30Z"),
        _pod("b", "2026-11-28T10:01:00Z", "2026-11-28T10:01:40Z"),
        _pod("c", "2026-11-28T10:02:00Z", "2026-11-28T10:05:00Z"),
        _pod("loading", "2026-11-28T10:03:00Z", "2026-11-28T10:03:01Z", status="False"),
        _pod("no-condition", "2026-11-28T10:03:00Z", None),
    ]
    counts = count_pods(pods)[("ns", "svc")]
    assert (counts.ready, counts.starting) == (3, 2)
    assert counts.startup_seconds == 40.0  # median of 30, 40 and 180; starting pods do not count


def test_startup_is_unknown_without_a_readable_timestamp() -> None:
    pods = [_pod("a", "not a time", "2026-11-28T10:00:30Z"), _pod("b", "2026-11-28T10:00:00Z", None)]
    assert count_pods(pods)[("ns", "svc")].startup_seconds is None


def test_a_ready_transition_hours_after_creation_is_a_flap_not_a_startup() -> None:
    pods = [
        _pod("flapped", "2026-11-28T08:00:00Z", "2026-11-28T10:00:00Z"),
        _pod("fresh", "2026-11-28T10:00:00Z", "2026-11-28T10:00:35Z"),
    ]
    assert count_pods(pods)[("ns", "svc")].startup_seconds == 35.0
