"""The model-server NetworkPolicy: who may reach the pods, per routing mode and spec."""

from __future__ import annotations

import pytest
from shoal_common import names
from shoal_operator.builders import BuildOptions, desired_children
from shoal_operator.builders.network_policy import network_policy

from tests.unit.operator.helpers import isvc

pytestmark = pytest.mark.unit


def test_router_mode_allows_router_and_prometheus_only() -> None:
    pol = network_policy(isvc())
    assert pol["apiVersion"] == "networking.k8s.io/v1" and pol["metadata"]["name"] == "chat-model"
    spec = pol["spec"]
    assert spec["podSelector"]["matchLabels"] == {
        names.LABEL_ISVC: "chat",
        names.LABEL_COMPONENT: names.COMPONENT_MODEL_SERVER,
    }
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": names.MODEL_SERVER_PORT}]
    front, prometheus, entry = rule["from"]
    assert entry == {"podSelector": {"matchLabels": {names.LABEL_COMPONENT: "entry-point",
                                                     names.LABEL_MANAGED_BY: names.MANAGED_BY}}}  # fmt: skip
    assert front["podSelector"]["matchLabels"] == {names.LABEL_ISVC: "chat"}
    assert front["podSelector"]["matchExpressions"][0]["values"] == ["router", "endpoint-picker"]
    assert "namespaceSelector" not in front  # same namespace only
    assert prometheus == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }


def test_listed_namespaces_and_service_mode() -> None:
    spec = {
        "routing": {"mode": "Service"},
        "networkPolicy": {
            "allowedNamespaces": ["gateway", "batch", "gateway"],
            "prometheus": {"namespace": "obs", "podLabels": {"app": "prom"}},
        },
    }
    peers = network_policy(isvc(spec))["spec"]["ingress"][0]["from"]
    assert peers[1]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "obs"}
    assert peers[1]["podSelector"] == {"matchLabels": {"app": "prom"}}
    assert peers[2] == {"podSelector": {}}  # Service mode: the service's own namespace
    assert [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in peers[3:-1]] == [
        "batch",
        "gateway",
    ]


def test_disabled_policies_are_removed() -> None:
    children = desired_children(isvc({"networkPolicy": {"enabled": False}}), BuildOptions())
    assert all(o["kind"] != "NetworkPolicy" for o in children.apply)
    assert {("NetworkPolicy", "chat-model"), ("NetworkPolicy", "chat-router")} <= set(children.absent)


def test_router_policy_only_in_router_mode() -> None:
    router_mode = desired_children(isvc(), BuildOptions())
    pol = next(
        o
        for o in router_mode.apply
        if o["metadata"]["name"] == "chat-router" and o["kind"] == "NetworkPolicy"
    )
    assert pol["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": names.ROUTER_PORT}]}]
    service_mode = desired_children(isvc({"routing": {"mode": "Service"}}), BuildOptions())
    assert ("NetworkPolicy", "chat-router") in service_mode.absent
