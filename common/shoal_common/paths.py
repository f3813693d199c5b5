"""Where shoal keeps what it builds or downloads: `$SHOAL_CACHE` (default `~/.cache/shoal`), never the repo."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`$SHOAL_CACHE`, or `~/.cache/shoal` when it is unset or empty (an empty value would mean the cwd)."""
    return Path(os.environ.get("SHOAL_CACHE") or Path.home() / ".cache" / "shoal").expanduser()
