"""The `restricted` Pod Security Standard, judged by the sandbox's real API server (its PodSecurity
admission): every pod the operator renders for the examples, and the chart's operator pod, are admitted
(server-side dry run) in a namespace that enforces `restricted`; a root pod is refused there."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from shoal_operator.api import InferenceService
from shoal_operator.builders import BuildOptions, desired_children
from support.eventually import eventually
from support.kubectl import Kubectl, KubectlError

from .conftest import REPO

pytestmark = pytest.mark.integration


@pytest.fixture
def restricted(kubectl: Kubectl, namespace: str) -> Kubectl:
    kubectl.run("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    return kubectl.ns(namespace)


def _pod(template: dict[str, Any], name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": template["spec"]}


def _dry_run(kube: Kubectl, pod: dict[str, Any]) -> str:
    try:
        kube.run("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(pod))
    except KubectlError as exc:
        return exc.stderr or str(exc)
    return ""


def _admit(kube: Kubectl, pod: dict[str, Any]) -> str:
    """ "" when the API server admits the pod (server-side dry run), else its refusal."""
    account = pod["spec"].get("serviceAccountName")
    if not account:
        return _dry_run(kube, pod)
    # Admission looks the pod's ServiceAccount up (the operator or the chart would have made it), from a
    # cache that sees a new one a moment later.
    kube.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}})

    def answer() -> list[str] | None:
        out = _dry_run(kube, pod)
        return None if f'serviceaccount "{account}" not found' in out else [out]

    return eventually(answer, timeout=30, interval=1, desc=f"ServiceAccount {account} seen by admission")[0]


def _example_pods(namespace: str) -> list[dict[str, Any]]:
    pods = []
    for path in sorted((REPO / "examples").glob("inferenceservice-*.yaml")):
        doc = yaml.safe_load(path.read_text())
        doc["metadata"].update(namespace=namespace, uid="uid-1", generation=1)
        isvc = InferenceService.model_validate(doc)
        for obj in desired_children(isvc, BuildOptions()).apply:
            if obj["kind"] == "Deployment":
                pods.append(_pod(obj["spec"]["template"], obj["metadata"]["name"]))
    return pods


def test_root_pod_is_refused(restricted: Kubectl) -> None:
    """The namespace really enforces `restricted` (so the admissions below mean something)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
    }
    assert "violates PodSecurity" in _admit(restricted, pod)


def test_operator_pods_for_every_example_are_admitted(restricted: Kubectl, namespace: str) -> None:
    pods = _example_pods(namespace)
    assert len(pods) >= 3  # model-server and router pods of the examples
    for pod in pods:
        assert _admit(restricted, pod) == "", pod["metadata"]["name"]


def test_chart_operator_pod_is_admitted(restricted: Kubectl, tmp_path: Path) -> None:
    helm = shutil.which("helm")
    if helm is None:
        pytest.fail("helm is not installed: run scripts/install-tools.sh")
    out = subprocess.run(
        [helm, "template", "shoal", str(REPO / "charts" / "shoal"), "--namespace", "shoal-system"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    ).stdout
    deployments = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment"]
    assert len(deployments) == 1
    assert _admit(restricted, _pod(deployments[0]["spec"]["template"], "operator")) == ""
