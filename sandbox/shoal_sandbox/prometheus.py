"""A real Prometheus server for the sandbox, scraping the pods the pod runner runs.

Debian's ``prometheus`` package (installed by ``scripts/setup.sh``) is built without Kubernetes service
discovery, so pods are discovered through ``file_sd_configs``: the pod runner writes one target per pod
annotated ``prometheus.io/scrape: "true"`` (``<pod IP>:<prometheus.io/port>``) with the labels a
``kubernetes_sd_configs`` relabelling would give in a cluster: ``namespace``, ``pod``, ``inferenceservice``
(from the pod label ``shoal.dev/inferenceservice``) and ``component``. Processes that are not pods (the
operator in the e2e tests and the demo) are added as static targets.

The server listens on 127.0.0.1 only, scrapes every second by default, and keeps its data under its state
directory; it is a child process of whoever starts it (:class:`PrometheusServer`) or a sandbox component
(:func:`argv` + :func:`render_config`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from shoal_sandbox.paths import bin_dir

POD_JOB = "shoal-pods"


class PrometheusError(RuntimeError):
    pass


def binary() -> str:
    """The Prometheus binary: the pinned Go build (``shoal sandbox build --node``; it has Kubernetes service
    discovery), else ``$SHOAL_CACHE/bin/prometheus``, else Debian's (file_sd only)."""
    from shoal_sandbox.build import binary_path

    for cand in (binary_path("prometheus"), bin_dir() / "prometheus", shutil.which("prometheus")):
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return str(cand)
    raise PrometheusError("prometheus not found: run scripts/setup.sh (it builds the pinned Prometheus)")


def _duration(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms"


def render_config(
    file_sd: Sequence[Path],
    static_targets: Mapping[str, Sequence[str]] | None = None,
    static_labels: Mapping[str, Mapping[str, str]] | None = None,
    scrape_interval_s: float = 1.0,
) -> str:
    """prometheus.yml: pods from ``file_sd`` files (written by the pod runner), plus static jobs."""
    interval = _duration(scrape_interval_s)
    scrape_configs: list[dict[str, Any]] = [
        {
            "job_name": POD_JOB,
            "scrape_interval": interval,
            "scrape_timeout": _duration(min(scrape_interval_s, 1.0)),
            "file_sd_configs": [{"files": [str(p) for p in file_sd], "refresh_interval": "1s"}],
        }
    ]
    for job, targets in (static_targets or {}).items():
        scrape_configs.append(
            {
                "job_name": job,
                "scrape_interval": interval,
                "scrape_timeout": _duration(min(scrape_interval_s, 1.0)),
                "static_configs": [
                    {"targets": list(targets), "labels": dict((static_labels or {}).get(job, {}))}
                ],
            }
        )
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": scrape_configs,
    }
    return yaml.safe_dump(config, sort_keys=False)


def argv(config_file: Path, data_dir: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    return [
        binary(),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data_dir}",
        "--storage.tsdb.retention.time=6h",
        f"--web.listen-address={host}:{port}",
        "--web.enable-lifecycle",  # POST /-/reload after the config changes
        "--log.level=warn",
    ]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


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
    """A Prometheus child process with its own config and data under ``state_dir``."""

    state_dir: Path
    file_sd: Sequence[Path]
    static_targets: dict[str, list[str]] = field(default_factory=dict)
    static_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    scrape_interval_s: float = 1.0
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    # On the real node: pods are discovered with kubernetes_sd through this kubeconfig (no file_sd), and
    # the server listens on the node's bridge address so pods (the operator's autoscaler) can query it.
    kubernetes_sd: Path | None = None
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "prometheus.yml"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "prometheus.log"

    def _write_config(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for f in self.file_sd:
            if not f.exists():
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_text("[]")
        if self.kubernetes_sd is not None:
            from shoal_sandbox.node.prometheus import render_config as render_kubernetes_sd

            text = render_kubernetes_sd(self.kubernetes_sd, self.scrape_interval_s)
        else:
            text = render_config(
                self.file_sd, self.static_targets, self.static_labels, self.scrape_interval_s
            )
        self.config_file.write_text(text)

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        self._write_config()
        if not self.port:
            self.port = free_port(self.host)
        data = self.state_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as logf:
            self.proc = subprocess.Popen(
                argv(self.config_file, data, self.port, self.host),
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited ({self.proc.returncode}); see {self.log_file}:\n{self._tail()}"
                )
            if is_ready(self.url):
                return self
            time.sleep(0.2)
        self.stop()
        raise PrometheusError(f"prometheus not ready in {timeout:.0f}s; see {self.log_file}:\n{self._tail()}")

    def add_static_target(self, job: str, target: str, labels: Mapping[str, str] | None = None) -> None:
        """Scrape one more process (the operator, a router outside the cluster ...); reloads the config."""
        self.static_targets.setdefault(job, [])
        if target not in self.static_targets[job]:
            self.static_targets[job].append(target)
        if labels:
            self.static_labels[job] = dict(labels)
        self._write_config()
        if self.proc is not None and self.proc.poll() is None:
            httpx.post(f"{self.url}/-/reload", timeout=10.0).raise_for_status()

    def _tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(args_in: list[str] | None = None) -> int:
    """``python -m shoal_sandbox.prometheus``: run Prometheus in the foreground on the pod runner's targets."""
    from shoal_sandbox.podrunner import default_targets_file

    parser = argparse.ArgumentParser(prog="python -m shoal_sandbox.prometheus")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--targets-file", type=Path, default=None)
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--scrape-interval", type=float, default=1.0)
    parser.add_argument("--static", action="append", default=[], help="JOB=HOST:PORT (repeatable)")
    a = parser.parse_args(args_in)
    static: dict[str, list[str]] = {}
    for item in a.static:
        job, _, target = item.partition("=")
        static.setdefault(job, []).append(target)
    server = PrometheusServer(
        a.state_dir, [a.targets_file or default_targets_file()], static, {}, a.scrape_interval, a.port
    )
    server.start()
    print(f"prometheus ready at {server.url}", flush=True)
    try:
        assert server.proc is not None
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
