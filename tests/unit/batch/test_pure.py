"""Pure parts of the batch client: input parsing, retry delays, grading, statistics, schedules."""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
from email.utils import formatdate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shoal_batch.balancer import Balance, Balancer, normalise_base_url
from shoal_batch.grading import GradeMode, grade, last_code_block, last_number, normalise
from shoal_batch.inputs import Item, Malformed, MalformedInputError, parse_lines
from shoal_batch.report import Distribution, percentile, summarise
from shoal_batch.retry import RetryBudget, backoff_delay, parse_retry_after
from shoal_batch.schedule import Arrivals, RateCurve, TraceError, arrival_times, parse_trace_text, shape_curve

pytestmark = pytest.mark.unit


# ---- input --------------------------------------------------------------------------------------------


def test_parse_lines_reports_malformed_with_line_numbers() -> None:
    lines = [
        json.dumps({"id": "a", "prompt": "hi", "max_tokens": 5, "params": {"temperature": 0}}),
        "",
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"prompt": "no id"}),
        json.dumps({"id": "b", "prompt": "x", "messages": [{"role": "user", "content": "y"}]}),
        json.dumps({"id": "c", "messages": [{"role": "user", "content": "y"}], "expected": "42"}),
        json.dumps({"id": "a", "prompt": "again"}),
        "# a comment",
        json.dumps({"id": 7, "prompt": 3}),
        json.dumps({"id": True, "prompt": "bool id"}),
    ]
    parsed = parse_lines(lines)
    assert [it.key for it in parsed.items] == ["a", "c"]
    assert parsed.items[0].params == {"max_tokens": 5, "temperature": 0}
    assert parsed.items[1].is_chat and parsed.items[1].expected == "42"
    assert [m.line for m in parsed.malformed] == [3, 4, 5, 6, 8, 10, 11]
    assert "duplicate id 'a' (first on line 1)" in parsed.malformed[4].reason


def test_fail_fast_raises_on_first_bad_line() -> None:
    with pytest.raises(MalformedInputError) as info:
        parse_lines(['{"id": 1, "prompt": "ok"}', "oops", "again"], fail_fast=True)
    assert info.value.bad == Malformed(2, info.value.bad.reason)


def test_int_and_string_ids_are_the_same_key() -> None:
    parsed = parse_lines(['{"id": 1, "prompt": "a"}', '{"id": "1", "prompt": "b"}'])
    assert [it.key for it in parsed.items] == ["1"]
    assert len(parsed.malformed) == 1 and "duplicate" in parsed.malformed[0].reason


@given(st.lists(st.text(max_size=40), max_size=30))
def test_parse_lines_never_crashes(lines: list[str]) -> None:
    parsed = parse_lines(lines)
    assert all(isinstance(it, Item) for it in parsed.items)
    assert len(parsed.items) + len(parsed.malformed) <= len(lines)


# ---- retry --------------------------------------------------------------------------------------------


def test_retry_after_seconds_and_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("-4", now) == 0.0
    assert parse_retry_after(formatdate(now + 10, usegmt=True), now) == pytest.approx(10.0)
    assert parse_retry_after(formatdate(now - 10, usegmt=True), now) == 0.0
    for bad in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(bad, now) is None


@given(
    attempt=st.integers(1, 100),
    base=st.floats(0.001, 10),
    cap=st.floats(0.001, 100),
    retry_after=st.none() | st.floats(0, 1000),
    seed=st.integers(0, 2**32),
)
def test_backoff_bounds(attempt: int, base: float, cap: float, retry_after: float | None, seed: int) -> None:
    delay = backoff_delay(attempt, base=base, cap=cap, retry_after=retry_after, rng=random.Random(seed))
    ceiling = min(cap, base * 2 ** (attempt - 1))
    if retry_after is None:
        assert 0 <= delay <= ceiling
    else:  # never earlier than the server asked
        assert retry_after <= delay <= retry_after + 0.1 * ceiling + 1e-9


def test_backoff_grows_exponentially_on_average() -> None:
    rng = random.Random(1)
    means = [
        statistics.mean(backoff_delay(a, base=1, cap=1000, rng=rng) for _ in range(2000))
        for a in (1, 2, 3, 4)
    ]
    for lo, hi in itertools.pairwise(means):
        assert 1.7 < hi / lo < 2.3


def test_retry_budget() -> None:
    budget = RetryBudget(ratio=0.5, minimum=2)
    for _ in range(4):
        budget.record_attempt()
    assert [budget.try_spend() for _ in range(5)] == [True, True, True, True, False]
    unlimited = RetryBudget(ratio=math.inf, minimum=0)
    assert all(unlimited.try_spend() for _ in range(1000))


# ---- grading ------------------------------------------------------------------------------------------


def test_normalise_and_exact() -> None:
    assert normalise("  The  ANSWER is\nParis. ") == "the answer is paris"
    assert grade(GradeMode.EXACT, "Paris.", "paris") == (True, "paris")
    assert grade(GradeMode.EXACT, "Lyon", ["Paris", "lyon"])[0]
    assert not grade(GradeMode.EXACT, "Paris, France", "paris")[0]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("The answer is 42.", 42.0),
        ("3 apples and 1,234.5 pears", 1234.5),
        ("x = -7", -7.0),
        ("1e3 then 2.5e-1", 0.25),
        ("no digits here", None),
        ("#### 18", 18.0),
    ],
)
def test_last_number(text: str, value: float | None) -> None:
    assert last_number(text) == value


def test_number_grading() -> None:
    assert grade(GradeMode.NUMBER, "so the total is 1,000", 1000)[0]
    assert grade(GradeMode.NUMBER, "so the total is 1000.0", "#### 1000")[0]
    assert not grade(GradeMode.NUMBER, "so 999", 1000)[0]
    assert not grade(GradeMode.NUMBER, "nothing", 1000)[0]


def test_last_code_block() -> None:
    text = "first\n```python\na = 1\n```\nthen\n```py\nprint(2)  \n```\nbye"
    assert last_code_block(text) == "print(2)  \n"
    assert last_code_block("```\nunclosed = True\n") == "unclosed = True\n"
    assert last_code_block("done\n```\nx\n```\nmore\n```python\ny = 2") == "y = 2"
    assert last_code_block("no code") is None
    assert grade(GradeMode.CODE, "here:\n```python\nprint(2)\n```", "print(2)\n")[0]
    assert grade(GradeMode.CODE, "```\nprint(2)   \n```", "```python\nprint(2)\n```")[0]


@given(st.text(max_size=200))
def test_graders_never_crash(text: str) -> None:
    for mode in GradeMode:
        grade(mode, text, "1")


# ---- statistics ---------------------------------------------------------------------------------------


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=2, max_size=200))
def test_percentile_matches_statistics_inclusive(values: list[float]) -> None:
    data = sorted(values)
    cuts = statistics.quantiles(data, n=100, method="inclusive")
    for q in (50, 95, 99):
        assert percentile(data, q) == pytest.approx(cuts[q - 1], rel=1e-9, abs=1e-6)
    assert percentile(data, 0) == data[0] and percentile(data, 100) == data[-1]


def test_summarise_counts_and_errors() -> None:
    records = [
        {
            "id": 1,
            "latency_s": 0.1,
            "ttft_s": 0.01,
            "attempts": 1,
            "usage": {"prompt_tokens": 3, "completion_tokens": 5},
            "error": None,
            "correct": True,
        },
        {
            "id": 2,
            "latency_s": 0.3,
            "attempts": 2,
            "usage": {"prompt_tokens": 1, "completion_tokens": 1},
            "error": None,
            "correct": False,
        },
        {"id": 3, "latency_s": None, "attempts": 5, "error": {"type": "http_503"}},
        {"id": 4, "latency_s": None, "attempts": 1, "error": {"type": "http_400"}},
        {"id": 5, "latency_s": None, "attempts": 3, "error": {"type": "http_503"}},
    ]
    report = summarise(records, total=6)
    assert (report.ok, report.failed, report.pending) == (2, 3, 1)
    assert report.errors == {"http_503": 2, "http_400": 1}
    assert (report.attempts, report.retries) == (12, 7)
    assert report.latency_s == Distribution.of([0.1, 0.3])
    assert report.ttft_s is not None and report.ttft_s.count == 1
    assert (report.prompt_tokens, report.completion_tokens) == (4, 6)
    assert report.accuracy == 0.5
    assert json.dumps(report.to_dict())


# ---- balancing ----------------------------------------------------------------------------------------


def test_round_robin_and_least_inflight() -> None:
    assert normalise_base_url("127.0.0.1:8000/v1/") == "http://127.0.0.1:8000"
    rr = Balancer(["http://a", "http://b", "http://c"], Balance.ROUND_ROBIN)
    assert [rr.pick().base_url for _ in range(4)] == ["http://a", "http://b", "http://c", "http://a"]
    least = Balancer(["http://a", "http://b"], Balance.LEAST_INFLIGHT)
    a, b = least.endpoints
    least.acquire(a)
    assert all(least.pick() is b for _ in range(3))
    least.acquire(b)
    least.acquire(b)
    assert least.pick() is a
    assert least.pick(avoid=a) is b  # a retry goes elsewhere when it can


# ---- schedules ----------------------------------------------------------------------------------------


def test_constant_uniform_schedule() -> None:
    times = arrival_times(shape_curve("constant:rps=10,duration=2"))
    assert len(times) == 20
    assert times[:3] == pytest.approx([0.0, 0.1, 0.2])


def test_step_ramp_sinusoid_counts() -> None:
    step = arrival_times(shape_curve("step:rps=10/0/20,hold=1"))
    assert len(step) == 30 and not any(1.0 < t < 2.0 for t in step)
    ramp = shape_curve("ramp:from=0,to=100,duration=10")
    assert len(arrival_times(ramp)) == 500
    early = [t for t in arrival_times(ramp) if t < 5]
    assert len(early) == pytest.approx(125, abs=1)  # integral of the ramp over the first half
    sine = shape_curve("sinusoid:mean=50,amplitude=50,period=10,duration=20")
    assert len(arrival_times(sine)) == pytest.approx(1000, abs=2)


def test_schedule_bounds_and_poisson() -> None:
    curve = shape_curve("constant:rps=100,duration=100")
    assert len(arrival_times(curve, max_requests=7)) == 7
    assert max(arrival_times(curve, max_duration=1.5)) < 1.5
    poisson = arrival_times(curve, arrivals=Arrivals.POISSON, seed=5)
    assert poisson == arrival_times(curve, arrivals=Arrivals.POISSON, seed=5)
    assert abs(len(poisson) - 10_000) < 4 * math.sqrt(10_000)


@settings(max_examples=60)
@given(
    st.lists(st.tuples(st.floats(0.01, 5), st.floats(0, 50)), min_size=1, max_size=8),
    st.sampled_from(list(Arrivals)),
)
def test_schedule_is_sorted_bounded_and_matches_integral(
    segments: list[tuple[float, float]], arrivals: Arrivals
) -> None:
    points = [(0.0, segments[0][1])]
    t = 0.0
    for width, rps in segments:
        t += width
        points.append((t, rps))
    curve = RateCurve(tuple(points))
    times = arrival_times(curve, arrivals=arrivals, seed=1)
    assert times == sorted(times)
    assert all(0 <= x < curve.duration for x in times)
    if arrivals is Arrivals.UNIFORM:
        assert abs(len(times) - curve.total()) <= 1.0 + 1e-6


def test_trace_files_and_errors() -> None:
    csv_curve = parse_trace_text("t,rps\n0,10\n1,10\n1,20\n2,20\n", fmt="csv")
    assert len(arrival_times(csv_curve)) == 30
    jsonl = parse_trace_text('{"t": 0, "rps": 4}\n{"t": 2, "rps": 4}\n', fmt="jsonl")
    assert len(arrival_times(jsonl)) == 8
    assert parse_trace_text("[[1, 5], [3, 5]]", fmt="json").points[0] == (0.0, 5.0)
    for bad in ("wobble:rps=1", "constant:rps=1", "step:hold=1", "ramp:from=x,to=1,duration=1"):
        with pytest.raises(TraceError):
            shape_curve(bad)
    with pytest.raises(TraceError):
        RateCurve(((0, 1), (2, 1), (1, 1)))
    with pytest.raises(TraceError):
        parse_trace_text("0,-1\n1,1\n", fmt="csv")
