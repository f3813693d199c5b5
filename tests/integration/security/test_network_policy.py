"""The operator's NetworkPolicy on the sandbox's real API server: accepted as rendered, read back intact.

The sandbox's node networking has no NetworkPolicy enforcement (no Calico/Cilium), so this proves the
object is valid and selects the right pods; enforcement is the network plugin's job.
"""

from __future__ import annotations

import json

import pytest
from shoal_common import names
from shoal_operator.api import InferenceService
from shoal_operator.builders.network_policy import network_policy
from support.kubectl import Kubectl

pytestmark = pytest.mark.integration


def isvc(namespace: str, spec: dict[str, object]) -> InferenceService:
    return InferenceService.model_validate(
        {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {
                "name": "chat",
                "namespace": namespace,
                "uid": "00000000-0000-0000-0000-000000000001",
            },
            "spec": {"model": {"name": "m", "uri": "file:///m"}, **spec},
        }
    )


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"routing": {"mode": "Service"}, "networkPolicy": {"allowedNamespaces": ["gateway", "batch"]}},
    ],
    ids=["router-mode", "service-mode-listed-namespaces"],
)
def test_rendered_policy_is_accepted_as_is(kube: Kubectl, namespace: str, spec: dict[str, object]) -> None:
    pol = network_policy(isvc(namespace, spec))
    pol["metadata"].pop("ownerReferences")  # no InferenceService object behind this test
    kube.run("apply", "--server-side", "--field-manager=shoal-operator", "-f", "-", input=json.dumps(pol))
    live = kube.json("get", "networkpolicy", "chat-model", "-o", "json")
    assert live["spec"] == pol["spec"]
    assert live["metadata"]["labels"][names.LABEL_ISVC] == "chat"
    # Applying the same object again changes nothing (no drift for the operator's timer).
    kube.run("apply", "--server-side", "--field-manager=shoal-operator", "-f", "-", input=json.dumps(pol))
    again = kube.json("get", "networkpolicy", "chat-model", "-o", "json")
    assert again["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]
