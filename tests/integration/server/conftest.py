"""Real model-server processes (`python -m shoal_cli model-server ...`) on free loopback ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from shoal_common import processes
from shoal_common.ports import free_port
from support.procs import wait_for as eventually

REPO = Path(__file__).resolve().parents[3]


def metric(text: str, name: str) -> float:
    """Sum of a series' samples (all label sets) in Prometheus text format."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    if not found:
        raise KeyError(name)
    return total


@dataclass
class ServerProc:
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def get(self, path: str, timeout: float = 5.0) -> httpx.Response:
        return httpx.get(self.url + path, timeout=timeout)

    def metrics(self) -> str:
        return self.get("/metrics").text

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return self.get("/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return processes.log_tail(self.log_path)

    def terminate(self) -> None:
        """SIGTERM to the server process only (as the kubelet does), not to its process group."""
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        processes.stop(self.proc, timeout=30)  # not a session leader: the signal goes to it alone


def start_server(
    tmp: Path, args: list[str], host: str = "127.0.0.1", ready_within: float = 30.0
) -> ServerProc:
    port = free_port(host)
    log_path = tmp / f"server-{port}.log"
    cmd = [sys.executable, "-m", "shoal_cli", "model-server", "--host", host, "--port", str(port), *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # In the test's process group (like the kubelet's SIGTERM, `terminate` reaches the server alone).
    proc = processes.spawn(cmd, log_path, env=env, cwd=REPO, new_session=False)
    server = ServerProc(proc, host, port, log_path)
    try:
        eventually(server.ready, ready_within, f"{' '.join(cmd)} to become ready")
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProc]]:
    started: list[ServerProc] = []

    def make(args: list[str], **kw: object) -> ServerProc:
        server = start_server(tmp_path, args, **kw)  # type: ignore[arg-type]
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
