"""Makes the committed request traces (`bench/traces/*.csv`), deterministically (fixed seeds).

    python bench/traces/generate.py            # (re)writes diurnal.csv, step5x.csv, onoff.csv
    python bench/traces/generate.py --check    # exit 1 if a committed file differs from what this makes

Format (what `shoal batch load --replay` reads): CSV `timestamp,prompt_tokens,output_tokens`, seconds
from the start, one request a row, in time order. Arrivals are a non-homogeneous Poisson process over a
piecewise-linear rate curve, drawn by the load generator's own scheduler (`shoal_batch.schedule`). Lengths
are log-normal like public chat traces (Azure's 2023 conversation trace: prompt median ~1k tokens, output
median ~200-250), clipped so prompt + output fits an 8k context.

Rates are sized for the sim engine of issue #19 (20k prefill and 60 decode tokens/s per sequence, batch 16,
so one replica serves about 4 chat requests/s); `--speedup` scales them at replay time.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "batch"))

from shoal_batch.schedule import Arrivals, RateCurve, arrival_times  # noqa: E402

CONTEXT = 8192
Lengths = Callable[[random.Random], tuple[int, int]]


def _lognormal(rng: random.Random, median: float, sigma: float, low: int, high: int) -> int:
    return max(low, min(high, round(median * math.exp(rng.gauss(0.0, sigma)))))


def chat_lengths(rng: random.Random) -> tuple[int, int]:
    prompt = _lognormal(rng, 1000, 0.9, 16, 6000)
    output = _lognormal(rng, 210, 0.6, 8, 1024)
    return prompt, min(output, CONTEXT - prompt)


def long_prompt_lengths(rng: random.Random) -> tuple[int, int]:
    """The bursts of #19: long prompts (1-8k tokens), short outputs."""
    prompt = round(math.exp(rng.uniform(math.log(1000), math.log(8000))))
    return prompt, min(rng.randint(8, 64), CONTEXT - prompt)


@dataclass(frozen=True)
class Shape:
    name: str
    seed: int
    points: tuple[tuple[float, float], ...]  # (t, requests/s), linear between
    lengths: Lengths
    about: str


def _noisy(
    points: list[tuple[float, float]], rng: random.Random, amplitude: float
) -> list[tuple[float, float]]:
    return [(t, max(0.0, r * (1.0 + rng.uniform(-amplitude, amplitude)))) for t, r in points]


def diurnal(seed: int = 1) -> Shape:
    """One compressed day in 20 minutes: night 1 rps, a morning ramp to a midday peak of 8 rps, evening
    decline; +-15% noise every 10 s."""
    rng = random.Random(seed)
    duration, step = 1200.0, 10.0
    base = [
        (i * step, 1.0 + 7.0 * math.sin(math.pi * i * step / duration) ** 2)
        for i in range(int(duration / step) + 1)
    ]
    return Shape(
        "diurnal",
        seed,
        tuple(_noisy(base, rng, 0.15)),
        chat_lengths,
        "diurnal ramp with noise, 1 -> 8 -> 1 rps",
    )


def step5x(seed: int = 2) -> Shape:
    """A 5x step: 2 rps for 3 min, 10 rps for 5 min, back to 2 rps for 2 min."""
    points = ((0.0, 2.0), (180.0, 2.0), (180.0, 10.0), (480.0, 10.0), (480.0, 2.0), (600.0, 2.0))
    return Shape("step5x", seed, points, chat_lengths, "5x step (burst): 2 -> 10 -> 2 rps")


def onoff(seed: int = 3) -> Shape:
    """Bursts of 30-120 s at 12 rps of long prompts, separated by quiet 1-4 minutes at 0.3 rps."""
    rng = random.Random(seed)
    points: list[tuple[float, float]] = [(0.0, 0.3)]
    t = 60.0
    while t < 1200.0:
        burst = rng.uniform(30.0, 120.0)
        points += [(t, 0.3), (t, 12.0), (t + burst, 12.0), (t + burst, 0.3)]
        t += burst + rng.uniform(60.0, 240.0)
    points.append((t, 0.3))
    return Shape(
        "onoff", seed, tuple(points), long_prompt_lengths, "bursty on/off: 30-120 s at 12 rps, quiet 1-4 min"
    )


SHAPES: tuple[Callable[[], Shape], ...] = (diurnal, step5x, onoff)


def render(shape: Shape) -> str:
    """The trace's CSV text: Poisson arrivals on the shape's curve, lengths from the shape's sampler."""
    times = arrival_times(
        RateCurve(shape.points), arrivals=Arrivals.POISSON, seed=shape.seed, max_requests=12_000
    )
    rng = random.Random(shape.seed * 7919)
    rows = ["timestamp,prompt_tokens,output_tokens"]
    for t in times:
        prompt, output = shape.lengths(rng)
        rows.append(f"{t:.3f},{prompt},{output}")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed files; write nothing"
    )
    parser.add_argument("--out", type=Path, default=HERE, help="folder (default: bench/traces)")
    args = parser.parse_args(argv)
    stale = []
    for make in SHAPES:
        shape = make()
        text = render(shape)
        path = args.out / f"{shape.name}.csv"
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
            continue
        path.write_text(text)
        print(f"{path.name}: {text.count(chr(10)) - 1} requests, {len(text) / 1024:.0f} KiB ({shape.about})")
    if stale:
        print(f"differs from the script: {', '.join(stale)} (run python bench/traces/generate.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
