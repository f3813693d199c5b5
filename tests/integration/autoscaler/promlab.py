"""A real Prometheus on 127.0.0.1 scraping small local exporters, for the autoscaler's tests.

Exporters serve the metric names the model-server and router export, without namespace labels; the scrape
config adds ``namespace`` / ``inferenceservice`` / ``pod`` as target labels (file_sd), as the relabelling in
a real cluster does.  Targets can be added and removed while Prometheus runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from shoal_common import processes
from shoal_common.ports import free_port
from support.eventually import eventually


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if not found:
        raise RuntimeError(
            "prometheus is not installed: apt-get install -y --no-install-recommends prometheus "
            "(then stop the system instance it starts)"
        )
    return found


@dataclass
class Exporter:
    """One fake model-server (or router) pod's /metrics."""

    namespace: str
    isvc: str
    pod: str
    port: int = 0
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    server: Any = None

    def __post_init__(self) -> None:
        r = self.registry
        self.waiting = Gauge("vllm:num_requests_waiting", "waiting", registry=r)
        self.running = Gauge("vllm:num_requests_running", "running", registry=r)
        self.queue = Gauge("shoal_server_queue_depth", "admission queue", registry=r)
        self.kv = Gauge("vllm:kv_cache_usage_perc", "kv", registry=r)
        self.pending = Gauge("shoal_router_pending_requests", "held", registry=r)
        self.flow_queued = Gauge("shoal_router_flow_queued_requests", "router queue", registry=r)
        self.flow_wait = Histogram(
            "shoal_router_flow_wait_seconds", "router queue wait", registry=r, buckets=(0.5, 1, 2, 4, 8, 16)
        )
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds", "ttft", registry=r, buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10)
        )
        self.port = self.port or free_port()
        started = start_http_server(self.port, addr="127.0.0.1", registry=r)
        self.server = started[0] if isinstance(started, tuple) else None

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def target(self) -> dict[str, Any]:
        return {
            "targets": [f"127.0.0.1:{self.port}"],
            "labels": {"namespace": self.namespace, "inferenceservice": self.isvc, "pod": self.pod},
        }


class Prometheus:
    def __init__(self, workdir: Path, scrape_interval: str = "1s") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets_file = workdir / "targets.json"
        self.targets: list[dict[str, Any]] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "prometheus.log"
        workdir.mkdir(parents=True, exist_ok=True)
        self._write_targets()
        (workdir / "prometheus.yml").write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
                    "scrape_configs": [
                        {
                            "job_name": "pods",
                            "scrape_interval": scrape_interval,
                            "scrape_timeout": scrape_interval,
                            "file_sd_configs": [
                                {"files": [str(self.targets_file)], "refresh_interval": "1s"}
                            ],
                        }
                    ],
                }
            )
        )

    def _write_targets(self) -> None:
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.targets))
        os.replace(tmp, self.targets_file)

    def set_targets(self, exporters: list[Exporter]) -> None:
        self.targets = [e.target for e in exporters]
        self._write_targets()

    def start(self) -> None:
        argv = [
            prometheus_binary(),
            f"--config.file={self.workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        self.proc = processes.spawn(argv, self.log)
        eventually(
            self._ready, timeout=30, desc="prometheus ready", retry_on=(AssertionError, httpx.HTTPError)
        )

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-2000:]
        return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200

    def stop(self) -> None:
        if self.proc is None:
            return
        processes.stop(self.proc, timeout=15)
        self.proc = None

    def query(self, promql: str) -> list[dict[str, Any]]:
        r = httpx.post(f"{self.url}/api/v1/query", data={"query": promql}, timeout=5)
        r.raise_for_status()
        return list(r.json()["data"]["result"])

    def wait_for(self, promql: str, expected: float, timeout: float = 20) -> None:
        def probe() -> bool:
            rows = self.query(promql)
            assert rows and abs(float(rows[0]["value"][1]) - expected) < 1e-6, rows
            return True

        eventually(probe, timeout=timeout, interval=0.3, desc=f"{promql} == {expected}")

    def wait_scraped(self, n_up: int, timeout: float = 20) -> None:
        def probe() -> bool:
            rows = self.query("count(up == 1)")
            got = float(rows[0]["value"][1]) if rows else 0.0
            assert got == n_up, f"{got} targets up"
            return True

        eventually(probe, timeout=timeout, interval=0.3, desc=f"{n_up} targets up")


def wait_until(deadline_s: float) -> None:
    """Bounded pause used only where a test must let real time pass (for staleness)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        time.sleep(min(0.2, max(end - time.monotonic(), 0)))
