"""Real processes for the EPP tests: sim model-server replicas, the EPP (`shoal epp`) and Envoy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from support.envoy import free_port

REPO = Path(__file__).resolve().parents[3]


def wait_for(cond: Callable[[], bool], within: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {within}s waiting for: {what}")


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
        return self.log_path.read_text(errors="replace")[-6000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def spawn(tmp: Path, name: str, args: list[str], port: int) -> Proc:
    log_path = tmp / f"{name}-{port}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shoal_cli", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )
    return Proc(proc, port, log_path)


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_replica(tmp: Path, *extra: str, port: int | None = None, wait: bool = True) -> Proc:
    return start_model_server(tmp, ["--engine", "sim", "--model", "sim", *extra], port=port, wait=wait)


def start_model_server(
    tmp: Path, engine_args: list[str], port: int | None = None, wait: bool = True, ready_within: float = 30.0
) -> Proc:
    port = port or free_port()
    args = ["model-server", "--host", "127.0.0.1", "--port", str(port), *engine_args]
    p = spawn(tmp, "replica", args, port)
    if wait:
        try:
            wait_for(
                lambda: _alive_or_raise(p) and _http_ok(p.url + "/readyz"),
                ready_within,
                f"replica {port} ready",
            )
        except BaseException:
            p.stop()
            raise
    return p


def _alive_or_raise(p: Proc) -> bool:
    if not p.alive():
        raise AssertionError(f"process exited with {p.proc.returncode}:\n{p.log()}")
    return True


@dataclass
class Epp(Proc):
    health_port: int = 0
    metrics_port: int = 0

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def metric(self, name: str) -> float:
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


def start_epp(tmp: Path, upstreams: list[str], *extra: str, tls: bool = True) -> Epp:
    grpc_port, health, metrics = free_port(), free_port(), free_port()
    args = ["epp", "--host", "127.0.0.1", "--grpc-port", str(grpc_port), "--health-port", str(health)]
    args += ["--metrics-port", str(metrics), "--no-access-log"]
    for u in upstreams:
        args += ["--upstream", u]
    if not tls:
        args.append("--plaintext")
    p = spawn(tmp, "epp", [*args, *extra], grpc_port)
    epp = Epp(p.proc, p.port, p.log_path, health, metrics)
    try:
        wait_for(
            lambda: _alive_or_raise(epp) and _http_ok(f"http://127.0.0.1:{metrics}/healthz"),
            30,
            "EPP listening",
        )
    except BaseException:
        epp.stop()
        raise
    return epp
