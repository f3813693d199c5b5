"""bench/router_overhead.py reads wrk's summary: the request count over the run's real length, and any
failed answer fails the measurement instead of counting as throughput. The texts are wrk 4.1's own."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"
sys.path.insert(0, str(BENCH))

import router_overhead  # noqa: E402

HEAD = """Running 1s test @ http://127.0.0.1:18081/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.36ms    1.29ms  16.23ms   92.91%
    Req/Sec     1.73k   316.28     1.97k    90.91%
"""


def test_rate_is_requests_over_the_measured_seconds() -> None:
    out = HEAD + "  1894 requests in 1.10s, 0.94MB read\nRequests/sec:   1721.81\nTransfer/sec:      0.85MB\n"
    rps, n = router_overhead.parse_wrk(out)
    assert n == 1894
    assert rps == pytest.approx(1894 / 1.10)


def test_minutes_are_read_as_minutes() -> None:
    rps, n = router_overhead.parse_wrk(HEAD + "  120000 requests in 1.00m, 9.1MB read\n")
    assert (n, rps) == (120000, pytest.approx(2000.0))


@pytest.mark.parametrize(
    "failure",
    ["  Non-2xx or 3xx responses: 1894\n", "  Socket errors: connect 0, read 3, write 0, timeout 0\n"],
)
def test_failed_answers_fail_the_run(failure: str) -> None:
    out = HEAD + "  1894 requests in 1.10s, 0.94MB read\n" + failure + "Requests/sec:   1721.81\n"
    with pytest.raises(RuntimeError, match="failures"):
        router_overhead.parse_wrk(out)


def test_output_without_a_summary_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="unexpected"):
        router_overhead.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_milliseconds_are_read_as_milliseconds() -> None:
    rps, n = router_overhead.parse_wrk(HEAD + "  900 requests in 900.00ms, 1.0MB read\n")
    assert (n, rps) == (900, pytest.approx(1000.0))
