"""Gateway mode: the InferencePool `X` (Gateway API Inference Extension, inference.networking.k8s.io/v1)
selecting the model-server pods, and shoal's endpoint picker `X-epp` (Deployment, Service,
ServiceAccount, Role, RoleBinding) that the gateway calls over ext_proc."""

from __future__ import annotations

from typing import Any

from shoal_common import names

from shoal_operator.api import InferenceService
from shoal_operator.builders.common import (
    BuildOptions,
    bind_role,
    container_security_context,
    flow_args,
    front_end_deployment,
    metadata,
    pod_env,
    selector,
)

COMPONENT = names.COMPONENT_EPP
POOL_API_VERSION = "inference.networking.k8s.io/v1"
POOL_KIND = "InferencePool"
POOL_PLURAL = "inferencepools"
EPP_GRPC_PORT = 9002
EPP_HEALTH_PORT = 9003
EPP_METRICS_PORT = names.EPP_METRICS_PORT


def epp_name(isvc: str) -> str:
    return f"{isvc}-epp"


def pool_name(isvc: str) -> str:
    return isvc


def epp_address(isvc: InferenceService) -> str:
    return f"{epp_name(isvc.name)}.{isvc.namespace}:{EPP_GRPC_PORT}"


def inference_pool(isvc: InferenceService) -> dict[str, Any]:
    return {
        "apiVersion": POOL_API_VERSION,
        "kind": POOL_KIND,
        "metadata": metadata(isvc, pool_name(isvc.name)),
        "spec": {
            "selector": {"matchLabels": selector(isvc, names.COMPONENT_MODEL_SERVER)},
            "targetPorts": [{"number": names.MODEL_SERVER_PORT}],
            "endpointPickerRef": {
                "kind": "Service",
                "name": epp_name(isvc.name),
                "port": {"number": EPP_GRPC_PORT},
                "failureMode": isvc.spec.routing.failure_mode,
            },
        },
    }


def command(isvc: InferenceService) -> list[str]:
    sel = ",".join(f"{k}={v}" for k, v in selector(isvc, names.COMPONENT_MODEL_SERVER).items())
    return [
        "shoal",
        "epp",
        "--discovery",
        "pods",
        "--namespace",
        isvc.namespace,
        "--selector",
        sel,
        "--target-port",
        str(names.MODEL_SERVER_PORT),
        "--strategy",
        isvc.spec.routing.strategy,
        "--grpc-port",
        str(EPP_GRPC_PORT),
        "--health-port",
        str(EPP_HEALTH_PORT),
        "--metrics-port",
        str(EPP_METRICS_PORT),
        *flow_args(isvc),
        *tenant_args(isvc),
    ]


def tenant_args(isvc: InferenceService) -> list[str]:
    """`--tenant 'ID priority=P weight=W tokens-per-minute=N'` per spec.routing.tenants entry (sorted)."""
    tenants = isvc.spec.routing.tenants or {}
    return [arg for tid in sorted(tenants) for arg in ("--tenant", tenants[tid].flag(tid))]


def service_account(isvc: InferenceService) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(isvc, epp_name(isvc.name), COMPONENT),
    }


def role(isvc: InferenceService) -> dict[str, Any]:
    """Reads only: the pool's pods (discovery) and EndpointSlices; nothing else in the namespace."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(isvc, epp_name(isvc.name), COMPONENT),
        "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices"],
                "verbs": ["get", "list", "watch"],
            },
        ],
    }


def role_binding(isvc: InferenceService) -> dict[str, Any]:
    return bind_role(isvc, epp_name(isvc.name), COMPONENT)


def service(isvc: InferenceService) -> dict[str, Any]:
    """`X-epp`: the ext_proc port the InferencePool points at (gRPC over TLS, HTTP/2)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(isvc, epp_name(isvc.name), COMPONENT),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(isvc, COMPONENT),
            "ports": [
                {
                    "name": "grpc-ext-proc",
                    "port": EPP_GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "http2",
                },
                {
                    "name": "http-metrics",
                    "port": EPP_METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def _grpc_probe(service_name: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "grpc": {"port": EPP_HEALTH_PORT, "service": service_name},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 3,
    }


def deployment(isvc: InferenceService, opts: BuildOptions) -> dict[str, Any]:
    name = epp_name(isvc.name)
    container: dict[str, Any] = {
        "name": "epp",
        "image": opts.router_image,  # the router's image: `shoal epp` is the same package
        "imagePullPolicy": opts.image_pull_policy,
        "command": command(isvc),
        "ports": [
            {"name": "grpc", "containerPort": EPP_GRPC_PORT, "protocol": "TCP"},
            {"name": "grpc-health", "containerPort": EPP_HEALTH_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": EPP_METRICS_PORT, "protocol": "TCP"},
        ],
        "env": pod_env(),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "readinessProbe": _grpc_probe("readiness", 5, 2),
        "livenessProbe": _grpc_probe("liveness", 10, 6),
        "securityContext": {**container_security_context(), "readOnlyRootFilesystem": True},
    }
    return front_end_deployment(
        isvc,
        metadata(isvc, name, COMPONENT),
        COMPONENT,
        EPP_METRICS_PORT,
        container,
        opts.pre_stop_seconds + 15,
    )


def children(
    isvc: InferenceService, opts: BuildOptions
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """(apply, absent) for the routing mode: the Gateway-mode objects, or their absence."""
    name = epp_name(isvc.name)
    if isvc.spec.routing.mode == "Gateway":
        rbac = [service_account(isvc), role(isvc), role_binding(isvc)]
        return [*rbac, service(isvc), deployment(isvc, opts), inference_pool(isvc)], []
    absent = [
        (POOL_KIND, pool_name(isvc.name)),
        ("Deployment", name),
        ("Service", name),
        ("RoleBinding", name),
        ("Role", name),
        ("ServiceAccount", name),
    ]
    return [], absent


# -- status helpers (pure) --------------------------------------------------------------------------------


CRD_MISSING_MESSAGE = (
    "routing.mode Gateway: the InferencePool CRD (inference.networking.k8s.io/v1) is not installed; install it "
    "(helm: --set gatewayAPI.installCRDs=true) or your gateway's Inference Extension CRDs. The endpoint picker "
    "runs meanwhile; the gateway has no pool to route to."
)


def crd_missing(obj: dict[str, Any], status: int) -> bool:
    """Applying the InferencePool got 404: the API server has no such resource (CRD not installed)."""
    return obj.get("kind") == POOL_KIND and status == 404


def front_end_name(isvc: InferenceService) -> str:
    """The Deployment that fronts the pods: the router (Router mode) or the endpoint picker (Gateway)."""
    return epp_name(isvc.name) if isvc.spec.routing.mode == "Gateway" else names.router_name(isvc.name)


def front_end_not_ready(isvc: InferenceService) -> tuple[bool, str, str]:
    if isvc.spec.routing.mode == "Gateway":
        return False, "EndpointPickerNotReady", "the endpoint picker has no available replica"
    return False, "RouterNotReady", "the router has no available replica"


def routing_status(isvc: InferenceService) -> dict[str, Any]:
    mode = isvc.spec.routing.mode
    if mode != "Gateway":
        return {"mode": mode}
    return {"mode": mode, "inferencePool": pool_name(isvc.name), "endpointPicker": epp_address(isvc)}
