"""The model-server pods' NetworkPolicy: only the router (or endpoint picker), the namespace's shared
entry points, Prometheus and listed namespaces reach them, so the router's API keys and rate limits cannot be bypassed from inside the cluster.

Enforced only where the cluster's network plugin implements NetworkPolicy (Calico, Cilium, ...);
elsewhere the API server stores it and nothing changes.
"""

from __future__ import annotations

from typing import Any

from shoal_common import names

from shoal_operator.api import InferenceService
from shoal_operator.builders.common import metadata, selector

# Pods of this InferenceService that forward requests to its model-servers.
FRONT_COMPONENTS = (names.COMPONENT_ROUTER, names.COMPONENT_EPP)
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by the API server on every namespace


def _namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: name}}}


def allowed_peers(isvc: InferenceService) -> list[dict[str, Any]]:
    """The `from` peers of the policy (pure; the order is stable so server-side apply sees no drift)."""
    np = isvc.spec.network_policy
    peers: list[dict[str, Any]] = [
        {
            "podSelector": {
                "matchLabels": {names.LABEL_ISVC: isvc.name},
                "matchExpressions": [
                    {"key": names.LABEL_COMPONENT, "operator": "In", "values": list(FRONT_COMPONENTS)}
                ],
            }
        },
        {
            **_namespace(np.prometheus.namespace),
            "podSelector": {"matchLabels": dict(np.prometheus.pod_labels)},
        },
    ]
    if isvc.spec.routing.mode == "Service":
        # No router in front: clients reach the pods through the Service, from their own namespace.
        peers.append({"podSelector": {}})
    peers += [_namespace(ns) for ns in sorted(set(np.allowed_namespaces))]
    # The namespace's shared entry points (InferenceGateway): they check API keys and rate limits too.
    entry = {names.LABEL_COMPONENT: names.COMPONENT_ENTRY_POINT, names.LABEL_MANAGED_BY: names.MANAGED_BY}
    peers.append({"podSelector": {"matchLabels": entry}})
    return peers


def network_policy(isvc: InferenceService) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(isvc, names.model_server_name(isvc.name), names.COMPONENT_MODEL_SERVER),
        "spec": {
            "podSelector": {"matchLabels": selector(isvc, names.COMPONENT_MODEL_SERVER)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": allowed_peers(isvc),
                    "ports": [{"protocol": "TCP", "port": names.MODEL_SERVER_PORT}],
                }
            ],
        },
    }


def router_network_policy(isvc: InferenceService) -> dict[str, Any]:
    """The router is the entry point (API keys and rate limits apply there): any source, its port only."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(isvc, names.router_name(isvc.name), names.COMPONENT_ROUTER),
        "spec": {
            "podSelector": {"matchLabels": selector(isvc, names.COMPONENT_ROUTER)},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": names.ROUTER_PORT}]}],
        },
    }


def policies(isvc: InferenceService) -> list[dict[str, Any]]:
    if not isvc.spec.network_policy.enabled:
        return []
    out = [network_policy(isvc)]
    if isvc.spec.routing.mode == "Router":
        out.append(router_network_policy(isvc))
    return out


def absent_policies(isvc: InferenceService) -> list[str]:
    """Names of the policies this spec must not have (removed if the operator made them earlier)."""
    wanted = {p["metadata"]["name"] for p in policies(isvc)}
    every = (names.model_server_name(isvc.name), names.router_name(isvc.name))
    return [n for n in every if n not in wanted]
