"""Sizes of shoal's images and the time of a warm `shoal images build` (every image up to date), plus,
with --cold, a forced rebuild of the named small images (cold: the whole Dockerfile runs again, packages
come from PyPI; the base is reused).

    .venv/bin/python bench/images_build.py [--cold operator router]

Prints a Markdown table for bench/RESULTS.md, with the 1-minute load average next to each figure.
A cold build of model-server-cpu takes many minutes on 2 cores: read its time from `shoal images build`'s
own output (`built in Ns`) rather than from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from shoal_common.paths import cache_dir


def _build(*args: str) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "shoal_cli", "images", "build", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise SystemExit(f"shoal images build {' '.join(args)} failed:\n{proc.stdout[-3000:]}{proc.stderr}")
    return time.monotonic() - t0


def _image_size(ref: str) -> int:
    out = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", ref],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(out.stdout.strip())


def _mb(n: int) -> str:
    return f"{n / 1e6:,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cold", nargs="*", default=[], help="images to rebuild with --force and time")
    args = parser.parse_args()
    cache = cache_dir()
    rows = []
    for name in args.cold:
        load = os.getloadavg()[0]
        rows.append(f"| cold build of {name} (--force) | {_build('--force', name):.0f} s | {load:.1f} |")
    load = os.getloadavg()[0]
    warm = _build()
    rows.append(f"| warm build, all images up to date | {warm:.1f} s | {load:.1f} |")
    print("| measure | result | 1-min load |\n|---|---|---|")
    print("\n".join(rows))
    index = json.loads((cache / "images" / "index.json").read_text())
    print("\n| image | archive MB (gzip layers) | unpacked MB |\n|---|---|---|")
    for name, entry in sorted(index.items()):
        archive = Path(entry["archive"]).stat().st_size
        print(f"| {name} `{entry['tag']}` | {_mb(archive)} | {_mb(_image_size(entry['ref']))} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
