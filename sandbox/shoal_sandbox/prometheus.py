"""A real Prometheus server for the sandbox's real node: the pinned build (it has Kubernetes service
discovery) finds pods with ``kubernetes_sd_configs`` against the API server and relabels them the way a
user's cluster does (:mod:`shoal_sandbox.node.prometheus`, docs/metrics.md).

It listens on the node's bridge address (pods, such as the operator's autoscaler, query it from the pod
network), scrapes every second by default, and keeps its data under its state directory; it is a child
process of whoever starts it (:class:`PrometheusServer`).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from shoal_common.ports import free_port

from shoal_sandbox import procs
from shoal_sandbox.node.prometheus import render_config
from shoal_sandbox.paths import bin_dir


class PrometheusError(RuntimeError):
    pass


def binary() -> str:
    """The pinned Go build (``shoal sandbox build --node``), else ``$SHOAL_CACHE/bin/prometheus``, else
    Debian's (which lacks Kubernetes discovery: the config below then fails to load, saying so)."""
    from shoal_sandbox.build import binary_path

    for cand in (binary_path("prometheus"), bin_dir() / "prometheus", shutil.which("prometheus")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return str(cand)
    raise PrometheusError("prometheus not found: run scripts/setup.sh (it builds the pinned Prometheus)")


def argv(config_file: Path, data_dir: Path, port: int, host: str) -> list[str]:
    return [
        binary(),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data_dir}",
        "--storage.tsdb.retention.time=6h",
        f"--web.listen-address={host}:{port}",
        "--log.level=warn",
    ]


def is_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def query(url: str, promql: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """An instant query; returns the result vector (``[{"metric": {...}, "value": [ts, "v"]}, ...]``)."""
    resp = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=timeout)
    resp.raise_for_status()
    body = resp.json()
    if body.get("status") != "success":
        raise PrometheusError(f"query {promql!r} failed: {body}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def targets(url: str) -> list[dict[str, Any]]:
    """Active scrape targets (``labels``, ``health``, ``lastError`` ...)."""
    resp = httpx.get(f"{url}/api/v1/targets", params={"state": "active"}, timeout=5.0)
    resp.raise_for_status()
    active: list[dict[str, Any]] = resp.json()["data"]["activeTargets"]
    return active


@dataclass
class PrometheusServer:
    """A Prometheus process with its own config and data under ``state_dir``. Its pid is recorded there,
    so a server left running by a killed session (it holds the data folder's lock) is stopped first."""

    state_dir: Path
    kubeconfig: Path  # what kubernetes_sd lists pods with
    host: str
    scrape_interval_s: float = 1.0
    port: int = 0
    proc: procs.ProcRecord | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "prometheus.log"

    @property
    def _record(self) -> Path:
        return self.state_dir / "prometheus.json"

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        stale = procs.load(self._record)
        if stale is not None:
            procs.stop(stale)
        config = self.state_dir / "prometheus.yml"
        config.write_text(render_config(self.kubeconfig, self.scrape_interval_s))
        self.port = self.port or free_port(self.host)
        self.proc = procs.spawn(argv(config, self.state_dir / "data", self.port, self.host), self.log_file)
        procs.save(self.proc, self._record)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise PrometheusError(
                    f"prometheus exited; see {self.log_file}:\n" + procs.log_tail(self.log_file, 15)
                )
            if is_ready(self.url):
                return self
            time.sleep(0.2)
        self.stop()
        raise PrometheusError(f"prometheus not ready in {timeout:.0f}s; see {self.log_file}")

    def alive(self) -> bool:
        return self.proc is not None and procs.is_alive(self.proc)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            procs.stop(proc, timeout)
        self._record.unlink(missing_ok=True)
