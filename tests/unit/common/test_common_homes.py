"""The one home each for the cache path, RFC 3339 timestamps and free ports (shoal_common)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from shoal_common.paths import cache_dir
from shoal_common.timestamps import parse_rfc3339, rfc3339

WHEN = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def test_rfc3339_precisions() -> None:
    assert rfc3339(WHEN) == "2026-01-02T03:04:05Z"
    assert rfc3339(WHEN, digits=3) == "2026-01-02T03:04:05.678Z"
    assert rfc3339(WHEN, digits=6) == "2026-01-02T03:04:05.678901Z"


def test_rfc3339_converts_other_zones_and_unix_times_to_utc() -> None:
    plus2 = WHEN.astimezone(timezone(timedelta(hours=2)))
    assert rfc3339(plus2) == "2026-01-02T03:04:05Z"
    assert rfc3339(WHEN.timestamp()) == "2026-01-02T03:04:05Z"


def test_rfc3339_now_is_current() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    assert before <= parse_rfc3339(rfc3339()) <= datetime.now(UTC)


def test_parse_round_trips_and_rejects_garbage() -> None:
    assert parse_rfc3339(rfc3339(WHEN, digits=6)) == WHEN
    assert parse_rfc3339("2026-01-02T05:04:05+02:00") == WHEN.replace(microsecond=0)
    with pytest.raises(ValueError):
        parse_rfc3339("yesterday")


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHOAL_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.setenv("SHOAL_CACHE", "~/elsewhere")
    assert cache_dir() == Path.home() / "elsewhere"
    for unset in ("", None):
        if unset is None:
            monkeypatch.delenv("SHOAL_CACHE")
        else:
            monkeypatch.setenv("SHOAL_CACHE", unset)
        assert cache_dir() == Path.home() / ".cache" / "shoal"


def test_series_builder_registers_each_kind_with_its_labels() -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from shoal_common.series import SeriesBuilder

    registry = CollectorRegistry()
    s = SeriesBuilder(registry)
    s.counter("demo_requests", "Requests by code.", "code").labels("200").inc(2)
    s.gauge("demo_pending", "Pending requests.").set(3)
    s.histogram("demo_seconds", "Latency.", (0.1, 1.0), "route").labels("/v1").observe(0.5)
    text = generate_latest(registry).decode()
    assert "# TYPE demo_requests_total counter" in text
    assert 'demo_requests_total{code="200"} 2.0' in text
    assert "demo_pending 3.0" in text
    assert 'demo_seconds_bucket{le="1.0",route="/v1"} 1.0' in text
    assert 'demo_seconds_bucket{le="0.1",route="/v1"} 0.0' in text
