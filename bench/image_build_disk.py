"""Disk use of one `shoal images build` over time: the free space of the filesystem holding buildah's
store, sampled every 2 s while the build runs (a model-server-cpu build is the one that matters: CI ran
out of disk committing it).

    .venv/bin/python bench/image_build_disk.py model-server-cpu [--force]

Prints the peak above the start, the lowest point (the build removes older versions first) and the
peak above that, in GiB, with the build's time and the 1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time

GIB = 1024**3


def sample(path: str, period_s: float, stop: threading.Event, out: list[int]) -> None:
    while not stop.is_set():
        out.append(shutil.disk_usage(path).used)
        stop.wait(period_s)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("image")
    ap.add_argument("--force", action="store_true", help="rebuild although the archive is up to date")
    ap.add_argument("--path", default="/var/lib/containers", help="a path on the filesystem to watch")
    ap.add_argument("--period-s", type=float, default=2.0)
    args = ap.parse_args()
    used: list[int] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample, args=(args.path, args.period_s, stop, used), daemon=True)
    load_before = os.getloadavg()[0]
    t0 = time.monotonic()
    sampler.start()
    cmd = [sys.executable, "-m", "shoal_cli", "images", "build", args.image, *(["--force"] * args.force)]
    rc = subprocess.run(cmd, check=False, timeout=3 * 3600).returncode
    stop.set()
    sampler.join()
    used.append(shutil.disk_usage(args.path).used)
    start, low, peak = used[0], min(used), max(used)
    print(
        f"{args.image}: rc {rc}, {time.monotonic() - t0:.0f} s, {len(used)} samples; "
        f"peak +{(peak - start) / GIB:.1f} GiB above the start, lowest {(low - start) / GIB:+.1f} GiB, "
        f"peak {(peak - low) / GIB:.1f} GiB above the lowest, end {(used[-1] - start) / GIB:+.1f} GiB; "
        f"load {load_before:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    return rc


if __name__ == "__main__":
    sys.exit(main())
