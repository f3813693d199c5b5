"""Pure builders: an InferenceService (and operator-wide options) in, child manifests out.

`desired_children` is the whole picture: what must exist (applied by server-side apply) and what must not
(deleted if the operator created it earlier, e.g. the PDB after scaling to one replica).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shoal_common import names

from shoal_operator.api import InferenceService
from shoal_operator.builders import gateway, model_server, network_policy, router
from shoal_operator.builders.common import BuildOptions, labels, owner_reference, selector_string, url

__all__ = [
    "BuildOptions",
    "Children",
    "desired_children",
    "labels",
    "owner_reference",
    "selector_string",
    "url",
]


@dataclass
class Children:
    apply: list[dict[str, Any]] = field(default_factory=list)
    absent: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)


def desired_children(isvc: InferenceService, opts: BuildOptions) -> Children:
    out = Children()
    name = isvc.name
    # Order matters a little: RBAC and Services before the Deployments that use them.
    if isvc.spec.routing.mode == "Router":
        out.apply += [router.service_account(isvc), router.role(isvc), router.role_binding(isvc)]
    else:
        out.absent += [
            ("RoleBinding", names.router_name(name)),
            ("Role", names.router_name(name)),
            ("ServiceAccount", names.router_name(name)),
            ("Deployment", names.router_name(name)),
        ]
    out.apply += [
        model_server.service(isvc),
        router.public_service(isvc),
        model_server.deployment(isvc, opts),
    ]
    if isvc.spec.routing.mode == "Router":
        out.apply.append(router.deployment(isvc, opts))
    if isvc.spec.replicas > 1:
        out.apply.append(model_server.pod_disruption_budget(isvc))
    else:
        out.absent.append(("PodDisruptionBudget", names.model_server_name(name)))
    if opts.podmonitor_available:
        out.apply.append(model_server.pod_monitor(isvc))
    gw_apply, gw_absent = gateway.children(isvc, opts)
    out.apply += gw_apply
    out.absent += gw_absent
    out.apply += network_policy.policies(isvc)
    out.absent += [("NetworkPolicy", n) for n in network_policy.absent_policies(isvc)]
    return out
