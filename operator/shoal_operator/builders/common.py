"""Labels, selectors, metadata and owner references shared by every child object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shoal_common import names

from shoal_operator.api import InferenceService

# The release's images (docker/*.Dockerfile, .github/workflows/release.yaml); the chart sets both.
DEFAULT_MODEL_SERVER_IMAGE = "ghcr.io/shoal-dev/shoal-model-server:0.1.0"
DEFAULT_ROUTER_IMAGE = "ghcr.io/shoal-dev/shoal-router:0.1.0"
DEFAULT_IMAGE = DEFAULT_MODEL_SERVER_IMAGE  # kept for callers that predate the per-component defaults

# The one uid/gid of every shoal image (USER 10001:10001 in docker/) and of every pod spec shoal renders
# (these builders and the chart's operator Deployment); docs/images.md.
SHOAL_UID = 10001


@dataclass(frozen=True)
class BuildOptions:
    """Operator-wide inputs of the builders (from the operator's settings and the cluster's APIs)."""

    model_server_image: str = DEFAULT_MODEL_SERVER_IMAGE
    router_image: str = DEFAULT_ROUTER_IMAGE
    image_pull_policy: str = "IfNotPresent"
    podmonitor_available: bool = False
    pre_stop_seconds: int = 5
    cluster_domain: str = "cluster.local"


def flow_args(isvc: InferenceService) -> list[str]:
    """Flow-control flags shared by the router and the endpoint picker: objective bands, and engine
    priorities when the replicas schedule by priority."""
    args: list[str] = []
    for name in sorted(isvc.spec.routing.objectives):
        args += ["--objective", f"{name}={isvc.spec.routing.objectives[name]}"]
    if isvc.spec.serving.scheduling_policy == "priority":
        args.append("--engine-priority")
    return args


def labels(isvc: InferenceService, component: str | None = None) -> dict[str, str]:
    out = {
        names.LABEL_NAME: "shoal",
        names.LABEL_INSTANCE: isvc.name,
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_ISVC: isvc.name,
    }
    if component:
        out[names.LABEL_COMPONENT] = component
    return out


def selector(isvc: InferenceService, component: str) -> dict[str, str]:
    """Immutable Deployment selector (and Service selector) of one component's pods."""
    return {names.LABEL_ISVC: isvc.name, names.LABEL_COMPONENT: component}


def selector_string(isvc: InferenceService) -> str:
    """status.selector: the model-server pods, as the scale subresource wants it."""
    return ",".join(f"{k}={v}" for k, v in selector(isvc, names.COMPONENT_MODEL_SERVER).items())


def owner_reference(isvc: InferenceService) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "name": isvc.name,
        "uid": isvc.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(isvc: InferenceService, name: str, component: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": isvc.namespace,
        "labels": labels(isvc, component),
        "ownerReferences": [owner_reference(isvc)],
    }


def bind_role(isvc: InferenceService, name: str, component: str) -> dict[str, Any]:
    """RoleBinding `name`: the Role `name` to the ServiceAccount `name` (a front end's own identity)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(isvc, name, component),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": isvc.namespace}],
    }


def url(isvc: InferenceService, opts: BuildOptions) -> str:
    return f"http://{names.public_service_name(isvc.name)}.{isvc.namespace}.svc.{opts.cluster_domain}"


def prometheus_annotations(port: int) -> dict[str, str]:
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}


def pod_security_context() -> dict[str, Any]:
    """The `restricted` Pod Security Standard's pod-level fields, with the images' uid."""
    return {
        "runAsNonRoot": True,
        "runAsUser": SHOAL_UID,
        "runAsGroup": SHOAL_UID,
        "fsGroup": SHOAL_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """The `restricted` container fields, plus a read-only root filesystem: what a shoal container
    writes goes to emptyDirs (/tmp) or volumes the builders mount."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def tmp_volume(size: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The writable /tmp of a read-only container (an emptyDir): (volume, volumeMount)."""
    return {"name": "tmp", "emptyDir": {"sizeLimit": size}}, {"name": "tmp", "mountPath": "/tmp"}


def http_probe(path: str, period: int, failures: int, timeout: int = 3) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def pod_env() -> list[dict[str, Any]]:
    return [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]


def front_end_deployment(
    isvc: InferenceService,
    meta: dict[str, Any],
    component: str,
    metrics_port: int,
    container: dict[str, Any],
    grace_seconds: int,
) -> dict[str, Any]:
    """The Deployment of a request front end (router or endpoint picker): `routing.replicas` pods of one
    container under the ServiceAccount of the Deployment's own name, rolled one at a time with no gap."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": isvc.spec.routing.replicas,
            "selector": {"matchLabels": selector(isvc, component)},
            "revisionHistoryLimit": 3,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": labels(isvc, component),
                    "annotations": prometheus_annotations(metrics_port),
                },
                "spec": {
                    "serviceAccountName": meta["name"],
                    "containers": [container],
                    "securityContext": pod_security_context(),
                    "terminationGracePeriodSeconds": grace_seconds,
                    "enableServiceLinks": False,
                },
            },
        },
    }


def router_container(name: str, command: list[str], opts: BuildOptions) -> dict[str, Any]:
    """The container of a router pod: the per-InferenceService router and an InferenceGateway's entry point."""
    return {
        "name": name,
        "image": opts.router_image,
        "imagePullPolicy": opts.image_pull_policy,
        "command": command,
        "ports": [{"name": "http", "containerPort": names.ROUTER_PORT, "protocol": "TCP"}],
        "env": pod_env(),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "readinessProbe": http_probe("/readyz", 5, 2),
        "livenessProbe": http_probe("/healthz", 10, 6, timeout=5),
        "lifecycle": {"preStop": {"sleep": {"seconds": opts.pre_stop_seconds}}},
        "securityContext": container_security_context(),
    }
