"""Plots of `bench/autoscaler_live.py`'s runs: per trace, one figure with a column per autoscaler and three
rows: offered load (requests sent per 10 s window, as req/s), replicas (desired and ready), and the TTFT
p95 of the 10 s window against the target, failed requests marked.

    python bench/autoscaler_live_plot.py --runs /tmp/autoscaler-live --out docs

Reads `runs.jsonl` (the samples) and each run's `al-<trace>-<autoscaler>.records.jsonl` from --runs;
writes `autoscaler-live-<trace>.png` into --out and prints the paths.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from autoscaler_live_score import WINDOW_S, p95
from autoscaler_live_spec import TTFT_TARGET_S

Row = dict[str, Any]


def windows(
    records: list[Row], horizon_s: float
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Per 10 s window of send time: (window end, offered req/s, TTFT p95 or nan, failed count)."""
    n = max(1, math.ceil(horizon_s / WINDOW_S))
    sent = [0] * n
    ttfts: list[list[float]] = [[] for _ in range(n)]
    failed = [0.0] * n
    for r in records:
        i = min(n - 1, max(0, int(float(r.get("sent_s") or 0.0) // WINDOW_S)))
        sent[i] += 1
        if r.get("error"):
            failed[i] += 1
        elif r.get("ttft_s") is not None:
            ttfts[i].append(float(r["ttft_s"]))
    ends = [(i + 1) * WINDOW_S for i in range(n)]
    return ends, [c / WINDOW_S for c in sent], [p95(v) for v in ttfts], failed


def load_runs(runs_dir: Path) -> dict[str, list[tuple[Row, list[Row]]]]:
    """Per trace, (run row, its records), in the order of runs.jsonl; runs that failed are left out."""
    by_trace: dict[str, list[tuple[Row, list[Row]]]] = defaultdict(list)
    for line in (runs_dir / "runs.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "error" in row or not row.get("samples"):
            continue
        path = runs_dir / f"al-{row['trace']}-{row['autoscaler']}.records.jsonl"
        records = (
            [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []
        )
        by_trace[row["trace"]].append((row, records))
    return by_trace


def plot_trace(trace: str, runs: list[tuple[Row, list[Row]]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(runs), figsize=(5 * len(runs), 8), sharex=True, squeeze=False)
    horizon = max(s["t"] for row, _ in runs for s in row["samples"])
    for col, (row, records) in enumerate(runs):
        ends, rps, ttft, failed = windows(records, horizon)
        load_ax, rep_ax, ttft_ax = axes[0][col], axes[1][col], axes[2][col]
        load_ax.step(ends, rps, where="pre", color="tab:blue")
        load_ax.set_title(
            f"{row['autoscaler']}: {row['slo_violation_s']} SLO-violation s, {row['failed']} failed"
        )
        t = [s["t"] for s in row["samples"]]
        rep_ax.step(
            t, [s["desired"] for s in row["samples"]], where="post", label="desired", color="tab:orange"
        )
        rep_ax.step(t, [s["ready"] for s in row["samples"]], where="post", label="ready", color="tab:green")
        rep_ax.set_ylim(0, 9)
        ttft_ax.plot(ends, ttft, marker=".", color="tab:red", label="TTFT p95 (10 s)")
        ttft_ax.axhline(TTFT_TARGET_S, color="grey", linestyle="--", label="target")
        ttft_ax.bar(ends, failed, width=-WINDOW_S, align="edge", color="black", alpha=0.3, label="failed")
        ttft_ax.set_yscale("symlog", linthresh=1.0)
        ttft_ax.set_xlabel("seconds into the replay")
        if col == 0:
            load_ax.set_ylabel("offered req/s")
            rep_ax.set_ylabel("replicas")
            ttft_ax.set_ylabel("TTFT p95 s / failed")
            rep_ax.legend(loc="upper left")
            ttft_ax.legend(loc="upper left")
    fig.suptitle(f"{trace}: the same replayed window, one autoscaler at a time")
    fig.tight_layout()
    path = out / f"autoscaler-live-{trace}.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", required=True, help="the --out folder of autoscaler_live.py")
    ap.add_argument("--out", default="docs", help="where the PNGs go")
    args = ap.parse_args(argv)
    runs_dir, out = Path(args.runs), Path(args.out)
    if not (runs_dir / "runs.jsonl").is_file():
        print(f"no runs.jsonl in {runs_dir}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    for trace, runs in load_runs(runs_dir).items():
        print(plot_trace(trace, runs, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
