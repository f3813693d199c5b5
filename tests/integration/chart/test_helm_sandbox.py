"""The chart against the sandbox's real API server: install, least privilege (`kubectl auth can-i --as`),
the operator running with a token of the chart's ServiceAccount (not admin) reconciling an
InferenceService to Ready, upgrade, and uninstall keeping the CRDs (Helm's convention)."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from shoal_sandbox.cluster import ClusterStack as Stack
from shoal_sandbox.cluster_manifests import image_values
from shoal_sandbox.images.index import read_index
from shoal_sandbox.paths import cache_dir
from support.eventually import eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "shoal"


@dataclass
class Proc:
    """A child process of this test (its own process group), stopped with SIGTERM then SIGKILL."""

    proc: subprocess.Popen[bytes]
    log: Path

    @classmethod
    def start(cls, argv: list[str], log: Path, env: dict[str, str]) -> Proc:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        return cls(proc, log)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Release:
    name: str
    namespace: str  # the release's (and the operator's ServiceAccount's) namespace
    app_namespace: str  # the namespace the operator watches
    kubeconfig: Path  # admin
    workdir: Path
    helm_bin: str
    kubectl_bin: str
    operator: Proc | None = None
    metrics_port: int = 0
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def service_account(self) -> str:
        return f"{self.name}-shoal-operator" if "shoal" not in self.name else f"{self.name}-operator"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(self.workdir / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(self.workdir / "helm" / "config"),
            "HELM_DATA_HOME": str(self.workdir / "helm" / "data"),
        }

    def helm(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.helm_bin, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            check=False,
        )
        if check:
            assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=120,
            input=stdin,
            env=self.env(),
            check=False,
        )
        if check:
            assert proc.returncode == 0, f"kubectl {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc

    def can_i(self, *args: str) -> bool:
        sa = f"system:serviceaccount:{self.namespace}:{self.service_account}"
        groups = [
            "system:serviceaccounts",
            f"system:serviceaccounts:{self.namespace}",
            "system:authenticated",
        ]
        argv = ["auth", "can-i", *args, f"--as={sa}", *(f"--as-group={g}" for g in groups)]
        proc = self.kubectl(*argv, check=False)
        answer = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        assert answer in {"yes", "no"}, f"kubectl {' '.join(argv)}: {proc.stdout}{proc.stderr}"
        return answer == "yes"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _isvc(rel: Release, namespace: str, name: str) -> dict[str, Any] | None:
    proc = rel.kubectl(
        "get", "infsvc", name, "-n", namespace, "-o", "json", "--ignore-not-found", check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def _condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


@pytest.fixture(scope="module")
def paused_operator(stack: Stack) -> Iterator[None]:
    """The shared stack's cluster-wide operator would reconcile these releases' namespaces too."""
    with stack.operator_paused():
        yield


@pytest.fixture(scope="module")
def release(
    stack: Stack,
    paused_operator: None,
    tmp_path_factory: pytest.TempPathFactory,
    helm_bin: str,
    kubectl_bin: str,
) -> Iterator[Release]:
    suffix = uuid.uuid4().hex[:5]
    rel = Release(
        name=f"it{suffix}",
        namespace=f"shoal-system-{suffix}",
        app_namespace=f"chart-app-{suffix}",
        kubeconfig=stack.kubeconfig,
        workdir=tmp_path_factory.mktemp("chart-it"),
        helm_bin=helm_bin,
        kubectl_bin=kubectl_bin,
    )
    rel.kubectl("create", "namespace", rel.app_namespace)
    values = {
        # The operator runs as a local process below (with this ServiceAccount's token), not as a pod.
        "operator": {"replicas": 0, "watchNamespaces": [rel.app_namespace], "logLevel": "INFO"},
        "rbac": {"apiKeySecrets": [{"namespace": rel.app_namespace, "names": ["chat-keys"]}]},
        "autoscaler": {"prometheusUrl": stack.prometheus_url or "http://127.0.0.1:9"},
        "images": image_values(read_index(cache_dir() / "images")),  # the node runs what was built here
    }
    values_file = rel.workdir / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    rel.extra["values_file"] = values_file
    try:
        yield rel
    finally:
        if rel.operator is not None:
            rel.operator.stop()
        rel.helm("uninstall", rel.name, "-n", rel.namespace, "--wait", check=False)
        for ns in (rel.app_namespace, rel.namespace):
            rel.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def test_helm_install(release: Release) -> None:
    rel = release
    proc = rel.helm(
        "install",
        rel.name,
        str(CHART),
        "-n",
        rel.namespace,
        "--create-namespace",
        "-f",
        str(rel.extra["values_file"]),
        "--wait",
        "--timeout",
        "120s",
    )
    rel.notes = proc.stdout
    status = json.loads(rel.helm("status", rel.name, "-n", rel.namespace, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"
    assert status["version"] == 1
    # The CRDs are served (installed by this release, or already there: Helm leaves existing CRDs alone).
    rel.kubectl("get", "crd", "inferenceservices.shoal.dev")
    eventually(
        lambda: rel.kubectl("get", "infsvc", "-n", rel.app_namespace, check=False).returncode == 0,
        timeout=30,
        desc="the InferenceService API to be served",
    )
    rel.kubectl("get", "serviceaccount", rel.service_account, "-n", rel.namespace)
    rel.kubectl("get", "role", f"{rel.service_account}", "-n", rel.app_namespace)


def test_notes_example_is_a_valid_inferenceservice(release: Release) -> None:
    match = re.search(r"<<'YAML'\n(.*?)\n\s*YAML", release.notes, re.S)
    assert match, release.notes
    manifest = "\n".join(line[5:] for line in match.group(1).splitlines())
    release.kubectl("apply", "--dry-run=server", "-n", release.app_namespace, "-f", "-", stdin=manifest)


def test_least_privilege_can_i(release: Release) -> None:
    rel = release
    app, other = rel.app_namespace, "kube-system"
    # What it needs, in the namespace it serves.
    for args in (
        ("watch", "inferenceservices.shoal.dev"),
        ("patch", "inferenceservices.shoal.dev", "--subresource=status"),
        ("update", "inferenceservices.shoal.dev", "--subresource=scale"),
        ("create", "deployments.apps"),
        ("delete", "poddisruptionbudgets.policy"),
        ("create", "roles.rbac.authorization.k8s.io"),
        ("list", "endpointslices.discovery.k8s.io"),
        ("create", "events"),
        ("get", "secrets/chat-keys"),
    ):
        assert rel.can_i(*args, "-n", app), args
    assert rel.can_i(
        "update", "leases.coordination.k8s.io/" + f"{rel.service_account}-leader", "-n", rel.namespace
    )
    # What it must not do.
    for args in (
        ("get", "secrets", "-n", app),  # only the named Secret
        ("get", "secrets/other", "-n", app),
        ("list", "secrets", "--all-namespaces"),
        ("get", "secrets", "-n", other),
        ("get", "secrets", "-n", rel.namespace),
        ("create", "deployments.apps", "-n", other),  # only the watched namespace
        ("list", "inferenceservices.shoal.dev", "--all-namespaces"),
        ("delete", "nodes"),
        ("create", "pods", "-n", app),
        ("create", "clusterrolebindings"),
        ("escalate", "roles", "-n", app),
        ("bind", "clusterroles"),
        ("impersonate", "serviceaccounts", "-n", app),
        ("delete", "customresourcedefinitions"),
        ("update", "inferenceservices.shoal.dev", "-n", app),  # never writes the spec
        ("update", "leases.coordination.k8s.io/other", "-n", rel.namespace),
    ):
        assert not rel.can_i(*args), args


def _sa_kubeconfig(rel: Release) -> Path:
    """A kubeconfig holding a token of the chart's ServiceAccount (TokenRequest API), not admin credentials."""
    token = rel.kubectl(
        "create", "token", rel.service_account, "-n", rel.namespace, "--duration=2h"
    ).stdout.strip()
    admin = yaml.safe_load(rel.kubeconfig.read_text())
    ctx_name = admin["current-context"]
    ctx = next(c for c in admin["contexts"] if c["name"] == ctx_name)["context"]
    cluster = copy.deepcopy(next(c for c in admin["clusters"] if c["name"] == ctx["cluster"])["cluster"])
    ca = cluster.get("certificate-authority")
    if ca and not Path(ca).is_absolute():
        cluster["certificate-authority"] = str((rel.kubeconfig.parent / ca).resolve())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": cluster}],
        "users": [{"name": rel.service_account, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "sandbox", "user": rel.service_account}}],
        "current-context": "operator",
    }
    path = rel.workdir / "operator-kubeconfig.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    who = subprocess.run(
        [
            rel.kubectl_bin,
            "--kubeconfig",
            str(path),
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert who.stdout == f"system:serviceaccount:{rel.namespace}:{rel.service_account}", who.stderr
    return path


def _operator_env(rel: Release, kubeconfig: Path) -> dict[str, str]:
    """The operator container's environment exactly as the chart renders it, plus local overrides."""
    manifest = rel.helm("get", "manifest", rel.name, "-n", rel.namespace).stdout
    dep = next(
        d
        for d in yaml.safe_load_all(manifest)
        if d and d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")
    )
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["shoal", "operator"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    rel.metrics_port = _free_port()
    env.update(
        {
            "POD_NAME": f"{rel.name}-operator-local",
            "SHOAL_KUBECONFIG": str(kubeconfig),
            "KUBECONFIG": str(kubeconfig),
            "SHOAL_METRICS_HOST": "127.0.0.1",
            "SHOAL_METRICS_PORT": str(rel.metrics_port),
            "SHOAL_HEALTH_PORT": "0",
        }
    )
    return env


def _sim_isvc(namespace: str) -> dict[str, Any]:
    isvc: dict[str, Any] = yaml.safe_load((REPO / "examples" / "inferenceservice-sim.yaml").read_text())
    isvc["metadata"] = {"name": "chat", "namespace": namespace}
    spec = isvc["spec"]
    spec.setdefault("engine", {}).setdefault("sim", {})["startupSeconds"] = 1
    spec["autoscaling"]["minReplicas"] = 1
    # A router that checks API keys: the operator must grant its Role `get` on this one Secret, which it
    # can only do because the chart gave the operator exactly that (rbac.apiKeySecrets).
    spec.setdefault("routing", {})["apiKeysSecret"] = "chat-keys"
    return isvc


def test_operator_as_chart_serviceaccount_reconciles_to_ready(release: Release) -> None:
    rel = release
    help_proc = subprocess.run(
        [sys.executable, "-m", "shoal_cli", "operator", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert help_proc.returncode == 0, f"`shoal operator --help` failed: {help_proc.stderr[-300:]}"
    kubeconfig = _sa_kubeconfig(rel)
    env = _operator_env(rel, kubeconfig)
    rel.operator = Proc.start(
        [sys.executable, "-m", "shoal_cli", "operator"], rel.workdir / "operator.log", env
    )
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "chat-keys", "namespace": rel.app_namespace},
        "data": {"ci": base64.b64encode(b"sk-chart-test").decode()},
    }
    rel.kubectl("apply", "-f", "-", stdin=json.dumps(secret))
    rel.kubectl("apply", "-f", "-", stdin=json.dumps(_sim_isvc(rel.app_namespace)))

    def ready() -> dict[str, Any] | None:
        if rel.operator is None or rel.operator.proc.poll() is not None:
            raise RuntimeError(f"the operator exited:\n{rel.operator.tail() if rel.operator else ''}")
        obj = _isvc(rel, rel.app_namespace, "chat")
        return obj if _condition(obj, "Ready").get("status") == "True" else None

    try:
        obj = eventually(ready, timeout=300, interval=1.0, desc="InferenceService chat to be Ready")
    except AssertionError:
        isvc = _isvc(rel, rel.app_namespace, "chat")
        status = json.dumps((isvc or {}).get("status"), indent=1)
        log = rel.operator.tail(60) if rel.operator else ""
        raise AssertionError(f"not Ready; status: {status}\noperator log:\n{log}") from None
    assert obj["status"]["url"] == f"http://chat.{rel.app_namespace}.svc.cluster.local"
    # The router's Role was created by the operator, with the one Secret and nothing more.
    role = json.loads(rel.kubectl("get", "role", "chat-router", "-n", rel.app_namespace, "-o", "json").stdout)
    secret_rules = [r for r in role["rules"] if "secrets" in r.get("resources", [])]
    assert secret_rules and all(r.get("resourceNames") == ["chat-keys"] for r in secret_rules)
    # This operator (not some other one sharing the sandbox) did the work, and was never refused.
    metrics = httpx.get(f"http://127.0.0.1:{rel.metrics_port}/metrics", timeout=10).text
    ok = re.search(r'^shoal_operator_reconcile_total\{result="ok"\} ([0-9.e+]+)$', metrics, re.M)
    assert ok and float(ok.group(1)) >= 1, metrics
    log = rel.operator.log.read_text(errors="replace")
    if "autoscaler not available" not in log:
        # The autoscaler runs under the leader Lease, the one Lease the chart lets the operator touch.
        def lease_holder() -> str:
            proc = rel.kubectl(
                "get", "lease", f"{rel.service_account}-leader", "-n", rel.namespace,
                "-o", "jsonpath={.spec.holderIdentity}", check=False,
            )  # fmt: skip
            return proc.stdout.strip()

        holder = eventually(lease_holder, timeout=60, interval=1.0, desc="the autoscaler's leader Lease")
        assert holder == f"{rel.name}-operator-local"
        log = rel.operator.log.read_text(errors="replace")
    assert "Forbidden" not in log and " 403" not in log, rel.operator.tail(60)


def test_helm_upgrade(release: Release) -> None:
    rel = release
    rel.helm(
        "upgrade",
        rel.name,
        str(CHART),
        "-n",
        rel.namespace,
        "--reuse-values",
        "--set",
        "operator.logLevel=DEBUG",
        "--wait",
    )
    status = json.loads(rel.helm("status", rel.name, "-n", rel.namespace, "-o", "json").stdout)
    assert status["version"] == 2 and status["info"]["status"] == "deployed"
    dep = json.loads(
        rel.kubectl("get", "deployment", rel.service_account, "-n", rel.namespace, "-o", "json").stdout
    )
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SHOAL_LOG_LEVEL"] == "DEBUG"
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    # A bad value is refused before anything changes, with the schema's message.
    bad = rel.helm(
        "upgrade",
        rel.name,
        str(CHART),
        "-n",
        rel.namespace,
        "--reuse-values",
        "--set",
        "operator.replicas=3",
        check=False,
    )
    assert bad.returncode != 0
    assert "at '/operator/replicas': value must be one of 0, 1" in bad.stderr
    history = json.loads(rel.helm("history", rel.name, "-n", rel.namespace, "-o", "json").stdout)
    assert history[-1]["revision"] == 2 and history[-1]["status"] == "deployed"


def test_helm_uninstall_keeps_crds_and_inferenceservices(release: Release) -> None:
    rel = release
    # Stop the operator first, so the InferenceService below is never reconciled.
    if rel.operator is not None:
        rel.kubectl("delete", "infsvc", "chat", "-n", rel.app_namespace, "--wait=true", "--timeout=120s")
        rel.operator.stop()
        rel.operator = None
    survivor = {
        "apiVersion": "shoal.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "survivor", "namespace": rel.app_namespace},
        "spec": {"model": {"name": "m", "uri": "hf://org/m"}, "engine": {"kind": "sim"}},
    }
    rel.kubectl("apply", "-f", "-", stdin=json.dumps(survivor))
    rel.helm("uninstall", rel.name, "-n", rel.namespace, "--wait")
    assert rel.kubectl("get", "clusterrole", rel.service_account, check=False).returncode != 0
    assert (
        rel.kubectl("get", "serviceaccount", rel.service_account, "-n", rel.namespace, check=False).returncode
        != 0
    )
    rel.kubectl("get", "crd", "inferenceservices.shoal.dev")  # CRDs stay (Helm never deletes crds/)
    assert _isvc(rel, rel.app_namespace, "survivor") is not None
    rel.kubectl("delete", "infsvc", "survivor", "-n", rel.app_namespace, "--wait=true", "--timeout=60s")


def test_clusterwide_install_cannot_read_secrets(
    stack: Stack, tmp_path: Path, helm_bin: str, kubectl_bin: str
) -> None:
    suffix = uuid.uuid4().hex[:5]
    rel = Release(
        name=f"cw{suffix}",
        namespace=f"shoal-cw-{suffix}",
        app_namespace="default",
        kubeconfig=stack.kubeconfig,
        workdir=tmp_path,
        helm_bin=helm_bin,
        kubectl_bin=kubectl_bin,
    )
    rel.helm(
        "install",
        rel.name,
        str(CHART),
        "-n",
        rel.namespace,
        "--create-namespace",
        "--set",
        "operator.replicas=0",
        "--wait",
    )
    try:
        assert rel.can_i("create", "deployments.apps", "-n", "default")
        assert rel.can_i("list", "inferenceservices.shoal.dev", "--all-namespaces")
        assert rel.can_i("patch", "clusterkopfpeerings.kopf.dev")
        for args in (
            ("get", "secrets", "-n", "default"),
            ("list", "secrets", "--all-namespaces"),
            ("watch", "secrets", "--all-namespaces"),
            ("delete", "nodes"),
            ("create", "pods", "-n", "default"),
            ("update", "clusterroles"),
            ("escalate", "roles", "-n", "default"),
            ("bind", "roles", "-n", "default"),
            ("create", "customresourcedefinitions"),
            ("delete", "namespaces"),
        ):
            assert not rel.can_i(*args), args
    finally:
        rel.helm("uninstall", rel.name, "-n", rel.namespace, "--wait", check=False)
        rel.kubectl("delete", "namespace", rel.namespace, "--wait=false", "--ignore-not-found", check=False)


def test_chart_operator_pod_reconciles(
    stack: Stack, paused_operator: None, tmp_path: Path, helm_bin: str, kubectl_bin: str
) -> None:
    """A namespaced release's operator pod (the chart's Deployment, from the operator image, under the
    kubelet, with the ServiceAccount's token and per-namespace RBAC) reconciles an InferenceService in the
    namespace it watches, to Ready pods."""
    suffix = uuid.uuid4().hex[:5]
    rel = Release(
        name=f"pod{suffix}",
        namespace=f"shoal-pod-{suffix}",
        app_namespace=f"chart-pod-app-{suffix}",
        kubeconfig=stack.kubeconfig,
        workdir=tmp_path,
        helm_bin=helm_bin,
        kubectl_bin=kubectl_bin,
    )
    stack.namespace(rel.app_namespace)  # enforces the `restricted` Pod Security Standard
    values = {
        "operator": {"replicas": 1, "watchNamespaces": [rel.app_namespace]},
        "autoscaler": {"prometheusUrl": stack.prometheus_url or "http://127.0.0.1:9"},
        "images": image_values(read_index(cache_dir() / "images")),
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    try:
        rel.helm(
            "install",
            rel.name,
            str(CHART),
            "-n",
            rel.namespace,
            "--create-namespace",
            "-f",
            str(tmp_path / "values.yaml"),
            "--wait",
            "--timeout",
            "180s",
        )
        isvc = {
            "apiVersion": "shoal.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "podchat", "namespace": rel.app_namespace},
            "spec": {
                "model": {"name": "podchat", "uri": "hf://org/podchat"},
                "engine": {"kind": "sim", "sim": {"startupSeconds": 1}},
                "routing": {"mode": "Service"},
            },
        }
        rel.kubectl("apply", "-f", "-", stdin=json.dumps(isvc))

        def ready() -> bool:
            return _condition(_isvc(rel, rel.app_namespace, "podchat"), "Ready").get("status") == "True"

        try:
            eventually(ready, timeout=240, interval=1.0, desc="podchat Ready (chart's operator pod)")
        except AssertionError:
            pods = rel.kubectl("get", "pods", "-n", rel.namespace, "-o", "wide", check=False).stdout
            status = json.dumps((_isvc(rel, rel.app_namespace, "podchat") or {}).get("status"), indent=1)
            raise AssertionError(f"not Ready; status: {status}\noperator pods:\n{pods}") from None
    finally:
        rel.helm("uninstall", rel.name, "-n", rel.namespace, "--wait", check=False)
        for ns in (rel.app_namespace, rel.namespace):
            rel.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)
