"""Real processes for the router's flow-control tests: `shoal model-server --engine sim` replicas and a
`shoal router`, on free loopback ports, stopped (SIGTERM, then SIGKILL) when the test ends."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _start(tmp: Path, name: str, args: list[str], ready_path: str, within: float = 30.0) -> Proc:
    port = free_port()
    log_path = tmp / f"{name}-{port}.log"
    cmd = [sys.executable, "-m", "shoal_cli", *args, "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
    p = Proc(proc, port, log_path)
    deadline = time.monotonic() + within
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{p.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(p.url + ready_path, timeout=2).status_code == 200:
                return p
        if time.monotonic() > deadline:
            p.stop()
            raise AssertionError(f"{name} not ready within {within}s:\n{p.log()}")
        time.sleep(0.1)


@contextlib.contextmanager
def model_servers(tmp: Path, n: int, *extra: str) -> Iterator[list[Proc]]:
    started: list[Proc] = []
    try:
        for _ in range(n):
            args = ["model-server", "--engine", "sim", "--model", "sim", "--log-level", "WARNING", *extra]
            started.append(_start(tmp, "model-server", args, "/readyz"))
        yield started
    finally:
        for p in started:
            p.stop()


@contextlib.contextmanager
def router(tmp: Path, upstreams: list[Proc], *extra: str) -> Iterator[Proc]:
    args = ["router", "--log-level", "WARNING", "--no-access-log"]
    for u in upstreams:
        args += ["--upstream", u.url]
    p = _start(tmp, "router", [*args, *extra], "/readyz")
    try:
        yield p
    finally:
        p.stop()
