"""Where the sandbox keeps binaries and state: `$SHOAL_CACHE` (default `~/.cache/shoal`), never the repo."""

from __future__ import annotations

import os
from pathlib import Path

from shoal_common.paths import cache_dir

__all__ = ["bin_dir", "cache_dir", "go_dir", "state_root"]


def bin_dir() -> Path:
    return cache_dir() / "bin"


def state_root() -> Path:
    return cache_dir() / "sandbox"


def go_dir() -> Path:
    """The Go module pins (`sandbox/go/<tool>/go.mod`), found next to this package in the source tree."""
    override = os.environ.get("SHOAL_SANDBOX_GO_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent.parent / "go"
