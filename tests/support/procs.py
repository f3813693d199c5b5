"""Real shoal processes for integration tests: `python -m shoal_cli ...` on a free loopback port, its
output in a log under the test's tmp folder, waited for until ready, stopped (SIGTERM, then SIGKILL).

Each test folder keeps its own starters (which flags, which engine) on top of this.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from shoal_common import processes
from shoal_common.ports import free_port

REPO = Path(__file__).resolve().parents[2]

__all__ = ["REPO", "Proc", "free_port", "http_ok", "spawn_cli", "start_cli", "wait_for"]


def wait_for(cond: Callable[[], bool], within: float, what: str, interval: float = 0.05) -> None:
    """Polls `cond` until it holds; AssertionError naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {within}s waiting for: {what}")


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.hostport}"

    def log(self) -> str:
        return processes.log_tail(self.log_path)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def alive_or_raise(self) -> bool:
        if not self.alive():
            raise AssertionError(f"process exited with {self.proc.returncode}:\n{self.log()}")
        return True

    def kill(self) -> None:
        processes.kill(self.proc)

    def stop(self) -> None:
        processes.stop(self.proc, timeout=15)

    def wait_ready(self, within: float, url: str | None = None) -> None:
        """Waits until `url` (default: its /readyz) answers 200; stops it and raises when it exits or times out."""
        probe = url or self.url + "/readyz"
        deadline = time.monotonic() + within
        try:
            while not (self.alive_or_raise() and http_ok(probe)):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{probe} not ready within {within}s:\n{self.log()}")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise


def spawn_cli(tmp: Path, name: str, args: list[str], port: int) -> Proc:
    """Starts `python -m shoal_cli ARGS` (from the repo root, same interpreter) logging to tmp/NAME-PORT.log."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "shoal_cli", *args]
    log_path = tmp / f"{name}-{port}.log"
    return Proc(processes.spawn(cmd, log_path, env=env, cwd=REPO), port, log_path)


def start_cli(
    tmp: Path, name: str, args: list[str], within: float = 30.0, ready_path: str = "/readyz"
) -> Proc:
    """`spawn_cli` with `--port` on a free port appended, waited for until `ready_path` answers 200."""
    port = free_port()
    p = spawn_cli(tmp, name, [*args, "--port", str(port)], port)
    p.wait_ready(within, p.url + ready_path)
    return p
