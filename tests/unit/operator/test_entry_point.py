"""The InferenceGateway's pure parts: the model, the entry point's children, its status, the CRD."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
from shoal_common import names
from shoal_operator import crdgen
from shoal_operator.api_gateway import InferenceGateway
from shoal_operator.builders import BuildOptions, entry_point

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def gateway(**spec: Any) -> InferenceGateway:
    meta = {"name": "models", "namespace": "team-a", "uid": "u-1", "generation": 3}
    return InferenceGateway.model_validate({"metadata": meta, "spec": spec})


def test_committed_gateway_crd_is_current() -> None:
    committed = (ROOT / "crds" / crdgen.GATEWAY_CRD_FILE).read_text()
    assert committed == crdgen.render_gateway_crd(), "crds/ is stale: run `python -m shoal_operator.crdgen`"
    assert (ROOT / "charts" / "shoal" / "crds" / crdgen.GATEWAY_CRD_FILE).read_text() == committed


def test_children_and_command() -> None:
    gw = gateway(
        selector={"matchLabels": {"team": "chat"}},
        splits={"chat": {"chat-v1": 90, "chat-v2": 10}},
        apiKeysSecret="keys",
        rateLimit={"requestsPerSecond": 5, "burst": 10},
        replicas=2,
    )
    kids = entry_point.children(gw, BuildOptions())
    assert [k["kind"] for k in kids] == ["ServiceAccount", "Role", "RoleBinding", "Service", "Deployment"]
    assert all(k["metadata"]["ownerReferences"][0]["kind"] == "InferenceGateway" for k in kids)
    assert all(names.LABEL_ISVC not in k["metadata"]["labels"] for k in kids)  # not an InferenceService's
    svc, dep = kids[3], kids[4]
    assert svc["metadata"]["name"] == "models" and svc["spec"]["selector"][names.LABEL_GATEWAY] == "models"
    assert dep["metadata"]["name"] == "models-entry" and dep["spec"]["replicas"] == 2
    cmd = dep["spec"]["template"]["spec"]["containers"][0]["command"]
    text = " ".join(cmd)
    assert cmd[:2] == ["shoal", "router"]
    assert "--models-namespace team-a --models-gateway models" in text
    assert "--strategy AdapterAffinity" in text and "--api-keys-secret keys" in text
    assert "--rate-limit-rps 5.0 --rate-limit-burst 10" in text
    rules = kids[1]["rules"]
    assert {"apiGroups": ["shoal.dev"], "resources": ["inferenceservices", "inferencegateways"],
            "verbs": ["get", "list", "watch"]} in rules  # fmt: skip
    assert rules[-1]["resourceNames"] == ["keys"]
    assert all(set(r["verbs"]) <= {"get", "list", "watch"} for r in rules)  # read-only


def test_status_follows_the_deployment() -> None:
    gw = gateway()
    opts = BuildOptions()
    starting = entry_point.status(gw, None, opts)
    assert starting["conditions"][0]["status"] == "False" and starting["observedGeneration"] == 3
    assert starting["url"] == "http://models.team-a.svc.cluster.local"
    ready = entry_point.status(gw, {"status": {"replicas": 1, "readyReplicas": 1}}, opts)
    assert ready["conditions"][0]["reason"] == "EntryPointReady" and ready["readyReplicas"] == 1
    broken = entry_point.status(gw, None, opts, "Service 'models' belongs to InferenceService 'models'")
    assert broken["conditions"][0]["reason"] == "ChildRejected"


def test_spec_validation() -> None:
    with pytest.raises(pydantic.ValidationError):
        gateway(strategy="Nope")
    with pytest.raises(pydantic.ValidationError):
        gateway(splits={"chat": {"a": "x"}})
    assert gateway().spec.selector is None  # every InferenceService of the namespace
