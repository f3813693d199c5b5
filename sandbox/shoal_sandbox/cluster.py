"""The closed loop as it runs in a cluster, on the sandbox's real node (kubelet + containerd + runc):

- shoal's images, built locally (`shoal images build`) and imported into the node's containerd;
- the operator as a pod, installed by the Helm chart with its ServiceAccount and RBAC, in a namespace that
  enforces the `restricted` Pod Security Standard;
- Prometheus (the pinned build) discovering pods with `kubernetes_sd_configs`, on the node's bridge
  address so the operator's autoscaler reaches it from the pod network;
- routers and model-servers as pods the operator makes; the router discovers through EndpointSlices;
- clients reach an InferenceService through its Service's ClusterIP (kube-proxy), as in-cluster clients do;
- the converted models on a static PersistentVolume, as ``pvc://models/<name>``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from shoal_common import names

from shoal_sandbox import cluster_manifests as manifests
from shoal_sandbox.images.index import read_index
from shoal_sandbox.kube import ApiError, SyncKube
from shoal_sandbox.paths import bin_dir, cache_dir
from shoal_sandbox.prometheus import PrometheusServer
from shoal_sandbox.stack_support import (
    REPO,
    Log,
    Obj,
    StackError,
    bounded_wait,
    condition,
    install_crds,
    models_dir,
    prom_by,
    prom_sum,
)

OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"


@dataclass
class ClusterStack:
    """Real-node sandbox + CRD + Prometheus (kubernetes_sd) + the chart's operator; stopped in reverse.

    The sandbox is left running if it was already up (or ``keep_sandbox``), else taken down at the end."""

    sandbox_name: str = "default"
    autoscaler_period_s: float = 2.0
    drift_period_s: float = 10.0
    scrape_interval_s: float = 1.0
    keep_sandbox: bool = False
    log: Log = print
    # set by start()
    kubeconfig: Path = Path()
    kube: SyncKube | None = None
    prometheus: PrometheusServer | None = None
    _sandbox: Any = None
    _was_up: bool = True
    _volumes: list[str] = field(default_factory=list)
    _api_key_secrets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def prometheus_url(self) -> str:
        return self.prometheus.url if self.prometheus else ""

    @property
    def state_dir(self) -> Path:
        assert self._sandbox is not None, "stack not started"
        path: Path = self._sandbox.state_dir / "cluster"
        return path

    def k(self) -> SyncKube:
        assert self.kube is not None, "stack not started"
        return self.kube

    # ---- up and down -------------------------------------------------------------------------------------
    def start(self) -> ClusterStack:
        from shoal_sandbox.sandbox import Sandbox

        if os.geteuid() != 0:
            raise StackError("the real node needs root (see docs/sandbox.md)")
        try:
            self._sandbox = Sandbox(name=self.sandbox_name, node_mode="real", log=self.log)
            self._was_up = self._sandbox.is_up()
            self._sandbox.up(timeout=900)  # the first up imports the images (GBs) into containerd
            self._sandbox.add_user()
            self.kubeconfig = self._sandbox.kubeconfig_path
            self.kube = SyncKube(self.kubeconfig, field_manager="shoal-sandbox")
            install_crds(self.k(), self.log)
            if not self._sandbox.other_users():
                self._delete_leftover_namespaces()
            self._start_prometheus()
            self.install_operator()
        except BaseException:
            self.stop()
            raise
        return self

    def _delete_leftover_namespaces(self) -> None:
        """Namespaces of earlier stacks whose process died before deleting them (a killed test session):
        their pods would hold the node's GPUs and skew the next run. Only when no other process uses the
        sandbox, so nobody's live namespace goes."""
        selector = f"{manifests.STACK_NAMESPACE_LABEL}=true"
        for ns in self.k().list("Namespace", None, selector):
            name = ns["metadata"]["name"]
            self.log(f"deleting namespace {name}, left by an earlier run")
            self.delete_namespace(name)

    def _start_prometheus(self) -> None:
        from shoal_sandbox.node.config import NODE_IP

        self.log("starting Prometheus (kubernetes_sd: pods annotated prometheus.io/scrape) ...")
        self.prometheus = PrometheusServer(
            self.state_dir / "prometheus", self.kubeconfig, NODE_IP, self.scrape_interval_s
        ).start()

    def install_operator(self) -> None:
        """`helm upgrade --install` of charts/shoal with the locally built images; waits for the pod."""
        index = read_index(cache_dir() / "images")
        try:
            values = manifests.operator_values(
                index, self.prometheus_url, self.autoscaler_period_s, self.drift_period_s
            )
        except manifests.ImagesMissing as exc:
            raise StackError(str(exc)) from exc
        values["rbac"] = {"apiKeySecrets": self._api_key_secrets}
        self.k().apply(manifests.namespace(manifests.RELEASE_NAMESPACE))
        self.log(f"installing the chart (operator {values['images']['operator']['tag']}) ...")
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            yaml.safe_dump(values, f)
            f.flush()
            self.helm(
                "upgrade", "--install", manifests.RELEASE, str(REPO / "charts" / "shoal"),
                "--namespace", manifests.RELEASE_NAMESPACE, "--values", f.name,
                "--wait", "--timeout", "5m",
            )  # fmt: skip
        self.log("operator running (a pod of the chart's Deployment)")

    def allow_api_keys(self, namespace: str, secrets: list[str]) -> None:
        """Lets the operator grant routers read access to these API-key Secrets, through the chart's
        `rbac.apiKeySecrets` (a `helm upgrade`), as a platform team would: it holds no Secrets otherwise."""
        self._api_key_secrets.append({"namespace": namespace, "names": secrets})
        self.install_operator()

    @contextlib.contextmanager
    def operator_paused(self) -> Iterator[None]:
        """Scales the chart's operator to 0 for a while (tests that run an operator of their own on the same
        cluster), and back to 1 after, waiting for each."""
        kube, ns = self.k(), manifests.RELEASE_NAMESPACE
        deployment = f"{manifests.RELEASE}-operator"
        kube.patch_merge("Deployment", ns, deployment, {"spec": {"replicas": 0}})
        bounded_wait(lambda: not kube.list("Pod", ns, OPERATOR_SELECTOR), 120, "the operator pod to stop")
        try:
            yield
        finally:
            kube.patch_merge("Deployment", ns, deployment, {"spec": {"replicas": 1}})
            bounded_wait(self.operator_ready, 180, "the operator pod to be ready again")

    def operator_ready(self) -> bool:
        pods = self.k().list("Pod", manifests.RELEASE_NAMESPACE, OPERATOR_SELECTOR)
        return any(condition(p, "Ready") for p in pods)

    def helm(self, *args: str, timeout: float = 360) -> str:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(self.state_dir / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(self.state_dir / "helm" / "config"),
            "HELM_DATA_HOME": str(self.state_dir / "helm" / "data"),
        }
        argv = [str(bin_dir() / "helm"), *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        if proc.returncode != 0:
            raise StackError(f"helm {' '.join(args[:2])} failed:\n{proc.stderr[-2000:]}")
        return proc.stdout

    def stop(self) -> None:
        if self.prometheus is not None:
            self.prometheus.stop()
            self.prometheus = None
        if self.kube is not None:
            for pv in self._volumes:
                self.kube.delete("PersistentVolume", None, pv)
            self._volumes.clear()
            self.kube.close()
            self.kube = None
        if self._sandbox is not None:
            self._sandbox.remove_user()
            if not self._was_up and not self.keep_sandbox and not self._sandbox.other_users():
                self._sandbox.down()
            self._sandbox = None

    def __enter__(self) -> ClusterStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- for the demo and the tests ----------------------------------------------------------------------
    def namespace(self, name: str, *, ephemeral: bool = True) -> None:
        """A namespace enforcing the `restricted` Pod Security Standard, with the models claim bound.
        `ephemeral` (this run's only): a later stack deletes it if this process dies without doing so."""
        kube = self.k()
        kube.apply(manifests.namespace(name, ephemeral=ephemeral))
        models = models_dir()
        _make_world_readable(models)
        pv, pvc = manifests.models_volume(name, str(models))
        kube.apply(pv)
        kube.apply(pvc)
        self._volumes.append(pv["metadata"]["name"])

    def delete_namespace(self, name: str) -> None:
        self.k().delete("Namespace", None, name)
        pv = f"shoal-models-{name}"
        self.k().delete("PersistentVolume", None, pv)
        if pv in self._volumes:
            self._volumes.remove(pv)

    def isvc(self, namespace: str, name: str) -> Obj | None:
        return self.k().get("InferenceService", namespace, name)

    def router_url(self, namespace: str, name: str) -> str | None:
        """The InferenceService's Service ``X`` at its ClusterIP, once its EndpointSlices list a ready router."""
        kube = self.k()
        service = names.public_service_name(name)
        svc = kube.get("Service", namespace, service)
        if svc is None or not svc["spec"].get("clusterIP"):
            return None
        slices = kube.list("EndpointSlice", namespace, f"kubernetes.io/service-name={service}")
        ready = [
            e for s in slices for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")
        ]
        if not ready:
            return None
        port = int(svc["spec"]["ports"][0]["port"])
        url = f"http://{svc['spec']['clusterIP']}" + ("" if port == 80 else f":{port}")
        # kube-proxy programs the Service a moment after the EndpointSlice changes (until then the
        # ClusterIP refuses connections): the URL counts once a request through it reaches a router.
        try:
            return url if httpx.get(f"{url}/readyz", timeout=3).status_code == 200 else None
        except httpx.HTTPError:
            return None

    def check_children(self) -> None:
        """Raises when the operator's pod or Prometheus is gone (the demo and tests fail fast on it)."""
        if self.prometheus is None or not self.prometheus.alive():
            raise StackError("Prometheus is not running")
        if not self.operator_ready():
            raise StackError(f"no ready operator pod in {manifests.RELEASE_NAMESPACE}")

    def restart_control_plane(self, component: str) -> None:
        """SIGKILLs one control-plane process (etcd, kube-apiserver ...), as a crash would, then brings it back
        with `up` (which restarts whatever is not running)."""
        from shoal_sandbox import procs

        assert self._sandbox is not None, "stack not started"
        rec = procs.load(self._sandbox.state_dir / "procs" / f"{component}.json")
        if rec is None or not procs.is_alive(rec):
            raise StackError(f"{component} is not running")
        os.kill(rec.pid, signal.SIGKILL)
        bounded_wait(lambda: not procs.is_alive(rec), 30, f"{component} to exit", 0.1)
        self._sandbox.up(timeout=180)

    def pause_prometheus(self, seconds: float) -> None:
        """Stops Prometheus for `seconds`, then starts it again on the same port with the same data."""
        assert self.prometheus is not None, "stack not started"
        self.prometheus.stop()
        time.sleep(seconds)
        self.prometheus.start()

    def kill_container(self, pod: Obj, container: str) -> None:
        """SIGKILLs one container's process through the node's containerd (as an OOM kill or a crash would)."""
        statuses = pod.get("status", {}).get("containerStatuses") or []
        cid = next((s.get("containerID", "") for s in statuses if s["name"] == container), "")
        if not cid.startswith("containerd://"):
            raise StackError(f"{pod['metadata']['name']} has no running {container} container")
        socket = self._sandbox.real_node().paths.containerd_socket
        argv = [
            "ctr",
            "--address",
            str(socket),
            "--namespace",
            "k8s.io",
            "tasks",
            "kill",
            "--signal",
            "SIGKILL",
        ]
        proc = subprocess.run(
            [*argv, cid.removeprefix("containerd://")], capture_output=True, text=True, timeout=30
        )
        if proc.returncode != 0:
            raise StackError(f"killing {container} failed: {proc.stderr.strip()}")

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        """A container's log through the API server and the kubelet (as `kubectl logs`)."""
        try:
            return self.k().pod_log(namespace, pod, container)
        except ApiError as exc:
            return f"(no log: {exc})"

    def prom_vector(self, promql: str, label: str = "pod") -> dict[str, float]:
        return prom_by(self.prometheus_url, promql, label)

    def prom(self, promql: str) -> float | None:
        return prom_sum(self.prometheus_url, promql)


def _make_world_readable(root: Path) -> None:
    """Pods run as uid 10001, not as the user who converted the models: files 0644, folders 0755."""
    if not root.is_dir():
        raise StackError(f"{root} does not exist: run `shoal model prepare smollm2`")
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        wanted = mode | (0o755 if path.is_dir() else 0o644)
        if wanted != mode:
            path.chmod(wanted)
