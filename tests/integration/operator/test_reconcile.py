"""The operator against the sandbox's API server and controller-manager (pods on kwok GPU nodes)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from shoal_common import names

from .conftest import Kubectl, condition, consistently, eventually

pytestmark = pytest.mark.integration


def _isvc(name: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": {"name": "tiny", "uri": "hf://org/tiny"},
        "engine": {"kind": "sim", "sim": {"startupSeconds": 0.5}},
        "resources": {"gpus": 1, "cpu": "100m", "memory": "256Mi"},
        "routing": {"mode": "Service"},
        "serving": {"drainSeconds": 2},
    }
    base.update(spec)
    return {
        "apiVersion": "shoal.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": base,
    }


def _rv(obj: dict[str, Any] | None) -> str:
    assert obj is not None
    return str(obj["metadata"]["resourceVersion"])


def _owned_by_operator(obj: dict[str, Any] | None) -> dict[str, Any]:
    """What the operator writes to a child: its spec, labels and annotations, and its field manager's entry.

    Not the resourceVersion: controllers update the status of a Deployment or a PodDisruptionBudget
    (available replicas, conditions, healthy pods) on their own schedule, and each update bumps it.
    A write by the operator that changed anything moves its managedFields entry's time.
    """
    assert obj is not None
    meta = obj["metadata"]
    mine = [m for m in meta.get("managedFields", []) if m["manager"] == names.FIELD_MANAGER_OPERATOR]
    return {
        "generation": meta.get("generation"),
        "labels": meta.get("labels"),
        "annotations": meta.get("annotations"),
        "spec": obj.get("spec"),
        "managedFields": mine,
    }


def _plain_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """Metadata without the fields every write moves."""
    return {k: v for k, v in obj["metadata"].items() if k not in ("resourceVersion", "managedFields")}


def _ready(kubectl: Kubectl, name: str) -> dict[str, Any] | None:
    obj = kubectl.get("infsvc", name)
    cond = condition(obj, "Ready")
    if (
        cond
        and cond["status"] == "True"
        and obj
        and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
    ):
        return obj
    return None


@pytest.fixture(scope="module")
def served(kubectl: Kubectl, operator_process: subprocess.Popen[bytes]) -> str:
    """An InferenceService with two replicas (Service mode), Ready."""
    kubectl.apply(_isvc("chat", replicas=2))
    eventually(lambda: _ready(kubectl, "chat"), timeout=120, what="chat Ready")
    return "chat"


def test_children_have_the_expected_fields(kubectl: Kubectl, served: str) -> None:
    dep = kubectl.get("deployment", "chat-model", "--show-managed-fields")
    assert dep is not None
    assert dep["spec"]["replicas"] == 2
    owner = dep["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "InferenceService" and owner["name"] == "chat" and owner["controller"] is True
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"][names.LABEL_ISVC] == "chat"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    c = pod["spec"]["containers"][0]
    assert c["command"][:2] == ["shoal", "model-server"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert any(v["name"] == "dshm" and v["emptyDir"]["medium"] == "Memory" for v in pod["spec"]["volumes"])
    fields = {m["manager"] for m in dep["metadata"]["managedFields"] if m["operation"] == "Apply"}
    assert fields == {names.FIELD_MANAGER_OPERATOR}

    svc = kubectl.get("service", "chat-model")
    assert (
        svc is not None
        and svc["spec"]["ports"][0]["port"] == 8000
        and svc["spec"]["ports"][0]["name"] == "http"
    )
    public = kubectl.get("service", "chat")
    assert public is not None and public["spec"]["ports"][0]["port"] == 80
    assert public["spec"]["selector"][names.LABEL_COMPONENT] == "model-server"  # Service mode
    pdb = kubectl.get("pdb", "chat-model")
    assert pdb is not None and pdb["spec"]["maxUnavailable"] == 1
    assert kubectl.get("deployment", "chat-router") is None


def test_pods_ready_on_gpu_nodes_and_status(kubectl: Kubectl, served: str) -> None:
    pods = eventually(
        lambda: [
            p
            for p in kubectl.list("pods", f"{names.LABEL_ISVC}=chat,{names.LABEL_COMPONENT}=model-server")
            if condition(p, "Ready") and condition(p, "Ready")["status"] == "True"  # type: ignore[index]
        ],
        timeout=60,
        what="ready pods",
    )
    assert all(p["spec"]["nodeName"].startswith("gpu-node") for p in pods)
    obj = kubectl.get("infsvc", "chat")
    assert obj is not None
    st = obj["status"]
    assert st["url"] == f"http://chat.{kubectl.namespace}.svc.cluster.local"
    assert st["selector"] == f"{names.LABEL_ISVC}=chat,{names.LABEL_COMPONENT}=model-server"
    eventually(
        lambda: kubectl.get("infsvc", "chat")["status"]["readyReplicas"] == 2, timeout=60, what="2 ready"
    )  # type: ignore[index]
    res = kubectl.run("wait", "--for=condition=Ready", "infsvc/chat", "--timeout=30s")
    assert "condition met" in res.stdout
    assert condition(obj, "Degraded")["status"] == "False"  # type: ignore[index]


def test_apply_twice_changes_nothing(kubectl: Kubectl, served: str) -> None:
    children = (
        ("deployment", "chat-model"),
        ("service", "chat-model"),
        ("service", "chat"),
        ("pdb", "chat-model"),
    )

    def owned() -> dict[str, dict[str, Any]]:
        return {
            f"{k}/{n}": _owned_by_operator(kubectl.get(k, n, "--show-managed-fields")) for k, n in children
        }

    # Settled first (Progressing=False), so the status has as little reason as possible to change below.
    eventually(
        lambda: (c := condition(kubectl.get("infsvc", "chat"), "Progressing")) and c["status"] == "False",
        timeout=60,
        what="chat settled (Progressing=False)",
    )
    before = owned()
    isvc_before = kubectl.get("infsvc", "chat")
    isvc_rv = _rv(isvc_before)
    res = kubectl.apply(_isvc("chat", replicas=2))
    assert "unchanged" in res.stdout
    # more than two drift periods: the operator re-applies everything; nothing it owns may change
    consistently(lambda: owned() == before, duration=5, interval=1, what="children unchanged")
    obj = kubectl.get("infsvc", "chat")
    assert obj is not None and obj["metadata"]["generation"] == 1 and isvc_before is not None
    # The operator never writes the spec or metadata, nor a status that did not change. A status that did
    # change (a replica's readiness moving under a loaded machine) is a legitimate write.
    assert obj["spec"] == isvc_before["spec"]
    assert _plain_metadata(obj) == _plain_metadata(isvc_before)
    if _rv(obj) != isvc_rv:
        assert obj["status"] != isvc_before["status"], "written with nothing changed"


def test_kubectl_scale_changes_the_deployment(kubectl: Kubectl, served: str) -> None:
    kubectl.run("scale", "infsvc/chat", "--replicas", "3")
    eventually(
        lambda: kubectl.get("deployment", "chat-model")["spec"]["replicas"] == 3,
        timeout=30,
        what="3 replicas",
    )  # type: ignore[index]
    scale = eventually(
        lambda: (
            (s := kubectl.run("get", "infsvc", "chat", "--subresource=scale", "-o", "json").stdout)
            and '"replicas": 3' in s
            and s
        ),
        timeout=60,
        what="scale status",
    )
    assert "shoal.dev/inferenceservice=chat" in scale
    kubectl.run("scale", "infsvc/chat", "--replicas", "2")
    eventually(
        lambda: kubectl.get("deployment", "chat-model")["spec"]["replicas"] == 2, timeout=30, what="back to 2"
    )  # type: ignore[index]


def test_update_rolls_the_deployment(kubectl: Kubectl, served: str) -> None:
    before = kubectl.get("deployment", "chat-model")
    assert before is not None
    doc = _isvc("chat", replicas=2)
    doc["spec"]["engine"]["args"] = {"max-model-len": 1024}
    doc["spec"]["resources"]["memory"] = "512Mi"
    kubectl.apply(doc)

    def rolled() -> dict[str, Any] | None:
        dep = kubectl.get("deployment", "chat-model")
        assert dep is not None
        c = dep["spec"]["template"]["spec"]["containers"][0]
        if "max-model-len=1024" in c["command"] and c["resources"]["limits"]["memory"] == "512Mi":
            return dep
        return None

    after = eventually(rolled, timeout=30, what="new template")
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    eventually(lambda: _ready(kubectl, "chat"), timeout=120, what="Ready after the rollout")
    dep = kubectl.get("deployment", "chat-model")
    assert dep is not None and dep["status"].get("updatedReplicas") == 2


def test_drift_is_repaired(kubectl: Kubectl, served: str) -> None:
    kubectl.run("delete", "service", "chat-model", "--wait=true")
    eventually(lambda: kubectl.get("service", "chat-model"), timeout=20, what="Service re-created")
    kubectl.run("patch", "deployment", "chat-model", "--type=merge", "-p", '{"spec":{"replicas":7}}')
    eventually(
        lambda: kubectl.get("deployment", "chat-model")["spec"]["replicas"] == 2,
        timeout=20,
        what="replicas reverted",
    )  # type: ignore[index]
    kubectl.run("label", "service", "chat", f"{names.LABEL_ISVC}-", "--overwrite")
    eventually(
        lambda: kubectl.get("service", "chat")["metadata"]["labels"].get(names.LABEL_ISVC) == "chat",  # type: ignore[index]
        timeout=20,
        what="label restored",
    )
    kubectl.run("delete", "deployment", "chat-model", "--wait=false")
    eventually(
        lambda: (d := kubectl.get("deployment", "chat-model")) and not d["metadata"].get("deletionTimestamp"),
        timeout=30,
        what="Deployment re-created",
    )
    eventually(lambda: _ready(kubectl, "chat"), timeout=120, what="Ready again")


def test_router_mode_children(kubectl: Kubectl, operator_process: subprocess.Popen[bytes]) -> None:
    doc = _isvc("routed")
    doc["spec"]["routing"] = {"mode": "Router", "strategy": "PrefixHash"}
    kubectl.apply(doc)
    dep = eventually(lambda: kubectl.get("deployment", "routed-router"), timeout=30, what="router Deployment")
    cmd = dep["spec"]["template"]["spec"]["containers"][0]["command"]
    assert (
        cmd[:2] == ["shoal", "router"]
        and "--service" in cmd
        and "routed-model" in cmd
        and "PrefixHash" in cmd
    )
    assert kubectl.get("serviceaccount", "routed-router") is not None
    role = kubectl.get("role", "routed-router")
    assert role is not None and {r for rule in role["rules"] for r in rule["resources"]} == {
        "endpointslices",
        "pods",
    }
    assert kubectl.get("rolebinding", "routed-router") is not None
    public = kubectl.get("service", "routed")
    assert public is not None and public["spec"]["selector"][names.LABEL_COMPONENT] == "router"
    assert kubectl.get("pdb", "routed-model") is None  # one replica
    # switching to Service mode removes the router
    doc["spec"]["routing"] = {"mode": "Service"}
    kubectl.apply(doc)
    eventually(lambda: kubectl.get("deployment", "routed-router") is None, timeout=30, what="router removed")
    eventually(lambda: kubectl.get("role", "routed-router") is None, timeout=30, what="role removed")


def test_missing_pvc_degrades_with_event_and_recovers(
    kubectl: Kubectl, operator_process: subprocess.Popen[bytes]
) -> None:
    doc = _isvc("frompvc")
    doc["spec"]["model"] = {"name": "m", "uri": "pvc://no-such-claim/models/m"}
    kubectl.apply(doc)

    def degraded() -> dict[str, Any] | None:
        c = condition(kubectl.get("infsvc", "frompvc"), "Degraded")
        return c if c and c["status"] == "True" else None

    cond = eventually(degraded, timeout=30, what="Degraded")
    assert cond["reason"] == "PVCNotFound" and "no-such-claim" in cond["message"]

    def warnings() -> list[dict[str, Any]]:
        return [
            e
            for e in kubectl.list("events")
            if e["involvedObject"]["name"] == "frompvc"
            and e["type"] == "Warning"
            and e["reason"] == "PVCNotFound"
        ]

    first = len(eventually(warnings, timeout=20, what="Warning Event"))
    # Once per transition, not once per reconcile: several drift periods later there are no more.
    # (At most one per operator process: a shared sandbox may run another, cluster-wide operator.)
    assert first <= 2
    consistently(lambda: len(warnings()) == first, duration=6, what="no new Warning Events")
    assert operator_process.poll() is None
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "no-such-claim"},
            "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "1Gi"}}},
        }
    )
    eventually(
        lambda: condition(kubectl.get("infsvc", "frompvc"), "Degraded")["status"] == "False",  # type: ignore[index]
        timeout=30,
        what="recovered",
    )


def test_delete_cascades(kubectl: Kubectl, operator_process: subprocess.Popen[bytes]) -> None:
    kubectl.apply(_isvc("doomed"))
    eventually(lambda: kubectl.get("deployment", "doomed-model"), timeout=30, what="children")
    kubectl.run("delete", "infsvc", "doomed", "--wait=true", "--timeout=30s")
    eventually(
        lambda: kubectl.get("deployment", "doomed-model") is None, timeout=60, what="Deployment collected"
    )
    eventually(lambda: kubectl.get("service", "doomed") is None, timeout=60, what="Service collected")
    eventually(
        lambda: kubectl.get("service", "doomed-model") is None, timeout=60, what="model Service collected"
    )


def test_operator_survives_everything(operator_process: subprocess.Popen[bytes]) -> None:
    assert operator_process.poll() is None
