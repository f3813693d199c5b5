"""Real processes for the router's tests: `shoal model-server --engine sim` replicas and a `shoal router`,
on free loopback ports, stopped (SIGTERM, then SIGKILL) when the test ends."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from support.procs import Proc, start_cli

__all__ = ["Proc", "_start", "model_servers", "router"]


def _start(tmp: Path, name: str, args: list[str], ready_path: str = "/readyz", within: float = 30.0) -> Proc:
    """`shoal ARGS --host 127.0.0.1 --port P`, ready when `ready_path` answers 200."""
    return start_cli(tmp, name, [*args, "--host", "127.0.0.1"], within, ready_path)


@contextlib.contextmanager
def model_servers(tmp: Path, n: int, *extra: str) -> Iterator[list[Proc]]:
    started: list[Proc] = []
    try:
        for _ in range(n):
            args = ["model-server", "--engine", "sim", "--model", "sim", "--log-level", "WARNING", *extra]
            started.append(_start(tmp, "model-server", args))
        yield started
    finally:
        for p in started:
            p.stop()


@contextlib.contextmanager
def router(tmp: Path, upstreams: list[Proc], *extra: str) -> Iterator[Proc]:
    args = ["router", "--log-level", "WARNING", "--no-access-log"]
    for u in upstreams:
        args += ["--upstream", u.url]
    p = _start(tmp, "router", [*args, *extra])
    try:
        yield p
    finally:
        p.stop()
