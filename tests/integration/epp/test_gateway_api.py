"""Gateway mode against the sandbox's real API server with the real CRDs (from the pinned Go modules):
the operator's InferencePool is accepted, an HTTPRoute whose backendRef is the pool validates, and the
operator reports a clear condition while the InferencePool CRD is absent."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from shoal_common import processes
from support.eventually import eventually
from support.kubectl import Kubectl, KubectlError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
POOL_CRD = "inferencepools.inference.networking.k8s.io"


def _isvc(name: str, routing: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "shoal.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "tiny", "uri": "hf://org/tiny"},
            "engine": {"kind": "sim"},
            "resources": {"gpus": 1, "cpu": "100m", "memory": "256Mi"},
            "routing": routing,
        },
    }


def _get(k: Kubectl, kind: str, name: str) -> dict[str, Any] | None:
    out = k.run("get", kind, name, "--ignore-not-found", "-o", "json")
    return json.loads(out) if out.strip() else None


def _condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions", []) or []:
        if c.get("type") == type_:
            return dict(c)
    return None


@pytest.fixture(scope="module")
def gw_kubectl(sandbox_kubeconfig: Path) -> Kubectl:
    k = Kubectl(sandbox_kubeconfig)
    k.run("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    k.run("wait", "--for=condition=Established", "--timeout=60s", "crd/inferenceservices.shoal.dev")
    k.run("wait", "--for=condition=Established", "--timeout=60s", f"crd/{POOL_CRD}")
    return k


@pytest.fixture
def operator(gw_kubectl: Kubectl, namespace: str, tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "operator.log"
    argv = [sys.executable, "-m", "shoal_cli", "operator", "--kubeconfig", str(gw_kubectl.kubeconfig)]
    argv += ["--namespace", namespace, "--drift-period", "2", "--metrics-port", "0", "--no-autoscaler"]
    proc = processes.spawn(argv, log, cwd=ROOT)
    try:
        yield log
    finally:
        processes.stop(proc, timeout=20)
        print("--- operator log tail ---\n" + processes.log_tail(log, 3000))


def _route(name: str, pool: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "inference-gateway"},
            "spec": {
                "gatewayClassName": "envoy",
                "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}],
            },
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": name},
            "spec": {
                "parentRefs": [{"name": "inference-gateway"}],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                        "backendRefs": [
                            {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": pool}
                        ],
                    }
                ],
            },
        },
    ]


def test_operator_renders_a_pool_the_api_server_accepts(gw_kubectl: Kubectl, namespace: str, operator: Path):
    k = gw_kubectl.ns(namespace)
    k.apply(_isvc("chat", {"mode": "Gateway", "failureMode": "FailOpen", "strategy": "PrefixLoad"}))
    pool = eventually(lambda: _get(k, "inferencepool", "chat"), timeout=60, desc="InferencePool chat")
    spec = pool["spec"]
    assert (
        spec["endpointPickerRef"]
        == {
            "group": "",
            "kind": "Service",
            "name": "chat-epp",
            "port": {"number": 9002},
            "failureMode": "FailOpen",
        }
        or spec["endpointPickerRef"]["name"] == "chat-epp"
    )
    assert spec["targetPorts"] == [{"number": 8000}]
    assert spec["selector"]["matchLabels"]["app.kubernetes.io/component"] == "model-server"
    for kind in ("deployment", "service", "serviceaccount", "role", "rolebinding"):
        assert _get(k, kind, "chat-epp") is not None, kind
    dep = _get(k, "deployment", "chat-epp")
    assert dep["spec"]["template"]["spec"]["containers"][0]["command"][:2] == ["shoal", "epp"]

    def routed() -> dict[str, Any]:
        obj = _get(k, "infsvc", "chat")
        st = (obj or {}).get("status") or {}
        assert st.get("routing", {}).get("inferencePool") == "chat", st
        return st

    st = eventually(routed, timeout=60, desc="status.routing")
    assert st["routing"]["endpointPicker"] == f"chat-epp.{namespace}:9002"

    # An HTTPRoute whose backend is the pool validates against the real Gateway API CRDs.
    for obj in _route("chat", "chat"):
        k.apply(obj)
    route = _get(k, "httproute", "chat")
    assert route["spec"]["rules"][0]["backendRefs"][0]["kind"] == "InferencePool"
    # The real CRD validates: a bad failureMode is refused by the API server.
    bad = {**pool, "metadata": {"name": "bad"}}
    bad["spec"] = {**spec, "endpointPickerRef": {**spec["endpointPickerRef"], "failureMode": "Sometimes"}}
    with pytest.raises(KubectlError) as info:
        k.apply(bad)
    assert "failureMode" in str(info.value)

    # Back to Router mode: the pool and the picker go.
    k.apply(_isvc("chat", {"mode": "Router"}))
    eventually(lambda: _get(k, "inferencepool", "chat") is None, timeout=60, desc="InferencePool removed")
    eventually(lambda: _get(k, "deployment", "chat-epp") is None, timeout=60, desc="EPP removed")


def test_operator_reports_a_missing_pool_crd(gw_kubectl: Kubectl, namespace: str, operator: Path):
    from shoal_sandbox import gateway_crds

    k = gw_kubectl.ns(namespace)
    gw_kubectl.run("delete", "crd", POOL_CRD, "--wait=true", timeout=60)
    try:
        k.apply(_isvc("nopool", {"mode": "Gateway"}))

        def degraded() -> dict[str, Any]:
            cond = _condition(_get(k, "infsvc", "nopool"), "Degraded")
            assert cond and cond["status"] == "True" and cond["reason"] == "InferencePoolCRDMissing", cond
            return cond

        cond = eventually(degraded, timeout=60, desc="Degraded=InferencePoolCRDMissing")
        assert "gatewayAPI.installCRDs" in cond["message"]
        assert _get(k, "deployment", "nopool-epp") is not None  # the rest is still rendered
    finally:
        paths = gateway_crds.fetch(gateway_crds.GAIE)
        gw_kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(paths[0]))
        gw_kubectl.run("wait", "--for=condition=Established", "--timeout=60s", f"crd/{POOL_CRD}")

    def recovered() -> bool:
        cond = _condition(_get(k, "infsvc", "nopool"), "Degraded")
        assert cond and cond["status"] == "False", cond
        return _get(k, "inferencepool", "nopool") is not None

    eventually(recovered, timeout=60, desc="the pool once the CRD is back")
