"""Reading the input JSONL: one request per line. Pure apart from reading the file."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Keys with a meaning of their own; every other top-level key is passed through into the request body.
RESERVED_KEYS = frozenset({"id", "prompt", "messages", "expected", "params", "metadata"})


@dataclass(frozen=True, slots=True)
class Item:
    """One request of the batch."""

    id: Any  # the id exactly as given (string or integer); written back unchanged
    key: str  # canonical string form of the id, used for de-duplication and resume
    line: int  # 1-based line number in the input file
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    expected: Any = None

    @property
    def is_chat(self) -> bool:
        return self.messages is not None


@dataclass(frozen=True, slots=True)
class Malformed:
    line: int
    reason: str


class MalformedInputError(ValueError):
    """Raised in fail-fast mode for the first malformed line."""

    def __init__(self, bad: Malformed) -> None:
        super().__init__(f"line {bad.line}: {bad.reason}")
        self.bad = bad


def id_key(value: Any) -> str:
    """Canonical form of an id: ``7`` and ``"7"`` are the same id."""
    return value if isinstance(value, str) else json.dumps(value)


def _decode(text: str) -> dict[str, Any] | str:
    """The line's JSON object, or why it is not one."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        return "invalid JSON: nested too deeply"
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits (Python's int-to-str limit)
        return f"invalid JSON: {exc}"
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    return obj


def _id_problem(obj: dict[str, Any]) -> str | None:
    if "id" not in obj:
        return "missing 'id'"
    ident = obj["id"]
    if isinstance(ident, bool) or not isinstance(ident, str | int) or ident == "":
        return "'id' must be a non-empty string or an integer"
    return None


def _messages_problem(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "'messages' must be a non-empty list"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            return f"messages[{i}] must be an object with a 'role'"
    return None


def _body_problem(obj: dict[str, Any]) -> str | None:
    """Why the prompt, messages or params are unusable, in the order a reader checks them; None if fine."""
    prompt = obj.get("prompt")
    messages = obj.get("messages")
    if (prompt is None) == (messages is None):
        return "exactly one of 'prompt' or 'messages' is required"
    if prompt is not None and not isinstance(prompt, str):
        return "'prompt' must be a string"
    if messages is not None and (problem := _messages_problem(messages)) is not None:
        return problem
    if not isinstance(obj.get("params", {}), dict):
        return "'params' must be an object"
    return None


def parse_line(text: str, line: int) -> Item | Malformed | None:
    """Parse one input line; ``None`` for blank lines and ``#`` comments."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    obj = _decode(stripped)
    if isinstance(obj, str):
        return Malformed(line, obj)
    problem = _id_problem(obj) or _body_problem(obj)
    if problem is not None:
        return Malformed(line, problem)
    extra = {k: v for k, v in obj.items() if k not in RESERVED_KEYS}
    return Item(
        id=obj["id"],
        key=id_key(obj["id"]),
        line=line,
        prompt=obj.get("prompt"),
        messages=obj.get("messages"),
        params={**extra, **obj.get("params", {})},
        expected=obj.get("expected"),
    )


@dataclass(slots=True)
class ParsedInput:
    items: list[Item]
    malformed: list[Malformed]


def parse_lines(lines: Iterable[str], *, fail_fast: bool = False) -> ParsedInput:
    """Parse every line; malformed lines and duplicate ids are collected (or raised with ``fail_fast``)."""
    items: list[Item] = []
    malformed: list[Malformed] = []
    first_line: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        parsed = parse_line(text, number)
        if parsed is None:
            continue
        if isinstance(parsed, Item):
            seen = first_line.get(parsed.key)
            if seen is None:
                first_line[parsed.key] = number
                items.append(parsed)
                continue
            parsed = Malformed(number, f"duplicate id {parsed.key!r} (first on line {seen})")
        if fail_fast:
            raise MalformedInputError(parsed)
        malformed.append(parsed)
    return ParsedInput(items, malformed)


def _read_lines(path: Path) -> Iterator[str]:
    with path.open("r", encoding="utf-8", errors="replace") as handle:
        yield from handle


def read_input(path: str | Path, *, fail_fast: bool = False) -> ParsedInput:
    return parse_lines(_read_lines(Path(path)), fail_fast=fail_fast)
