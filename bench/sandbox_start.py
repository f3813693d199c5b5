"""Times `shoal sandbox up` cold (fresh state: new PKI, empty etcd) and warm (state reused), after a build.

    .venv/bin/python bench/sandbox_start.py [--rounds 3]

Uses a private sandbox name, so a running default sandbox is left alone (but shares the CPU: run it on
an otherwise idle machine for stable numbers). Goal: warm start under 20 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid


def _shoal(*args: str) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "shoal_cli", "sandbox", *args], capture_output=True, text=True, check=False
    )
    took = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"shoal sandbox {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    name = f"bench-{uuid.uuid4().hex[:6]}"
    cold: list[float] = []
    warm: list[float] = []
    try:
        _shoal("build")  # a no-op when cached; the bench is about starting, not building
        for _ in range(args.rounds):
            _shoal("down", "--name", name, "--purge")
            cold.append(_shoal("up", "--name", name, "--node", "kwok"))
            _shoal("down", "--name", name)
            warm.append(_shoal("up", "--name", name, "--node", "kwok"))
            _shoal("down", "--name", name)
    finally:
        _shoal("down", "--name", name, "--purge")
    load = os.getloadavg()[0]
    print(
        f"sandbox up, {args.rounds} rounds, 1-min load average at the end {load:.1f}, {os.cpu_count()} CPUs"
    )
    print("| start | median s | min s | max s |")
    print("|---|---|---|---|")
    for label, xs in (("cold (new PKI, empty etcd)", cold), ("warm (PKI and etcd data reused)", warm)):
        print(f"| {label} | {statistics.median(xs):.1f} | {min(xs):.1f} | {max(xs):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
