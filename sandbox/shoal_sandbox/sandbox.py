"""The local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on loopback.

State lives in `$SHOAL_CACHE/sandbox/<name>/`: `pki/` (certificates, service-account keys), `etcd/` (data),
`kubeconfig` (admin), `kubeconfigs/` (per component), `logs/`, `procs/` (one JSON record per process) and
`config.json` (ports). Keeping the PKI and etcd data makes a warm `up` fast and keeps users' objects.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal_common.ports import free_port, is_server_port

from shoal_sandbox import health, kwok_nodes, procs, users
from shoal_sandbox.build import missing_binaries
from shoal_sandbox.certs import generate_pki, pki_complete
from shoal_sandbox.control_plane import SERVICE_CIDR, SERVICE_IP, Layout, component_argv
from shoal_sandbox.errors import SandboxError
from shoal_sandbox.kubeconfigs import KWOK_CONFIG, render_kubeconfig, write_if_changed
from shoal_sandbox.kwok_stages import write_kwok_stages
from shoal_sandbox.nodes import GpuNodeSpec
from shoal_sandbox.paths import state_root
from shoal_sandbox.port_plan import ports_to_choose

if TYPE_CHECKING:
    from shoal_sandbox.kube import SyncKube

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
# Components of earlier versions: a sandbox started by one is cleaned up by `up` and `down`.
RETIRED_COMPONENTS = ("pod-runner",)
NODE_MODES = ("kwok", "real")
_PORT_NAMES = ("etcd", "etcd-peer", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

Log = Callable[[str], None]


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None
    running: bool
    healthy: bool
    detail: str = ""


@dataclass
class Sandbox:
    """One named local control plane. `up()` is idempotent and safe to call from concurrent processes."""

    name: str = "default"
    nodes: GpuNodeSpec = field(default_factory=GpuNodeSpec)
    # Extra kwok flags and `--config` files (Stages, ...).
    # A running kwok started with a different command line is restarted by `up()`.
    kwok_args: Sequence[str] = ()
    kwok_configs: Sequence[Path] = ()
    log: Log = print
    # "real" (a kubelet node: shoal_sandbox.node) or "kwok" (fake nodes: pods are simulated, never run).
    node_mode: str = field(default_factory=lambda: os.environ.get("SHOAL_SANDBOX_NODE") or "real")

    def __post_init__(self) -> None:
        if self.node_mode not in NODE_MODES:
            raise SandboxError(
                f"unknown node mode {self.node_mode!r}; expected one of {', '.join(NODE_MODES)}"
            )

    # ---- paths -------------------------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return state_root() / self.name

    @property
    def kubeconfig_path(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def _pki(self) -> Path:
        return self.state_dir / "pki"

    @property
    def _mode_file(self) -> Path:
        return self.state_dir / "node-mode"

    def recorded_node_mode(self) -> str | None:
        """The node mode of the last `up` (None before the first), so `status` and `down` follow it."""
        try:
            mode = self._mode_file.read_text().strip()
        except OSError:
            return None
        return mode if mode in NODE_MODES else None

    def _proc_file(self, component: str) -> Path:
        return self.state_dir / "procs" / f"{component}.json"

    def _log_file(self, component: str) -> Path:
        return self.state_dir / "logs" / f"{component}.log"

    # ---- public API --------------------------------------------------------------------------------------
    def up(self, timeout: float = 120.0) -> float:
        """Starts whatever is not running and waits until the cluster is usable; returns seconds taken."""
        t0 = time.monotonic()
        missing = missing_binaries()
        if missing:
            raise SandboxError(f"binaries not built: {', '.join(missing)}; run `shoal sandbox build` first")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.lock():
            self._mode_file.write_text(self.node_mode)
            deadline = time.monotonic() + timeout
            started: list[tuple[str, procs.ProcRecord]] = []
            fresh_node = False
            try:
                fresh_node = self._prepare_real_node()
                self._up_locked(deadline, started)
            except BaseException:
                # Stop what this call started so a failed `up` leaves no strays; logs stay for diagnosis.
                if fresh_node:
                    self.real_node().stop_processes()
                for component, rec in reversed(started):
                    procs.stop(rec)
                    self._proc_file(component).unlink(missing_ok=True)
                if fresh_node:
                    self._restore_after_failed_up()
                raise
        took = time.monotonic() - t0
        self.log(f"sandbox {self.name!r} is up in {took:.1f}s; kubeconfig: {self.kubeconfig_path}")
        return took

    def down(self, purge: bool = False, *, locked: bool = False) -> None:
        """Stops every process this sandbox started; `purge` also deletes its state (certs, etcd data).

        `locked=True` when the caller already holds `lock()` (flock is not re-entrant across open files).
        """
        if not self.state_dir.exists():
            return
        with contextlib.nullcontext() if locked else self.lock():
            node = self.real_node()
            owns_node = node.owns_host()
            if owns_node:  # whatever the mode now: a node this sandbox started is always cleaned up
                node.stop_processes()
            for component in (*reversed(COMPONENTS), *RETIRED_COMPONENTS):
                self._stop_component(component, announce=True)
            if owns_node:
                node.restore_host()
            if purge:
                shutil.rmtree(self.state_dir, ignore_errors=True)
                self.log(f"removed {self.state_dir}")

    def is_up(self) -> bool:
        return all(s.running and s.healthy for s in self.status())

    def status(self) -> list[ComponentStatus]:
        ports = self._load_ports()
        result = []
        for component in COMPONENTS:
            rec = procs.load(self._proc_file(component))
            running = rec is not None and procs.is_alive(rec)
            healthy, detail = (False, "not running")
            if running and ports:
                healthy, detail = health.probe(component, ports[component], self._api_host(), self._pki)
            result.append(ComponentStatus(component, rec.pid if rec else None, running, healthy, detail))
        if self.node_mode == "real":
            result += [ComponentStatus(*row) for row in self.real_node().status()]
        return result

    def api_server_url(self) -> str:
        ports = self._load_ports()
        if not ports:
            raise SandboxError(f"sandbox {self.name!r} has never been started")
        return f"https://{self._api_host()}:{ports['kube-apiserver']}"

    # ---- the real node (shoal_sandbox.node) --------------------------------------------------------------
    def _api_host(self) -> str:
        """The real node's pods reach the API server on the bridge address, so it serves there instead."""
        from shoal_sandbox.node.config import NODE_IP

        return NODE_IP if self.node_mode == "real" else "127.0.0.1"

    def real_node(self) -> Any:
        """This sandbox's real node (`shoal_sandbox.node.RealNode`), whether or not it is running."""
        from shoal_sandbox.node import RealNode

        return RealNode(self.state_dir, SERVICE_CIDR, SERVICE_IP, gpus=self.nodes.gpus, log=self.log)

    def _restore_after_failed_up(self) -> None:
        from shoal_sandbox.node import NodeError

        try:
            self.real_node().restore_host()
        except NodeError as exc:  # the `up` error matters more; this one is only reported
            self.log(f"warning: {exc}")

    def _prepare_real_node(self) -> bool:
        from shoal_sandbox.node import NodeError

        if self.node_mode != "real":
            if self.real_node().owns_host():
                raise SandboxError(
                    f"sandbox {self.name!r} runs the real node; start it with `--node real` "
                    f"(or SHOAL_SANDBOX_NODE=real), or `shoal sandbox down --name {self.name}` first"
                )
            return False

        if not pki_complete(self._pki):
            self.log("generating certificates and service-account keys ...")
            generate_pki(self._pki, SERVICE_IP)
        try:
            return bool(self.real_node().prepare_host())
        except NodeError as exc:
            raise SandboxError(str(exc)) from exc

    # ---- users (so one pytest session does not stop a sandbox another session is using) ---------------
    def add_user(self, pid: int | None = None) -> None:
        users.add(self.state_dir / "users", pid)

    def remove_user(self, pid: int | None = None) -> None:
        users.remove(self.state_dir / "users", pid)

    def other_users(self) -> list[int]:
        return users.others(self.state_dir / "users")

    # ---- internals ---------------------------------------------------------------------------------------
    def lock(self, timeout: float = 300.0) -> contextlib.AbstractContextManager[None]:
        """An exclusive file lock: concurrent `up`s (two pytest sessions) wait instead of racing."""
        return users.exclusive(self.state_dir / "lock", timeout, self.log)

    def _up_locked(self, deadline: float, started: list[tuple[str, procs.ProcRecord]]) -> None:
        if not pki_complete(self._pki):
            self.log("generating certificates and service-account keys ...")
            generate_pki(self._pki, SERVICE_IP)
        ports = self._ensure_ports()
        self._write_kubeconfigs(ports)

        for component in RETIRED_COMPONENTS:
            self._stop_component(component, announce=True)
        for component in COMPONENTS:
            argv = self._argv(component, ports)
            rec = procs.running(self._proc_file(component))
            if rec is not None:
                if rec.argv == argv:
                    continue
                self.log(f"restarting {component}: its command line changed")
                self._stop_component(component)
            self.log(f"starting {component} ...")
            self._await_ports(component, ports, deadline)
            self._proc_file(component).parent.mkdir(parents=True, exist_ok=True)
            rec = procs.spawn(argv, self._log_file(component))
            started.append((component, rec))
            procs.save(rec, self._proc_file(component))
            # etcd must serve before the API server starts, and the API server before its clients.
            if component in ("etcd", "kube-apiserver"):
                self._wait_healthy(component, ports, deadline)
        for component in COMPONENTS[2:]:
            self._wait_healthy(component, ports, deadline)
        if self.node_mode == "real":
            self._up_real_node(ports, deadline)
        else:
            self._ensure_nodes(deadline)
        self._ensure_gateway_crds(deadline)

    def _ensure_gateway_crds(self, deadline: float) -> None:
        """InferencePool and the Gateway API CRDs, always (Gateway-mode tests and demos need them)."""
        from shoal_sandbox import gateway_crds

        try:
            paths = gateway_crds.all_paths()
        except (gateway_crds.CrdFetchError, OSError) as exc:  # no Go or no module proxy: the rest still works
            self.log(f"  Gateway API CRDs not installed: {exc}")
            return
        with self.api() as api:
            gateway_crds.install(api, paths, max(5.0, deadline - time.monotonic()), self.log)

    def _up_real_node(self, ports: dict[str, int], deadline: float) -> None:
        from shoal_sandbox.node import NodeError

        try:
            self.real_node().up(ports["kube-apiserver"], self.api, deadline)
        except NodeError as exc:
            raise SandboxError(str(exc)) from exc

    def _ensure_ports(self) -> dict[str, int]:
        """Ports are chosen once and kept, so kubeconfigs and etcd's peer URL stay stable across restarts."""
        ports = self._load_ports() or {}
        cold = not any(procs.running(self._proc_file(component)) for component in COMPONENTS)
        stale = ports_to_choose(ports, _PORT_NAMES, cold, self._port_busy, is_server_port)
        for port_name in stale:
            ports[port_name] = free_port(self._port_host(port_name))
        if stale:
            (self.state_dir / "config.json").write_text(json.dumps({"ports": ports}, indent=2))
        return ports

    def _port_host(self, port_name: str) -> str:
        return self._api_host() if port_name == "kube-apiserver" else "127.0.0.1"

    def _port_busy(self, port_name: str, port: int) -> bool:
        return not health.port_free(port, self._port_host(port_name))

    def _await_ports(self, component: str, ports: dict[str, int], deadline: float) -> None:
        """A component restarted right after a crash (SIGKILL) keeps its ports, which its dead process
        may still hold for a moment: it counts as dead once a zombie, while its other threads still close
        its files. So its ports must be free before it starts (it would exit with "address in use")."""
        for name in (n for n in _PORT_NAMES if n == component or n.startswith(f"{component}-")):
            host = self._port_host(name)
            if not health.wait_port_free(ports[name], host, min(60.0, deadline - time.monotonic())):
                raise self._failure(component, f"cannot start: {host}:{ports[name]} is still in use")

    def _load_ports(self) -> dict[str, int] | None:
        try:
            data = json.loads((self.state_dir / "config.json").read_text())
            return {str(k): int(v) for k, v in data["ports"].items()}
        except (OSError, ValueError, KeyError):
            return None

    def _write_kubeconfigs(self, ports: dict[str, int]) -> None:
        server = f"https://{self._api_host()}:{ports['kube-apiserver']}"
        pki = self._pki
        kdir = self.state_dir / "kubeconfigs"
        kdir.mkdir(exist_ok=True)
        for stem in ("controller-manager", "scheduler", "kwok"):
            write_if_changed(kdir / f"{stem}.kubeconfig", render_kubeconfig(server, pki, stem, embed=False))
        # The admin kubeconfig embeds its certificates so it still works when copied elsewhere.
        write_if_changed(self.kubeconfig_path, render_kubeconfig(server, pki, "admin", embed=True))
        write_if_changed(self.state_dir / "kwok.yaml", KWOK_CONFIG)
        # kwok uses its default pod stages only without a --config; ours has one, so they are written out.
        write_kwok_stages(self.state_dir / "kwok-pod-stages.yaml")

    def _argv(self, component: str, ports: dict[str, int]) -> list[str]:
        # SHOAL_SANDBOX_<COMPONENT>_ARGS (e.g. SHOAL_SANDBOX_KUBE_APISERVER_ARGS="--v=4") appends flags,
        # for debugging a component without editing code.
        env_name = "SHOAL_SANDBOX_" + component.upper().replace("-", "_") + "_ARGS"
        layout = Layout(
            self.state_dir,
            self._pki,
            ports,
            self._api_host(),
            self.node_mode,
            self.kwok_configs,
            self.kwok_args,
        )
        return [*component_argv(component, layout), *shlex.split(os.environ.get(env_name, ""))]

    # ---- health ------------------------------------------------------------------------------------------
    def _wait_healthy(self, component: str, ports: dict[str, int], deadline: float) -> None:
        rec = procs.load(self._proc_file(component))
        detail = ""
        while time.monotonic() < deadline:
            if rec is None or not procs.is_alive(rec):
                raise self._failure(component, "exited")
            ok, detail = health.probe(component, ports[component], self._api_host(), self._pki)
            if ok:
                self.log(f"  {component} healthy")
                return
            time.sleep(0.2)
        raise self._failure(component, f"not healthy in time ({detail})")

    def _failure(self, component: str, what: str) -> SandboxError:
        log = self._log_file(component)
        return SandboxError(f"{component} {what}; last lines of {log}:\n{procs.log_tail(log)}")

    def _stop_component(self, component: str, announce: bool = False) -> None:
        path = self._proc_file(component)
        rec = procs.load(path)
        if rec is None:
            return
        if procs.is_alive(rec):
            if announce:
                self.log(f"stopping {component} (pid {rec.pid}) ...")
            procs.stop(rec)
        path.unlink(missing_ok=True)

    # ---- nodes -------------------------------------------------------------------------------------------
    def api(self) -> SyncKube:
        """The sandbox admin's client (kubernetes_asyncio underneath) for small calls without kubectl; close
        it, or use it as a context manager."""
        from shoal_sandbox.kube import SyncKube  # imported when needed: `shoal sandbox status` stays quick

        return SyncKube(self.kubeconfig_path, timeout=10.0)

    def _ensure_nodes(self, deadline: float) -> None:
        with self.api() as api:
            pending = kwok_nodes.ensure_ready(api, self.nodes, deadline)
        if pending:
            raise self._failure("kwok", f"did not make nodes {pending} Ready in time")
        self.log(f"  {self.nodes.count} GPU nodes Ready ({self.nodes.gpus} x nvidia.com/gpu each)")
