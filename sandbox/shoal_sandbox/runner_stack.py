"""The closed loop on the pod runner (kwok nodes; each pod a local process on a loopback IP): the sandbox,
the CRD, Prometheus on the runner's file_sd targets and the operator as a local process.

It remains for the suites that have not moved to the real node (:mod:`shoal_sandbox.cluster`, where the
closed loop runs as it would in a cluster): the operator's and the chart's integration tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from shoal_common import names

from shoal_sandbox.kube import SyncKube
from shoal_sandbox.prometheus import PrometheusServer, free_port
from shoal_sandbox.stack_support import (
    Log,
    Obj,
    StackError,
    bounded_wait,
    install_crds,
    prom_by,
    prom_sum,
)


@dataclass
class ChildProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> ChildProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as f:
        proc = subprocess.Popen(
            argv,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return ChildProcess(name, proc, log)


@dataclass
class Stack:
    """Sandbox + CRD + pod runner + Prometheus + operator, started in that order, stopped in reverse.

    The sandbox is left running if it was already up (or ``keep_sandbox``), else taken down at the end.
    """

    sandbox_name: str = "default"
    with_prometheus: bool = True
    with_operator: bool = True
    autoscaler_period_s: float = 2.0
    scrape_interval_s: float = 1.0
    keep_sandbox: bool = False
    log: Log = print
    operator_env: dict[str, str] = field(default_factory=dict)
    # set by start()
    kubeconfig: Path = Path()
    state_dir: Path = Path()
    kube: SyncKube | None = None
    prometheus: PrometheusServer | None = None
    children: list[ChildProcess] = field(default_factory=list)
    _sandbox: Any = None
    _was_up: bool = True

    @property
    def prometheus_url(self) -> str:
        return self.prometheus.url if self.prometheus else ""

    @property
    def runner_state(self) -> Path:
        """The pod runner's state (pod logs: ``pods/<namespace>/<pod>/<container>.log``)."""
        return self.state_dir.parent / "podrunner"

    @property
    def targets_file(self) -> Path:
        """Prometheus file_sd targets, written by the pod runner."""
        return self.state_dir.parent / "prometheus" / "pods.json"

    def k(self) -> SyncKube:
        assert self.kube is not None, "stack not started"
        return self.kube

    def start(self) -> Stack:
        from shoal_sandbox.build import missing_binaries
        from shoal_sandbox.sandbox import Sandbox

        try:
            probe = Sandbox(name=self.sandbox_name, log=self.log)
            if missing_binaries():
                from shoal_sandbox.build import build

                self.log("building the control-plane binaries (once; cached by version) ...")
                build(log=self.log)
            # The sandbox runs the pod runner as one of its components (with kwok's pod stages to match).
            self._sandbox = probe
            self._was_up = probe.is_up()
            self._sandbox.up(timeout=180)
            self._sandbox.add_user()
            self.kubeconfig = self._sandbox.kubeconfig_path
            self.state_dir = self._sandbox.state_dir / "closed-loop"
            self.kube = SyncKube(self.kubeconfig, field_manager="shoal-demo")
            self.install_crds()
            if self.with_prometheus:
                self.ensure_prometheus()
            if self.with_operator:
                self.ensure_operator()
        except BaseException:
            self.stop()
            raise
        return self

    def ensure_prometheus(self) -> None:
        if self.prometheus is None:
            self.log("starting Prometheus ...")
            self.prometheus = PrometheusServer(
                self.state_dir / "prometheus",
                [self.targets_file],
                scrape_interval_s=self.scrape_interval_s,
            ).start()

    def ensure_operator(self) -> None:
        if not any(c.name == "operator" and c.alive() for c in self.children):
            self.start_operator()

    def install_crds(self) -> None:
        install_crds(self.k(), self.log)

    def start_operator(self) -> None:
        port = free_port()
        self.log("starting the operator (with its autoscaler) ...")
        env = {
            "KUBECONFIG": str(self.kubeconfig),
            "SHOAL_METRICS_HOST": "127.0.0.1",
            "SHOAL_AUTOSCALER_PERIOD_SECONDS": str(self.autoscaler_period_s),
            "SHOAL_DRIFT_PERIOD_SECONDS": "10",
            **self.operator_env,
        }
        argv = [sys.executable, "-m", "shoal_cli", "operator", "--standalone", "--metrics-port", str(port)]
        if self.prometheus is not None:
            argv += ["--prometheus-url", self.prometheus.url]
        op = spawn("operator", argv, self.state_dir / "logs" / "operator.log", env)
        self.children.append(op)

        def serving() -> bool:
            if not op.alive():
                raise StackError(f"the operator exited; last lines of {op.log}:\n{op.tail()}")
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        bounded_wait(serving, 60, "the operator's /metrics")
        if self.prometheus is not None:
            self.prometheus.add_static_target(
                "shoal-operator", f"127.0.0.1:{port}", {"component": "operator"}
            )

    def check_children(self) -> None:
        if self._sandbox is not None:
            runner = next((c for c in self._sandbox.status() if c.name == "pod-runner"), None)
            if runner is not None and not runner.running:
                raise StackError(
                    "the sandbox's pod runner is not running; see its log under logs/ in the sandbox"
                )
        for c in self.children:
            if not c.alive():
                raise StackError(f"{c.name} exited; last lines of {c.log}:\n{c.tail()}")

    def stop(self) -> None:
        for c in reversed(self.children):
            c.stop()
        self.children.clear()
        if self.prometheus is not None:
            self.prometheus.stop()
            self.prometheus = None
        if self.kube is not None:
            self.kube.close()
            self.kube = None
        if self._sandbox is not None:
            self._sandbox.remove_user()
            if not self._was_up and not self.keep_sandbox and not self._sandbox.other_users():
                self._sandbox.down()
            self._sandbox = None

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- helpers for the demo and the tests --------------------------------------------------------------
    def isvc(self, namespace: str, name: str) -> Obj | None:
        return self.k().get("InferenceService", namespace, name)

    def router_url(self, namespace: str, name: str) -> str | None:
        """The InferenceService's stable endpoint (Service ``X``), through a ready router pod."""
        eps = self.k().ready_endpoints(namespace, names.public_service_name(name))
        return eps[0] if eps else None

    def prom_vector(self, promql: str, label: str = "pod") -> dict[str, float]:
        """An instant query's values keyed by one label."""
        return prom_by(self.prometheus_url, promql, label)

    def prom(self, promql: str) -> float | None:
        """Sum of an instant query's values; None when there is no series."""
        return prom_sum(self.prometheus_url, promql)
