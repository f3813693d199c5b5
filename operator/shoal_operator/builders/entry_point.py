"""An InferenceGateway's children: the multi-model entry point (Deployment `X-entry` with its
ServiceAccount, Role and RoleBinding) and the Service `X` clients call; and the gateway's status.

The entry point is `shoal router --models-gateway X --models-namespace NS`: it watches this
InferenceGateway (splits, selector), the InferenceServices of NS and their model-server pods itself, so
nothing here depends on which InferenceServices exist; the children change only with the gateway's spec.
"""

from __future__ import annotations

from typing import Any

from shoal_common import names

from shoal_operator import conditions as cond
from shoal_operator.api_gateway import InferenceGateway
from shoal_operator.builders.common import (
    BuildOptions,
    pod_security_context,
    prometheus_annotations,
    router_container,
)

COMPONENT = names.COMPONENT_ENTRY_POINT
PRE_STOP_MARGIN_S = 15


def labels(gw: InferenceGateway) -> dict[str, str]:
    return {
        names.LABEL_NAME: "shoal",
        names.LABEL_INSTANCE: gw.name,
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_GATEWAY: gw.name,
        names.LABEL_COMPONENT: COMPONENT,
    }


def selector(gw: InferenceGateway) -> dict[str, str]:
    return {names.LABEL_GATEWAY: gw.name, names.LABEL_COMPONENT: COMPONENT}


def metadata(gw: InferenceGateway, name: str) -> dict[str, Any]:
    owner = {
        "apiVersion": names.API_VERSION,
        "kind": names.GATEWAY_KIND,
        "name": gw.name,
        "uid": gw.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {"name": name, "namespace": gw.namespace, "labels": labels(gw), "ownerReferences": [owner]}


def command(gw: InferenceGateway) -> list[str]:
    spec = gw.spec
    cmd = ["shoal", "router", "--host", "0.0.0.0", "--port", str(names.ROUTER_PORT)]
    cmd += ["--namespace", gw.namespace, "--models-namespace", gw.namespace, "--models-gateway", gw.name]
    cmd += ["--strategy", spec.strategy, "--first-byte-timeout", str(spec.request_timeout_seconds)]
    if spec.api_keys_secret:
        cmd += ["--api-keys-secret", spec.api_keys_secret]
    if spec.rate_limit is not None:
        cmd += ["--rate-limit-rps", str(spec.rate_limit.requests_per_second)]
        if spec.rate_limit.burst is not None:
            cmd += ["--rate-limit-burst", str(spec.rate_limit.burst)]
    return cmd


def service_account(gw: InferenceGateway) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(gw, names.entry_point_name(gw.name)),
    }


def role(gw: InferenceGateway) -> dict[str, Any]:
    """Read-only: the namespace's model-server pods, InferenceServices and InferenceGateways (the entry
    point reads its own), and the API-keys Secret by name."""
    read = ["get", "list", "watch"]
    rules: list[dict[str, Any]] = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": read},
        {"apiGroups": [names.GROUP], "resources": [names.PLURAL, names.GATEWAY_PLURAL], "verbs": read},
    ]
    if gw.spec.api_keys_secret:
        rules.append(
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": [gw.spec.api_keys_secret],
                "verbs": read,
            }
        )
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(gw, names.entry_point_name(gw.name)),
        "rules": rules,
    }


def role_binding(gw: InferenceGateway) -> dict[str, Any]:
    name = names.entry_point_name(gw.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(gw, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": gw.namespace}],
    }


def deployment(gw: InferenceGateway, opts: BuildOptions) -> dict[str, Any]:
    name = names.entry_point_name(gw.name)
    container = router_container("entry-point", command(gw), opts)
    pod_meta = {"labels": labels(gw), "annotations": prometheus_annotations(names.ROUTER_PORT)}
    pod_spec = {
        "serviceAccountName": name,
        "containers": [container],
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": opts.pre_stop_seconds + PRE_STOP_MARGIN_S,
        "enableServiceLinks": False,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(gw, name),
        "spec": {
            "replicas": gw.spec.replicas,
            "selector": {"matchLabels": selector(gw)},
            "revisionHistoryLimit": 3,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": pod_meta, "spec": pod_spec},
        },
    }


def service(gw: InferenceGateway) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(gw, gw.name),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(gw),
            "ports": [{"name": "http", "port": names.SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def children(gw: InferenceGateway, opts: BuildOptions) -> list[dict[str, Any]]:
    """In apply order: RBAC and the Service before the Deployment that uses them."""
    return [service_account(gw), role(gw), role_binding(gw), service(gw), deployment(gw, opts)]


def url(gw: InferenceGateway, opts: BuildOptions) -> str:
    return f"http://{gw.name}.{gw.namespace}.svc.{opts.cluster_domain}"


def status(
    gw: InferenceGateway, live: dict[str, Any] | None, opts: BuildOptions, problem: str | None = None
) -> dict[str, Any]:
    """The gateway's status from its Deployment (None: not there yet) and a problem applying children."""
    st = (live or {}).get("status") or {}
    ready = int(st.get("readyReplicas") or 0)
    before = [c.model_dump(by_alias=True, exclude_none=True, mode="json") for c in gw.status.conditions]
    gen = gw.generation
    if problem:
        conds = cond.set_condition(
            before, cond.READY, False, "ChildRejected", problem, observed_generation=gen
        )
    elif ready:
        message = f"{ready}/{gw.spec.replicas} entry-point replicas ready"
        conds = cond.set_condition(
            before, cond.READY, True, "EntryPointReady", message, observed_generation=gen
        )
    else:
        message = "waiting for an entry-point replica to be ready"
        conds = cond.set_condition(
            before, cond.READY, False, "EntryPointStarting", message, observed_generation=gen
        )
    return {
        "conditions": cond.only(conds, (cond.READY,)),
        "replicas": int(st.get("replicas") or 0),
        "readyReplicas": ready,
        "url": url(gw, opts),
        "observedGeneration": gen,
    }
