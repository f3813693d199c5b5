"""Trace replay: reading CSV/JSONL request traces (ours, Azure's, BurstGPT's shapes), windows, speed-up,
bounds, prompt synthesis, and the errors a bad file gets."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from shoal_batch.config import ConfigError, LoadConfig
from shoal_batch.replay import (
    ReplayError,
    ReplayItems,
    ReplayPlan,
    Window,
    load_replay,
    parse_window,
    replay_item,
    select,
    synth_prompt,
)
from shoal_batch.schedule import shape_curve
from shoal_batch.trace_file import TimeUnit, TraceFileError, TraceRow, iter_trace, parse_time

pytestmark = pytest.mark.unit

_SIM_TOKEN = re.compile(r"\w+|[^\w\s]")  # the sim engine's tokenizer (model-server/.../engines/sim.py)


def rows(text: str, fmt: str = "csv", unit: TimeUnit = TimeUnit.S) -> list[TraceRow]:
    return list(iter_trace(text.splitlines(keepends=True), fmt=fmt, path="t", unit=unit))


def test_our_csv_columns() -> None:
    got = rows("timestamp,prompt_tokens,output_tokens\n10.5,100,20\n11,2000,1\n")
    assert got == [TraceRow(0.0, 100, 20, 2), TraceRow(0.5, 2000, 1, 3)]


def test_azure_llm_inference_trace_shape() -> None:
    text = (
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "2023-11-16 18:16:46.6805900,879,45\n"
    )
    got = rows(text)
    assert [r.prompt_tokens for r in got] == [374, 396, 879]
    assert [r.output_tokens for r in got] == [44, 109, 45]
    assert got[1].t == pytest.approx(4.314579, abs=1e-6)
    assert got[2].t == pytest.approx(60.0, abs=1e-6)


def test_burstgpt_shape_and_rfc3339_zones() -> None:
    burst = (
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n"
        "45,GPT-4,1087,0,1087,API log\n"
    )
    assert rows(burst) == [TraceRow(0.0, 472, 18, 2), TraceRow(40.0, 1087, 0, 3)]
    zoned = "time,input_tokens,max_tokens\n2024-05-10T00:00:00Z,1,1\n2024-05-10T02:00:01+02:00,1,1\n"
    assert [r.t for r in rows(zoned)] == [0.0, 1.0]


def test_jsonl_ours_and_mooncake_milliseconds() -> None:
    ours = "\n".join(json.dumps({"t": t, "prompt_tokens": 5, "output_tokens": 7, "x": [1]}) for t in (0, 2.5))
    assert rows(ours, "jsonl") == [TraceRow(0.0, 5, 7, 1), TraceRow(2.5, 5, 7, 2)]
    mooncake = '{"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46]}\n' * 2
    mooncake += '{"timestamp": 30535, "input_length": 6472, "output_length": 26, "hash_ids": [46]}\n'
    assert [r.t for r in rows(mooncake, "jsonl", TimeUnit.MS)] == pytest.approx([0.0, 0.0, 3.053])


@pytest.mark.parametrize(
    ("text", "fmt", "message"),
    [
        ("timestamp,prompt_tokens\n1,2\n", "csv", r"t line 1 \(header\): no output column"),
        (
            "t,prompt_tokens,output_tokens\n1,2,3\n2,x,3\n",
            "csv",
            r"t line 3, column 'prompt_tokens': not a whole",
        ),
        (
            "t,prompt_tokens,output_tokens\n1,2,3\n2,2,3.5\n",
            "csv",
            r"line 3, column 'output_tokens': not a whole",
        ),
        ("t,prompt_tokens,output_tokens\n1,2,-3\n", "csv", r"line 2, column 'output_tokens': out of range"),
        ("t,prompt_tokens,output_tokens\n5,2,3\n4,2,3\n", "csv", r"line 3, column 't': earlier than"),
        ("t,prompt_tokens,output_tokens\nyesterday,2,3\n", "csv", r"line 2, column 't': not seconds nor"),
        ("t,prompt_tokens,output_tokens\n1,2,3\n2,,3\n", "csv", r"line 3, column 'prompt_tokens': empty"),
        ("t,prompt_tokens,output_tokens\n1,2,3,4\n", "csv", r"line 2: 4 fields, the header has 3"),
        ("t,prompt_tokens,output_tokens\nnan,2,3\n", "csv", r"line 2, column 't': not a finite"),
        ("t,prompt_tokens,output_tokens\n1,2,3\n2024-01-01T00:00:00,2,3\n", "csv", r"line 3.*mixes"),
        ('{"t": 1, "prompt_tokens": 2, "output_tokens": 3}\n{"t": 2,\n', "jsonl", r"line 2: invalid JSON"),
        ("[1, 2, 3]\n", "jsonl", r"line 1: expected a JSON object, got list"),
        ('{"t": 1, "prompt_tokens": true, "output_tokens": 3}\n', "jsonl", r"line 1, column 'prompt_tokens'"),
        ("", "csv", r"t: empty"),
    ],
)
def test_bad_files_name_the_line_and_column(text: str, fmt: str, message: str) -> None:
    with pytest.raises(TraceFileError, match=message):
        rows(text, fmt)


def test_parse_time_kinds() -> None:
    assert parse_time("12.5", TimeUnit.S) == (12.5, False)
    assert parse_time(1500, TimeUnit.MS) == (1.5, False)
    seconds, absolute = parse_time("1970-01-01T00:01:00Z", TimeUnit.S)
    assert (seconds, absolute) == (60.0, True)


def _trace(n: int, gap: float = 1.0) -> list[TraceRow]:
    return [TraceRow(i * gap, 10 + i, 5, i + 2) for i in range(n)]


def test_window_speedup_and_bounds() -> None:
    trace = _trace(100)  # one request a second for 100 s
    got = select(trace, window=Window(10, 20), speedup=2.0)
    assert [r.t for r in got] == [i / 2 for i in range(10)]
    assert [r.line for r in got] == list(range(12, 22))
    assert len(select(trace, max_requests=7)) == 7
    # max_duration bounds the sped-up schedule, not the trace time
    assert [r.t for r in select(trace, speedup=4.0, max_duration=2.0)] == [
        0.0,
        0.25,
        0.5,
        0.75,
        1.0,
        1.25,
        1.5,
        1.75,
    ]


def test_select_stops_reading_at_the_window_end() -> None:
    read: list[int] = []

    def lazily() -> object:
        for row in _trace(10_000):
            read.append(row.line)
            yield row

    select(lazily(), window=Window(5, 8))  # type: ignore[arg-type]
    assert len(read) == 9  # rows 0..8: the one at t=8 ends it


def test_select_rejects_bad_settings() -> None:
    with pytest.raises(ReplayError, match="speed-up"):
        select(_trace(3), speedup=0.0)
    with pytest.raises(ReplayError, match="speed-up"):
        select(_trace(3), speedup=math.inf)
    with pytest.raises(ReplayError, match="positive"):
        select(_trace(3), max_requests=0)


@pytest.mark.parametrize(
    ("text", "window"),
    [(":", Window()), ("60:", Window(60.0)), (":600", Window(0.0, 600.0)), ("1.5:2", Window(1.5, 2.0))],
)
def test_parse_window(text: str, window: Window) -> None:
    assert parse_window(text) == window


@pytest.mark.parametrize("text", ["10", "a:b", "20:10", "-1:5", "5:5", "nan:", ":nan"])
def test_parse_window_rejects(text: str) -> None:
    with pytest.raises(ReplayError, match="window"):
        parse_window(text)


def test_synth_prompt_has_the_token_count_and_differs_by_seed() -> None:
    for tokens in (1, 17, 4096):
        assert len(_SIM_TOKEN.findall(synth_prompt(tokens, seed=3))) == tokens
    assert synth_prompt(0, seed=1).strip() != ""  # never an empty prompt
    assert synth_prompt(50, seed=1) == synth_prompt(50, seed=1)
    assert synth_prompt(50, seed=1)[:40] != synth_prompt(50, seed=2)[:40]


def test_replay_items_are_made_when_asked_with_exact_output_length() -> None:
    plan = ReplayPlan(tuple(select([TraceRow(0.0, 30, 0, 2), TraceRow(1.0, 8, 64, 3)])), "t")
    items = ReplayItems(plan, seed=0)
    assert len(items) == 2
    first, second = items[0], items[1]
    assert (first.id, first.params) == (
        2,
        {"max_tokens": 1, "ignore_eos": True},
    )  # 0 -> 1: the API needs >= 1
    assert (second.id, second.params) == (3, {"max_tokens": 64, "ignore_eos": True})
    assert len(_SIM_TOKEN.findall(second.prompt or "")) == 8
    assert replay_item(plan.requests[1]) == second


def test_load_replay_from_files(tmp_path: Path) -> None:
    csv_path = tmp_path / "a.csv"
    csv_path.write_text("# a comment\ntimestamp,prompt_tokens,output_tokens\n0,1,2\n3,4,5\n")
    plan = load_replay(csv_path, speedup=3.0)
    assert [(r.t, r.prompt_tokens, r.output_tokens, r.line) for r in plan.requests] == [
        (0.0, 1, 2, 3),
        (1.0, 4, 5, 4),
    ]
    with pytest.raises(TraceFileError, match=r"a.csv: no request in the window 10:20"):
        load_replay(csv_path, window=Window(10, 20))
    with pytest.raises(TraceFileError, match=r"cannot tell the format"):
        load_replay(tmp_path / "a.parquet")


def test_load_config_takes_a_curve_or_a_replay_not_both() -> None:
    plan = ReplayPlan(tuple(select(_trace(2))), "t")
    LoadConfig(endpoints=["http://127.0.0.1:1"], replay=plan).validate()
    with pytest.raises(ConfigError, match="exactly one"):
        LoadConfig(
            endpoints=["http://127.0.0.1:1"], replay=plan, curve=shape_curve("constant:rps=1,duration=1")
        ).validate()
    with pytest.raises(ConfigError, match="exactly one"):
        LoadConfig(endpoints=["http://127.0.0.1:1"]).validate()
    with pytest.raises(ConfigError, match="--input is not used"):
        LoadConfig(endpoints=["http://127.0.0.1:1"], replay=plan, input="x.jsonl").validate()


def test_committed_traces_are_the_scripts_and_parse() -> None:
    """bench/traces/*.csv are what bench/traces/generate.py makes, and the replay reads each whole."""
    import importlib.util
    import sys

    folder = Path(__file__).resolve().parents[3] / "bench" / "traces"
    spec = importlib.util.spec_from_file_location("shoal_bench_traces_generate", folder / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = generate  # its dataclasses look their module up there
    spec.loader.exec_module(generate)
    assert generate.main(["--check"]) == 0
    for name in ("diurnal", "step5x", "onoff"):
        path = folder / f"{name}.csv"
        assert path.stat().st_size < 200_000
        plan = load_replay(path)
        assert len(plan.requests) > 1000
        assert all(r.prompt_tokens + r.output_tokens <= 8192 for r in plan.requests)
