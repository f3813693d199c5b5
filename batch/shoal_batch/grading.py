"""Answer extraction and grading against ``expected``. Pure."""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum
from typing import Any


class GradeMode(StrEnum):
    EXACT = "exact"  # exact match after normalisation
    NUMBER = "number"  # the last number in the response
    CODE = "code"  # the last fenced code block


_WS = re.compile(r"\s+")
_PUNCT_EDGES = " \t\n.,;:!?\"'`()[]{}"
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?")
_FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)
_UNCLOSED_FENCE = re.compile(r"```[^\n`]*\n(.*)\Z", re.DOTALL)


def normalise(text: str) -> str:
    """Case-fold, NFKC, collapse whitespace, strip surrounding punctuation and a trailing period."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _WS.sub(" ", folded).strip(_PUNCT_EDGES)


def _numbers(text: str) -> list[str]:
    found = []
    for match in _NUMBER.finditer(text):
        token = match.group(0)
        if any(ch.isdigit() for ch in token):
            found.append(token)
    return found


def parse_number(token: str) -> float | None:
    try:
        return float(token.replace(",", ""))
    except ValueError:
        return None


def last_number(text: str) -> float | None:
    """The last number in ``text`` (``1,234.5`` counts as one number), or ``None``."""
    for token in reversed(_numbers(text)):
        value = parse_number(token)
        if value is not None:
            return value
    return None


def last_code_block(text: str) -> str | None:
    """Content of the last fenced (```) block; an unclosed final fence counts (truncated output)."""
    last: str | None = None
    end = 0
    for match in _FENCE.finditer(text):
        last, end = match.group(1), match.end()
    unclosed = _UNCLOSED_FENCE.search(text, end)
    return unclosed.group(1) if unclosed else last


def _code_normalise(code: str) -> str:
    lines = [line.rstrip() for line in code.strip("\n").splitlines()]
    return "\n".join(lines).strip()


def extract(mode: GradeMode, response: str) -> Any:
    """The answer the grader compares: a normalised string, a number, or normalised code."""
    if mode is GradeMode.EXACT:
        return normalise(response)
    if mode is GradeMode.NUMBER:
        return last_number(response)
    block = last_code_block(response)
    return _code_normalise(block) if block is not None else None


def grade(mode: GradeMode, response: str, expected: Any) -> tuple[bool, Any]:
    """(correct, extracted answer). ``expected`` may be a string, a number, or a list of accepted answers."""
    extracted = extract(mode, response)
    accepted = expected if isinstance(expected, list) else [expected]
    return any(_matches(mode, extracted, candidate) for candidate in accepted), extracted


def _matches(mode: GradeMode, extracted: Any, expected: Any) -> bool:
    if extracted is None or expected is None:
        return False
    if mode is GradeMode.NUMBER:
        if isinstance(expected, bool):
            return False
        target = float(expected) if isinstance(expected, int | float) else last_number(str(expected))
        if target is None:
            return False
        return bool(abs(extracted - target) <= 1e-9 * max(1.0, abs(target)))
    if mode is GradeMode.CODE:
        text = str(expected)
        inner = last_code_block(text)
        return bool(extracted == _code_normalise(inner if inner is not None else text))
    return bool(extracted == normalise(str(expected)))
