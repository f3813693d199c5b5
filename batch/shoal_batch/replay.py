"""Trace replay as a schedule source of the open loop: each traced request at its own instant, with its own
prompt length and output length. Pure apart from `load_replay` reading the file.

A window (seconds into the trace) is cut first, then time is divided by the speed-up; the count and
duration bounds apply to the result. The prompt is synthesised to the traced token count (one token a
word of a fixed list of common English words: exact for the sim engine, within a token or two for BPE
tokenizers), and `max_tokens` with vLLM's `ignore_eos` make the output exactly the traced length.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal_batch.inputs import Item
from shoal_batch.trace_file import TimeUnit, TraceFileError, TraceRow, iter_trace, trace_format


class ReplayError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Window:
    """Seconds into the trace (from its first row): ``start <= t < end``."""

    start: float = 0.0
    end: float = math.inf


def parse_window(text: str) -> Window:
    """``START:END`` in seconds; either side may be empty (``:600``, ``120:``)."""
    head, sep, tail = text.partition(":")
    if not sep:
        raise ReplayError(f"window {text!r}: expected START:END in seconds (either may be empty)")
    try:
        start = float(head) if head.strip() else 0.0
        end = float(tail) if tail.strip() else math.inf
    except ValueError:
        raise ReplayError(f"window {text!r}: START and END must be numbers of seconds") from None
    if not (math.isfinite(start) and start >= 0) or math.isnan(end) or end <= start:
        raise ReplayError(f"window {text!r}: need 0 <= START < END")
    return Window(start, end)


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    t: float  # send instant, seconds from the start of the run
    prompt_tokens: int
    output_tokens: int
    line: int  # where it is in the trace file


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    requests: tuple[ReplayRequest, ...]
    source: str  # the file, for messages

    @property
    def times(self) -> list[float]:
        return [r.t for r in self.requests]


def select(
    rows: Iterable[TraceRow],
    *,
    window: Window = Window(),
    speedup: float = 1.0,
    max_requests: int = 100_000,
    max_duration: float = math.inf,
) -> list[ReplayRequest]:
    """The requests to send: in the window, sped up, at most ``max_requests``, sent before ``max_duration``.

    Stops reading at the first row past the window or a bound, so a long trace is never read whole.
    """
    if not (math.isfinite(speedup) and speedup > 0):
        raise ReplayError(f"speed-up must be a positive number, got {speedup!r}")
    if max_requests < 1 or not max_duration > 0:
        raise ReplayError("max requests and max duration must be positive")
    chosen: list[ReplayRequest] = []
    for row in rows:
        if row.t < window.start:
            continue
        offset = (row.t - window.start) / speedup
        if row.t >= window.end or offset >= max_duration:
            break
        chosen.append(ReplayRequest(offset, row.prompt_tokens, row.output_tokens, row.line))
        if len(chosen) >= max_requests:
            break
    return chosen


def load_replay(
    path: str | Path,
    *,
    window: Window = Window(),
    speedup: float = 1.0,
    max_requests: int = 100_000,
    max_duration: float = math.inf,
    unit: TimeUnit = TimeUnit.S,
) -> ReplayPlan:
    """Reads the trace at ``path`` (CSV or JSONL by suffix) into a plan; clear errors for bad files."""
    file = Path(path)
    fmt = trace_format(file)
    with file.open("r", encoding="utf-8", errors="replace", newline="") as handle:
        rows = iter_trace(handle, fmt=fmt, path=str(file), unit=unit)
        chosen = select(
            rows, window=window, speedup=speedup, max_requests=max_requests, max_duration=max_duration
        )
    if not chosen:
        where = "" if window == Window() else f" in the window {window.start:g}:{window.end:g}"
        raise TraceFileError(f"{file}: no request{where}")
    return ReplayPlan(tuple(chosen), str(file))


# Common English words, each one token in the usual BPE vocabularies (with or without a leading space).
_WORD_TEXT = """
the of and to in is you that it he was for on are as with his they at be this have from or one had by but not
what all were we when your can said there use an each which she do how their if will up other about out many
then them these so some her would make like him into time has look two more write go see number no way could
people my than first water been call who its now find long down day did get come made may part over new sound
take only little work know place year live me back give most very after thing our just name good sentence man
think say great where help through much before line right too
"""
WORDS = tuple(_WORD_TEXT.split())


def synth_prompt(tokens: int, seed: int) -> str:
    """A prompt of ``tokens`` words (at least one), deterministic per seed; different seeds share no
    long prefix, so a prefix cache does not flatter the replay."""
    rng = random.Random(seed)
    return " ".join(rng.choices(WORDS, k=max(1, tokens)))


class ReplayItems:
    """The open loop's sources for a replay: item ``i`` is request ``i``, its prompt made when it is sent
    (a trace of long prompts would not fit in memory made up front)."""

    def __init__(self, plan: ReplayPlan, *, seed: int = 0) -> None:
        self.plan = plan
        self.seed = seed

    def __len__(self) -> int:
        return len(self.plan.requests)

    def __getitem__(self, index: int) -> Item:
        request = self.plan.requests[index]
        return replay_item(request, seed=self.seed)


def replay_item(request: ReplayRequest, *, seed: int = 0) -> Item:
    # max_tokens >= 1: the API rejects 0 (BurstGPT logs failed requests with 0 response tokens).
    params: dict[str, Any] = {"max_tokens": max(1, request.output_tokens), "ignore_eos": True}
    prompt = synth_prompt(request.prompt_tokens, seed * 1_000_003 + request.line)
    return Item(id=request.line, key=str(request.line), line=request.line, prompt=prompt, params=params)
