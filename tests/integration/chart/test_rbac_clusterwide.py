"""The chart's default (cluster-wide) RBAC on the sandbox's real API server, checked with
`kubectl auth can-i --as` the operator's ServiceAccount: exactly what docs/security.md says is granted.

Only the RBAC objects are applied (from `helm template`); no operator runs, so the test needs the API
server alone.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.kubectl import Kubectl

pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[3] / "charts" / "shoal"
CRD = CHART.parents[1] / "crds" / "shoal.dev_inferenceservices.yaml"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def helm_template(helm: str, release: str, namespace: str) -> list[dict[str, object]]:
    out = subprocess.run(
        [helm, "template", release, str(CHART), "-n", namespace],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


class AsOperator:
    def __init__(self, kubectl: Kubectl, namespace: str, service_account: str) -> None:
        self.kubectl = kubectl
        self.user = f"system:serviceaccount:{namespace}:{service_account}"
        self.groups = [
            "system:serviceaccounts",
            f"system:serviceaccounts:{namespace}",
            "system:authenticated",
        ]

    def can_i(self, *args: str) -> bool:
        argv = ["auth", "can-i", *args, f"--as={self.user}", *(f"--as-group={g}" for g in self.groups)]
        proc = subprocess.run(
            [*self.kubectl._base(), *argv], capture_output=True, text=True, timeout=60, check=False
        )
        answer = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        assert answer in {"yes", "no"}, f"kubectl {' '.join(argv)}: {proc.stdout}{proc.stderr}"
        return answer == "yes"


@pytest.fixture(scope="module")
def operator_sa(kubectl: Kubectl) -> Iterator[AsOperator]:
    from integration.chart.conftest import find_tool

    suffix = uuid.uuid4().hex[:5]
    release, namespace = f"rb{suffix}", f"shoal-rbac-{suffix}"
    objs = [o for o in helm_template(find_tool("helm"), release, namespace) if o["kind"] in RBAC_KINDS]
    # The CRD, so that `can-i` resolves shoal's resource names (shared by every test; apply is idempotent).
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    kubectl.ns(namespace).apply(*objs)
    sa = next(o for o in objs if o["kind"] == "ServiceAccount")["metadata"]["name"]  # type: ignore[index]
    try:
        yield AsOperator(kubectl, namespace, str(sa))
    finally:
        for obj in objs:
            if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                kubectl.run(
                    "delete", str(obj["kind"]), obj["metadata"]["name"], "--ignore-not-found", check=False
                )  # type: ignore[index]
        kubectl.run("delete", "namespace", namespace, "--wait=false", "--ignore-not-found", check=False)


@pytest.mark.parametrize(
    "args",
    [
        ("get", "secrets", "-n", "kube-system"),
        ("list", "secrets", "-n", "kube-system"),
        ("watch", "secrets", "--all-namespaces"),
        ("create", "clusterrolebindings"),
        ("create", "clusterroles"),
        ("bind", "clusterroles"),
        ("escalate", "roles", "-n", "kube-system"),
        ("impersonate", "serviceaccounts", "-n", "kube-system"),
        ("create", "pods", "-n", "kube-system"),
        ("create", "pods/exec", "-n", "kube-system"),
        ("update", "configmaps", "-n", "kube-system"),
        ("delete", "nodes"),
        ("delete", "namespaces"),
        ("create", "customresourcedefinitions"),
        # Children are applied by name: never listed or watched, anywhere.
        ("list", "roles", "-n", "kube-system"),
        ("list", "rolebindings", "--all-namespaces"),
        ("list", "services", "--all-namespaces"),
        ("list", "serviceaccounts", "-n", "kube-system"),
        ("list", "networkpolicies", "--all-namespaces"),
    ],
)
def test_operator_cannot(operator_sa: AsOperator, args: tuple[str, ...]) -> None:
    assert not operator_sa.can_i(*args)


@pytest.mark.parametrize(
    "args",
    [
        ("list", "inferenceservices.shoal.dev", "--all-namespaces"),
        ("patch", "inferenceservices.shoal.dev", "--subresource=status", "-n", "team-a"),
        ("patch", "inferenceservices.shoal.dev", "--subresource=scale", "-n", "team-a"),
        ("watch", "deployments.apps", "--all-namespaces"),
        ("create", "deployments.apps", "-n", "team-a"),
        ("create", "networkpolicies.networking.k8s.io", "-n", "team-a"),
        ("delete", "networkpolicies.networking.k8s.io", "-n", "team-a"),
        ("patch", "rolebindings", "-n", "team-a"),
        ("create", "events", "-n", "team-a"),
    ],
)
def test_operator_can_do_its_job(operator_sa: AsOperator, args: tuple[str, ...]) -> None:
    assert operator_sa.can_i(*args)
