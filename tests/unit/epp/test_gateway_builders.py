"""Gateway mode rendering (pure builders) and its status."""

from __future__ import annotations

from typing import Any

from shoal_common import names
from shoal_operator import status as status_mod
from shoal_operator.api import InferenceService
from shoal_operator.builders import BuildOptions, desired_children, gateway


def isvc(routing: dict[str, Any] | None = None) -> InferenceService:
    return InferenceService.model_validate(
        {
            "metadata": {"name": "chat", "namespace": "team", "uid": "uid-1", "generation": 2},
            "spec": {"model": {"name": "m", "uri": "hf://org/m"}, "routing": routing or {"mode": "Gateway"}},
        }
    )


def _by_kind(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"] + "/" + o["metadata"]["name"]: o for o in objs}


def test_gateway_mode_renders_pool_and_epp_and_no_router():
    children = desired_children(
        isvc({"mode": "Gateway", "failureMode": "FailOpen", "strategy": "PrefixLoad"}), BuildOptions()
    )
    objs = _by_kind(children.apply)
    pool = objs["InferencePool/chat"]
    assert pool["apiVersion"] == "inference.networking.k8s.io/v1"
    assert pool["spec"]["selector"]["matchLabels"] == {
        names.LABEL_ISVC: "chat",
        names.LABEL_COMPONENT: names.COMPONENT_MODEL_SERVER,
    }
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    assert pool["spec"]["endpointPickerRef"] == {
        "kind": "Service",
        "name": "chat-epp",
        "port": {"number": 9002},
        "failureMode": "FailOpen",
    }
    for key in (
        "Deployment/chat-epp",
        "Service/chat-epp",
        "ServiceAccount/chat-epp",
        "Role/chat-epp",
        "RoleBinding/chat-epp",
    ):
        assert key in objs, key
    assert "Deployment/chat-router" not in objs and ("Deployment", "chat-router") in children.absent
    dep = objs["Deployment/chat-epp"]["spec"]["template"]["spec"]
    cmd = dep["containers"][0]["command"]
    assert cmd[:2] == ["shoal", "epp"] and "PrefixLoad" in cmd and "--selector" in cmd
    assert dep["containers"][0]["readinessProbe"]["grpc"] == {"port": 9003, "service": "readiness"}
    assert dep["serviceAccountName"] == "chat-epp"
    svc = objs["Service/chat-epp"]["spec"]
    assert svc["ports"][0]["port"] == 9002 and svc["ports"][0]["appProtocol"] == "http2"
    # the public Service goes straight to the pods (the gateway is the entry point)
    assert objs["Service/chat"]["spec"]["selector"][names.LABEL_COMPONENT] == names.COMPONENT_MODEL_SERVER


def test_failure_mode_defaults_to_fail_close():
    pool = gateway.inference_pool(isvc())
    assert pool["spec"]["endpointPickerRef"]["failureMode"] == "FailClose"


def test_router_mode_removes_gateway_objects():
    children = desired_children(isvc({"mode": "Router"}), BuildOptions())
    assert ("InferencePool", "chat") in children.absent and ("Deployment", "chat-epp") in children.absent
    assert not any(o["kind"] == "InferencePool" for o in children.apply)


def _deployment(ready: int) -> dict[str, Any]:
    return {
        "metadata": {"generation": 1},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": ready,
            "availableReplicas": ready,
        },
    }


def test_status_names_pool_and_waits_for_the_epp():
    obs = status_mod.Observed(model=_deployment(1), router=_deployment(0))
    st = status_mod.compute(isvc(), obs, BuildOptions())
    assert st["routing"] == {
        "mode": "Gateway",
        "inferencePool": "chat",
        "endpointPicker": "chat-epp.team:9002",
    }
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "EndpointPickerNotReady"
    obs.router = _deployment(1)
    ready = next(
        c for c in status_mod.compute(isvc(), obs, BuildOptions())["conditions"] if c["type"] == "Ready"
    )
    assert ready["status"] == "True"


def test_crd_missing_is_detected_only_for_the_pool():
    assert gateway.crd_missing({"kind": "InferencePool"}, 404)
    assert not gateway.crd_missing({"kind": "Deployment"}, 404)
    assert not gateway.crd_missing({"kind": "InferencePool"}, 422)


def test_chart_installs_the_pool_crd_only_when_asked():
    import shutil
    import subprocess
    from pathlib import Path

    import yaml

    helm = shutil.which("helm") or str(Path.home() / ".cache" / "shoal" / "bin" / "helm")
    chart = Path(__file__).resolve().parents[3] / "charts" / "shoal"

    def crds(*flags: str) -> list[str]:
        out = subprocess.run(
            [helm, "template", "t", str(chart), *flags], capture_output=True, text=True, check=True
        )
        docs = [d for d in yaml.safe_load_all(out.stdout) if d]
        return [d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"]

    assert "inferencepools.inference.networking.k8s.io" not in crds()
    on = crds("--set", "gatewayAPI.installCRDs=true")
    assert on == ["inferencepools.inference.networking.k8s.io"]
