"""Real processes for the EPP tests: sim model-server replicas, the EPP (`shoal epp`) and Envoy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
from support.procs import REPO, Proc, free_port, spawn_cli, wait_for

__all__ = ["REPO", "Epp", "Proc", "start_epp", "start_model_server", "start_replica", "wait_for"]


def start_replica(tmp: Path, *extra: str, port: int | None = None, wait: bool = True) -> Proc:
    return start_model_server(tmp, ["--engine", "sim", "--model", "sim", *extra], port=port, wait=wait)


def start_model_server(
    tmp: Path, engine_args: list[str], port: int | None = None, wait: bool = True, ready_within: float = 30.0
) -> Proc:
    """A model-server on `port` (or a free one); `wait=False` returns at once (a replica that starts late)."""
    port = port or free_port()
    args = ["model-server", "--host", "127.0.0.1", "--port", str(port), *engine_args]
    p = spawn_cli(tmp, "replica", args, port)
    if wait:
        p.wait_ready(ready_within)
    return p


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
    p = spawn_cli(tmp, "epp", [*args, *extra], grpc_port)
    epp = Epp(p.proc, p.port, p.log_path, health, metrics)
    epp.wait_ready(30, f"http://127.0.0.1:{metrics}/healthz")
    return epp
