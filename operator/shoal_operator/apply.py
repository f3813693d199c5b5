"""Server-side apply with one field manager (`shoal-operator`), and removal of children no longer wanted."""

from __future__ import annotations

from typing import Any

from shoal_common import names

from shoal_operator.kube import Kube, path_for

MANAGER = names.FIELD_MANAGER_OPERATOR


async def apply(kube: Kube, obj: dict[str, Any]) -> dict[str, Any]:
    """Apply `obj` (force: the operator owns every field it renders) and return the live object."""
    return await kube.apply(obj, manager=MANAGER, force=True)


async def apply_status(kube: Kube, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
    """Apply the operator's part of an InferenceService status (never its spec)."""
    body = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "status": status,
    }
    return await kube.apply(body, manager=MANAGER, force=True, subresource="status")


async def delete_owned(kube: Kube, kind: str, namespace: str, name: str, owner_uid: str) -> bool:
    """Delete a child the operator created earlier; objects it does not own are left alone."""
    path = path_for(kind, namespace, name)
    live = await kube.get(path)
    if live is None:
        return False
    owners = live.get("metadata", {}).get("ownerReferences", [])
    if not any(o.get("uid") == owner_uid and o.get("controller") for o in owners):
        return False
    return await kube.delete(path, uid=live["metadata"].get("uid"))
