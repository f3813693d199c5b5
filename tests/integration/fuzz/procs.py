"""Real model-server and router processes on free loopback ports, for the fuzz and batch tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[3]
# A fast simulated engine: fuzzed requests may ask for thousands of tokens.
FAST_SIM = [
    "--engine",
    "sim",
    "--sim-decode-tokens-per-s",
    "200000",
    "--sim-prefill-tokens-per-s",
    "10000000",
]


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
        return self.log_path.read_text(errors="replace")[-6000:]

    def wait_ready(self, within: float) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not ready within {within}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start(tmp: Path, name: str, args: list[str], ready_within: float = 60.0) -> Proc:
    port = free_port()
    log_path = tmp / f"{name}-{port}.log"
    cmd = [sys.executable, "-m", "shoal_cli", *args, "--port", str(port)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    started = Proc(proc, port, log_path)
    try:
        started.wait_ready(ready_within)
    except BaseException:
        started.stop()
        raise
    return started


def start_model_server(tmp: Path, model: str, extra: list[str] | None = None) -> Proc:
    args = ["model-server", *FAST_SIM, "--model", model, "--host", "127.0.0.1", *(extra or [])]
    return start(tmp, "model-server", args)


def start_router(tmp: Path, upstream: str, extra: list[str] | None = None) -> Proc:
    args = ["router", "--host", "127.0.0.1", "--upstream", upstream, *(extra or [])]
    return start(tmp, "router", args)
