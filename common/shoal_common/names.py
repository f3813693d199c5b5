"""Names that are a public contract between the operator, the router, Prometheus and the docs."""

from __future__ import annotations

GROUP = "shoal.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "InferenceService"
PLURAL = "inferenceservices"
SHORT_NAME = "infsvc"
# The shared entry point: one router in front of the InferenceServices of a namespace (or a labelled group).
GATEWAY_KIND = "InferenceGateway"
GATEWAY_PLURAL = "inferencegateways"
GATEWAY_SHORT_NAME = "infgw"

# Pod / object labels (the router and Prometheus relabelling select on these).
LABEL_ISVC = "shoal.dev/inferenceservice"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "shoal-operator"
COMPONENT_MODEL_SERVER = "model-server"
COMPONENT_ROUTER = "router"
COMPONENT_EPP = "endpoint-picker"  # Gateway mode: the InferencePool's endpoint picker
COMPONENT_ENTRY_POINT = "entry-point"
LABEL_GATEWAY = "shoal.dev/inferencegateway"  # on an InferenceGateway's children (not LABEL_ISVC)

# Server-side apply field managers: one writer per field.
FIELD_MANAGER_OPERATOR = "shoal-operator"
FIELD_MANAGER_AUTOSCALER = "shoal-autoscaler"

# Request header the router and the endpoint picker set for the model-server: the request's engine
# priority (vLLM's `priority`, lower is served first). It overrides the body's `priority` field; the
# router drops a client's copy and the endpoint picker overwrites or removes it.
PRIORITY_HEADER = "x-shoal-priority"

# Ports.
MODEL_SERVER_PORT = 8000
ROUTER_PORT = 8080
EPP_METRICS_PORT = 9090  # the endpoint picker's /metrics and /healthz (its held count)
SERVICE_PORT = 80


def model_server_name(isvc: str) -> str:
    """Deployment and Service (selecting model-server pods) for an InferenceService."""
    return f"{isvc}-model"


def router_name(isvc: str) -> str:
    return f"{isvc}-router"


def entry_point_name(gateway: str) -> str:
    """An InferenceGateway's entry-point Deployment, ServiceAccount, Role and RoleBinding (its Service is
    the gateway's own name: the URL clients use)."""
    return f"{gateway}-entry"


def public_service_name(isvc: str) -> str:
    """The stable endpoint users call; points at the router (or straight at the pods in plain mode)."""
    return isvc
