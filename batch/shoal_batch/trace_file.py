"""Reading a request trace (CSV or JSONL): one request a row with its time, prompt length and output length.

Pure apart from opening the file. Column names follow the public traces as well as our own:

- time: ``timestamp``, ``time``, ``t``, ``offset``, ``arrival_time`` -- seconds (a number; ``--time-unit ms``
  for milliseconds, as in Mooncake's traces) or an RFC 3339 / ISO 8601 date-time (Azure's LLM inference
  traces write ``2023-11-16 18:15:46.6805900``; a time without a zone is taken as UTC);
- prompt: ``prompt_tokens``, ``input_tokens``, ``ContextTokens`` (Azure), ``Request tokens`` (BurstGPT),
  ``input_length``, ``prompt_len``;
- output: ``output_tokens``, ``max_tokens``, ``GeneratedTokens`` (Azure), ``Response tokens`` (BurstGPT),
  ``completion_tokens``, ``output_length``, ``output_len``.

Names match without regard to case, spaces, dashes or underscores; other columns are ignored. Rows must
be in time order (every public trace is), which lets a window stop reading early.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any


class TraceFileError(ValueError):
    """A row or header that cannot be read; the message names the file, the line and the column."""


class TimeUnit(StrEnum):
    S = "s"
    MS = "ms"


@dataclass(frozen=True, slots=True)
class TraceRow:
    t: float  # seconds since the trace's first row
    prompt_tokens: int
    output_tokens: int
    line: int  # 1-based line in the file


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.strip().lower())


TIME_NAMES = ("timestamp", "time", "t", "offset", "arrival_time")
PROMPT_NAMES = (
    "prompt_tokens",
    "input_tokens",
    "ContextTokens",
    "Request tokens",
    "input_length",
    "prompt_len",
)
OUTPUT_NAMES = (
    "output_tokens",
    "max_tokens",
    "GeneratedTokens",
    "Response tokens",
    "completion_tokens",
    "output_length",
    "output_len",
)
_ROLES = {"time": TIME_NAMES, "prompt": PROMPT_NAMES, "output": OUTPUT_NAMES}
MAX_TOKENS_PER_FIELD = 10_000_000  # a typo guard: no model has a context this long


def pick_columns(names: Iterable[str], where: str) -> dict[str, str]:
    """Role (time, prompt, output) -> the column name as written in the file."""
    by_norm: dict[str, str] = {}
    for name in names:
        by_norm.setdefault(_norm(name), name)
    chosen: dict[str, str] = {}
    for role, aliases in _ROLES.items():
        found = next((by_norm[_norm(a)] for a in aliases if _norm(a) in by_norm), None)
        if found is None:
            raise TraceFileError(
                f"{where}: no {role} column (one of {', '.join(aliases)}); found {sorted(by_norm.values())}"
            )
        chosen[role] = found
    return chosen


def parse_time(value: Any, unit: TimeUnit) -> tuple[float, bool]:
    """(seconds, absolute): a number of seconds (or ms) from any origin, or an ISO 8601 date-time."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            try:
                when = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"not seconds nor an RFC 3339 time: {text!r}") from None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return when.timestamp(), True
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return (number / 1000.0 if unit is TimeUnit.MS else number), False


def parse_tokens(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a token count")
    number: float
    if isinstance(value, int | float):
        number = value
    else:
        try:
            number = float(str(value))
        except ValueError:
            raise ValueError(f"not a whole number: {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise ValueError(f"not a whole number: {value!r}")
    if not 0 <= number <= MAX_TOKENS_PER_FIELD:
        raise ValueError(f"out of range 0..{MAX_TOKENS_PER_FIELD}: {value!r}")
    return int(number)


class _Rows:
    """Turns (line, mapping) pairs into TraceRows: relative times, time order, one kind of time."""

    def __init__(self, path: str, columns: dict[str, str], unit: TimeUnit) -> None:
        self.path, self.columns, self.unit = path, columns, unit
        self.origin: float | None = None
        self.absolute: bool | None = None
        self.previous = -math.inf

    def _field(self, line: int, row: dict[str, Any], role: str) -> Any:
        column = self.columns[role]
        value = row.get(column)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise TraceFileError(f"{self.path} line {line}, column {column!r}: empty")
        return value

    def row(self, line: int, row: dict[str, Any]) -> TraceRow:
        values: dict[str, Any] = {}
        for role, parse in (("time", None), ("prompt", parse_tokens), ("output", parse_tokens)):
            raw = self._field(line, row, role)
            try:
                values[role] = parse_time(raw, self.unit) if parse is None else parse(raw)
            except ValueError as exc:
                raise TraceFileError(
                    f"{self.path} line {line}, column {self.columns[role]!r}: {exc}"
                ) from None
        seconds, absolute = values["time"]
        if self.absolute is None:
            self.absolute, self.origin = absolute, seconds
        elif absolute != self.absolute:
            raise TraceFileError(
                f"{self.path} line {line}, column {self.columns['time']!r}: mixes date-times and numbers"
            )
        if seconds < self.previous:
            raise TraceFileError(
                f"{self.path} line {line}, column {self.columns['time']!r}: earlier than the row before "
                "(a trace must be in time order)"
            )
        self.previous = seconds
        assert self.origin is not None
        return TraceRow(seconds - self.origin, values["prompt"], values["output"], line)


def _csv_rows(lines: Iterable[str], path: str, unit: TimeUnit) -> Iterator[TraceRow]:
    numbered = (
        (n, text) for n, text in enumerate(lines, start=1) if text.strip() and not text.startswith("#")
    )
    header_line = next(numbered, None)
    if header_line is None:
        raise TraceFileError(f"{path}: empty (a CSV trace starts with a header line)")
    header = next(csv.reader([header_line[1]]))
    parser = _Rows(path, pick_columns(header, f"{path} line {header_line[0]} (header)"), unit)
    for number, text in numbered:
        cells = next(csv.reader([text]))
        if len(cells) != len(header):
            raise TraceFileError(f"{path} line {number}: {len(cells)} fields, the header has {len(header)}")
        yield parser.row(number, dict(zip(header, cells, strict=True)))


def _jsonl_rows(lines: Iterable[str], path: str, unit: TimeUnit) -> Iterator[TraceRow]:
    parser: _Rows | None = None
    for number, text in enumerate(lines, start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise TraceFileError(f"{path} line {number}: invalid JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise TraceFileError(f"{path} line {number}: expected a JSON object, got {type(obj).__name__}")
        if parser is None:
            parser = _Rows(path, pick_columns(obj.keys(), f"{path} line {number}"), unit)
        yield parser.row(number, obj)


def iter_trace(
    lines: Iterable[str], *, fmt: str, path: str = "trace", unit: TimeUnit = TimeUnit.S
) -> Iterator[TraceRow]:
    """Rows of a trace's text, lazily (a window can stop early); ``fmt`` is ``csv`` or ``jsonl``."""
    if fmt == "csv":
        return _csv_rows(lines, path, unit)
    if fmt == "jsonl":
        return _jsonl_rows(lines, path, unit)
    raise TraceFileError(f"{path}: unknown trace format {fmt!r} (csv or jsonl)")


def trace_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in {".csv", ".txt"}:
        return "csv"
    if suffix in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    raise TraceFileError(f"{path}: cannot tell the format from the suffix {suffix!r} (.csv or .jsonl)")
