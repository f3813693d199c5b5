"""The router (`X-router`: Deployment, ServiceAccount, Role, RoleBinding) and the public Service `X`."""

from __future__ import annotations

from typing import Any

from shoal_common import names

from shoal_operator.api import InferenceService
from shoal_operator.builders import waivers
from shoal_operator.builders.common import (
    BuildOptions,
    bind_role,
    flow_args,
    front_end_deployment,
    metadata,
    router_container,
    selector,
)

COMPONENT = names.COMPONENT_ROUTER


def command(isvc: InferenceService) -> list[str]:
    routing = isvc.spec.routing
    cmd = [
        "shoal",
        "router",
        "--host",
        "0.0.0.0",
        "--port",
        str(names.ROUTER_PORT),
        "--discovery",
        "kubernetes",
        "--namespace",
        isvc.namespace,
        "--service",
        names.model_server_name(isvc.name),
        "--strategy",
        routing.strategy,
        "--first-byte-timeout",
        str(isvc.spec.serving.request_timeout_seconds),
    ]
    cmd += flow_args(isvc)
    if routing.api_keys_secret:
        cmd += ["--api-keys-secret", routing.api_keys_secret]
    if routing.rate_limit is not None:
        cmd += ["--rate-limit-rps", str(routing.rate_limit.requests_per_second)]
        if routing.rate_limit.burst is not None:
            cmd += ["--rate-limit-burst", str(routing.rate_limit.burst)]
    return cmd


def service_account(isvc: InferenceService) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(isvc, names.router_name(isvc.name), COMPONENT),
    }


def role(isvc: InferenceService) -> dict[str, Any]:
    rules: list[dict[str, Any]] = [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    ]
    secret = isvc.spec.routing.api_keys_secret
    if secret:
        rules.append(
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": [secret],
                "verbs": ["get", "list", "watch"],
            }
        )
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(isvc, names.router_name(isvc.name), COMPONENT),
        "rules": rules,
    }


def role_binding(isvc: InferenceService) -> dict[str, Any]:
    return bind_role(isvc, names.router_name(isvc.name), COMPONENT)


def deployment(isvc: InferenceService, opts: BuildOptions) -> dict[str, Any]:
    name = names.router_name(isvc.name)
    container = router_container("router", command(isvc), opts)
    return front_end_deployment(
        isvc,
        waivers.annotated(metadata(isvc, name, COMPONENT), waivers.ROUTER),
        COMPONENT,
        names.ROUTER_PORT,
        container,
        opts.pre_stop_seconds + isvc.spec.serving.drain_seconds + 15,
    )


def public_service(isvc: InferenceService) -> dict[str, Any]:
    """`X` port 80: to the router pods (Router mode) or straight to the model-server pods (Service mode)."""
    component = COMPONENT if isvc.spec.routing.mode == "Router" else names.COMPONENT_MODEL_SERVER
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(isvc, names.public_service_name(isvc.name)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(isvc, component),
            "ports": [{"name": "http", "port": names.SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
