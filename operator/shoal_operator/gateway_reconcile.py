"""One idempotent reconcile per InferenceGateway: its entry point's children by server-side apply, then
its status (Ready once an entry-point replica is). Same rules as the InferenceService's reconcile: no
branching on why it runs, bad input becomes `Ready=False` with the reason, API trouble raises
`TransientError` for the caller's retry."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pydantic
from shoal_common import names

from shoal_operator import apply as ssa
from shoal_operator import conditions as cond
from shoal_operator.api_gateway import InferenceGateway
from shoal_operator.builders import BuildOptions, entry_point
from shoal_operator.kube import ApiError, Kube, path_for
from shoal_operator.reconcile import TransientError

log = logging.getLogger("shoal.operator")


class GatewayReconciler:
    def __init__(self, kube: Kube, build: BuildOptions) -> None:
        self.kube = kube
        self.build = build
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)

    async def reconcile(self, body: dict[str, Any]) -> dict[str, Any] | None:
        meta = body.get("metadata", {})
        key = (str(meta.get("namespace")), str(meta.get("name")))
        async with self._locks.setdefault(key, asyncio.Lock()):
            try:
                return await self._reconcile(body)
            except ApiError as exc:
                if exc.status == 404 and names.GATEWAY_PLURAL in exc.message:
                    return None  # deleted meanwhile
                raise TransientError(str(exc)) from exc

    async def refresh(self, namespace: str, name: str) -> dict[str, Any] | None:
        """Reconcile by name (a child changed): the object as it is now."""
        try:
            body = await self.kube.get(path_for(names.GATEWAY_KIND, namespace, name))
        except ApiError as exc:
            raise TransientError(str(exc)) from exc
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return None
        return await self.reconcile(body)

    async def _reconcile(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            gw = InferenceGateway.model_validate(body)
        except pydantic.ValidationError as exc:
            message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
            return await self._write_invalid(body, message)
        problem = await self._service_conflict(gw)
        live: dict[str, Any] | None = None
        for obj in [] if problem else entry_point.children(gw, self.build):
            try:
                applied = await ssa.apply(self.kube, obj)
            except ApiError as exc:
                if exc.transient:
                    raise
                problem = f"{obj['kind']} {obj['metadata']['name']}: {exc.message}"
                break
            if obj["kind"] == "Deployment":
                live = applied
        new = entry_point.status(gw, live, self.build, problem)
        await self._write_status(body, gw, new)
        return new

    async def _service_conflict(self, gw: InferenceGateway) -> str | None:
        """The Service `X` is the URL; one that something else owns (an InferenceService of the same name)
        is never taken over."""
        live = await self.kube.get(path_for("Service", gw.namespace, gw.name))
        owners = ((live or {}).get("metadata") or {}).get("ownerReferences") or []
        theirs = [o for o in owners if o.get("controller") and o.get("uid") != gw.uid]
        if theirs:
            return f"Service {gw.name!r} belongs to {theirs[0].get('kind')} {theirs[0].get('name')!r}"
        return None

    async def _write_status(self, body: dict[str, Any], gw: InferenceGateway, new: dict[str, Any]) -> None:
        current = {k: v for k, v in (body.get("status") or {}).items() if k in new}
        if current == new:
            return
        doc = {
            "apiVersion": names.API_VERSION,
            "kind": names.GATEWAY_KIND,
            "metadata": {"name": gw.name, "namespace": gw.namespace},
            "status": new,
        }
        await self.kube.apply(doc, manager=ssa.MANAGER, force=True, subresource="status")
        before = cond.find((body.get("status") or {}).get("conditions") or [], cond.READY)
        ready = cond.find(new["conditions"], cond.READY)
        if ready and (before is None or before.get("status") != ready["status"]):
            log.info(
                "InferenceGateway readiness changed",
                extra={"gateway": gw.name, "namespace": gw.namespace, "ready": ready["status"]},
            )

    async def _write_invalid(self, body: dict[str, Any], message: str) -> dict[str, Any]:
        meta = body["metadata"]
        gen = meta.get("generation")
        before = (body.get("status") or {}).get("conditions") or []
        conds = cond.set_condition(before, cond.READY, False, "InvalidSpec", message, observed_generation=gen)
        new = {"conditions": cond.only(conds, (cond.READY,)), "observedGeneration": gen}
        doc = {
            "apiVersion": names.API_VERSION,
            "kind": names.GATEWAY_KIND,
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "status": new,
        }
        await self.kube.apply(doc, manager=ssa.MANAGER, force=True, subresource="status")
        return new
