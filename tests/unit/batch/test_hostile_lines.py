"""Hostile input lines are reported as malformed lines; they never abort the run."""

import json

import pytest
from shoal_batch.inputs import parse_lines

pytestmark = pytest.mark.unit

DEEP = 100_000
HOSTILE = [
    "[" * DEEP + "]" * DEEP,
    '{"id": ' + "[" * DEEP + "]" * DEEP + "}",
    '{"id": ' + "9" * 5000 + ', "prompt": "x"}',
    '{"id": "big", "prompt": "x", "params": {"seed": ' + "1" * 4400 + "}}",
]


def test_deep_nesting_and_huge_integers_are_malformed_lines() -> None:
    good = [json.dumps({"id": i, "prompt": f"p{i}"}) for i in range(2)]
    parsed = parse_lines([good[0], *HOSTILE, good[1]])
    assert [it.id for it in parsed.items] == [0, 1]
    assert [m.line for m in parsed.malformed] == [2, 3, 4, 5]
    assert "nested too deeply" in parsed.malformed[0].reason
    assert "4300" in parsed.malformed[2].reason


def test_api_key_from_the_environment_wins_and_argv_warns() -> None:
    from shoal_batch.cli import resolve_api_key

    warnings: list[str] = []
    assert resolve_api_key(None, {"SHOAL_API_KEY": "env"}, warnings.append) == "env"
    assert resolve_api_key(None, {"OPENAI_API_KEY": "oa"}, warnings.append) == "oa"
    assert resolve_api_key(None, {"SHOAL_API_KEY": "s", "OPENAI_API_KEY": "o"}, warnings.append) == "s"
    assert warnings == []
    assert resolve_api_key("flag", {}, warnings.append) == "flag"
    assert "visible" in warnings[-1] and "SHOAL_API_KEY" in warnings[-1]
    assert resolve_api_key("flag", {"OPENAI_API_KEY": "oa"}, warnings.append) == "oa"
    assert "ignored" in warnings[-1]
    assert resolve_api_key(None, {}, warnings.append) is None
