"""One idempotent reconcile per InferenceService: desired children by server-side apply, then status.

Called for create, update, resume, the drift timer and child events alike; it never branches on why it
runs. Bad input becomes `Degraded` plus one Warning Event (on the transition), never an exception loop;
API trouble raises `TransientError` so the caller retries with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pydantic
from shoal_common import names

from shoal_operator import adapters as adapter_sync
from shoal_operator import apply as ssa
from shoal_operator import conditions as cond
from shoal_operator import status as status_mod
from shoal_operator.api import InferenceService
from shoal_operator.builders import BuildOptions, desired_children, gateway
from shoal_operator.builders.model_server import pvc_claim
from shoal_operator.kube import ApiError, Kube, path_for
from shoal_operator.metrics import OperatorMetrics

log = logging.getLogger("shoal.operator")

# (body, type "Normal"/"Warning", reason, message)
EventFn = Callable[[dict[str, Any], str, str, str], Awaitable[None] | None]


class TransientError(Exception):
    """The API server could not be reached or answered 5xx/409/429: retry later."""


@dataclass(frozen=True)
class Outcome:
    result: str  # "ok" | "degraded" | "invalid"
    ready: bool
    status: dict[str, Any]


@dataclass
class ReconcilerConfig:
    build: BuildOptions
    podmonitor_check_seconds: float = 300.0


class Reconciler:
    def __init__(
        self, kube: Kube, config: ReconcilerConfig, metrics: OperatorMetrics, emit: EventFn | None = None
    ) -> None:
        self.kube = kube
        self.config = config
        self.metrics = metrics
        self.emit = emit
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._podmonitor: tuple[float, bool] | None = None
        # (owner uid, kind, name) of children confirmed absent: no GET/DELETE on every reconcile.
        self._known_absent: set[tuple[str, str, str]] = set()
        self._pending_refresh: set[tuple[str, str]] = set()

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    def forget(self, namespace: str, name: str, uid: str | None = None) -> None:
        self._locks.pop((namespace, name), None)
        if uid:
            self._known_absent = {k for k in self._known_absent if k[0] != uid}

    async def _podmonitor_available(self) -> bool:
        now = time.monotonic()
        if self._podmonitor is None or now - self._podmonitor[0] > self.config.podmonitor_check_seconds:
            self._podmonitor = (
                now,
                self._podmonitor[1] if self._podmonitor else False,
            )  # one check at a time
            self.kube.forget_apis()
            try:
                found = await self.kube.has_api("monitoring.coreos.com/v1", "podmonitors")
            except ApiError:
                found = False
            self._podmonitor = (now, found)
        return self._podmonitor[1]

    async def _emit(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        if self.emit is None:
            return
        try:
            result = self.emit(body, type_, reason, message)
            if result is not None:
                await result
        except Exception:  # events are best effort
            log.warning("could not post event", exc_info=True)

    async def reconcile(
        self, body: dict[str, Any], *, apply_children: bool = True, fresh: bool = False
    ) -> Outcome:
        """`fresh`: the object was never reconciled (no status yet), so no stale child can exist."""
        meta = body.get("metadata", {})
        namespace, name = str(meta.get("namespace")), str(meta.get("name"))
        started = time.perf_counter()
        result = "error"
        try:
            async with self.lock(namespace, name):
                outcome = await self._reconcile(body, apply_children=apply_children, fresh=fresh)
            result = outcome.result
            return outcome
        finally:
            self.metrics.observe_reconcile(result, time.perf_counter() - started)

    async def refresh(self, namespace: str, name: str, *, apply_children: bool) -> Outcome | None:
        """Reconcile by name, reading the object under the lock (so the status base is current).

        Coalesces: while one refresh of an object waits for the lock, further status-only refreshes of it
        are dropped (the waiting one reads the newest state anyway)."""
        key = (namespace, name)
        if not apply_children and key in self._pending_refresh:
            return None
        self._pending_refresh.add(key)
        waiting = True
        started = time.perf_counter()
        result = "error"
        try:
            async with self.lock(namespace, name):
                self._pending_refresh.discard(key)
                waiting = False
                try:
                    body = await self.kube.get(path_for("InferenceService", namespace, name))
                except ApiError as exc:
                    raise TransientError(str(exc)) from exc
                if body is None or body.get("metadata", {}).get("deletionTimestamp"):
                    result = "gone"
                    return None
                outcome = await self._reconcile(body, apply_children=apply_children)
            result = outcome.result
            return outcome
        finally:
            if waiting:  # cancelled before getting the lock
                self._pending_refresh.discard(key)
            self.metrics.observe_reconcile(result, time.perf_counter() - started)

    async def _reconcile(self, body: dict[str, Any], *, apply_children: bool, fresh: bool = False) -> Outcome:
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        try:
            isvc = InferenceService.model_validate(body)
        except pydantic.ValidationError as exc:
            problem = status_mod.Problem("InvalidSpec", _validation_message(exc))
            self.metrics.error("invalid_spec")
            return await self._write_invalid(body, problem)

        observed = status_mod.Observed()
        try:
            observed.problems += await self._check_references(isvc)
            if apply_children:
                opts = self._build_options(await self._podmonitor_available())
                children = desired_children(isvc, opts)
                for obj in children.apply:
                    await self._apply_child(isvc, obj, observed)
                if not fresh:
                    await self._delete_absent(isvc, children.absent)
            else:
                opts = self._build_options(self._podmonitor[1] if self._podmonitor else False)
                observed.model = await self.kube.get(
                    path_for("Deployment", namespace, names.model_server_name(name))
                )
                if isvc.spec.routing.mode != "Service":
                    observed.router = await self.kube.get(
                        path_for("Deployment", namespace, gateway.front_end_name(isvc))
                    )
            new_status = status_mod.compute(isvc, observed, opts)
            adapters = await adapter_sync.sync(self.kube, isvc)  # live LoRA changes, no rollout
            if adapters is not None:
                new_status["adapters"] = adapters
            await self._write_status(body, isvc, new_status)
        except ApiError as exc:
            if exc.status == 404 and "inferenceservices" in exc.message:
                return Outcome("gone", False, {})
            self.metrics.error("api")
            raise TransientError(str(exc)) from exc
        ready = cond.find(new_status["conditions"], cond.READY)
        result = "degraded" if observed.problems else "ok"
        return Outcome(result, bool(ready and ready["status"] == "True"), new_status)

    async def _apply_child(
        self, isvc: InferenceService, obj: dict[str, Any], observed: status_mod.Observed
    ) -> None:
        """Applies one child; a refusal that retrying cannot fix becomes a problem in `observed`."""
        try:
            live = await ssa.apply(self.kube, obj)
        except ApiError as exc:
            if exc.transient:
                raise
            if gateway.crd_missing(obj, exc.status):
                observed.problems.append(
                    status_mod.Problem("InferencePoolCRDMissing", gateway.CRD_MISSING_MESSAGE)
                )
                return
            # 4xx: the spec rendered into something the API server refuses (e.g. a bad
            # toleration in the free-form scheduling fields). Report, do not retry hot.
            self.metrics.error("apply_rejected")
            observed.problems.append(
                status_mod.Problem("ChildRejected", f"{obj['kind']} {obj['metadata']['name']}: {exc.message}")
            )
            return
        self._remember(obj, live, observed, isvc)
        self._known_absent.discard((isvc.uid, obj["kind"], obj["metadata"]["name"]))

    async def _delete_absent(self, isvc: InferenceService, absent: list[tuple[str, str]]) -> None:
        """Delete children the spec no longer wants, once each: confirmed absences are remembered.

        A fresh object (no status yet) skips this: nothing stale can exist yet. Its absences are not
        remembered, though: a fresh-looking object may have had children applied by an attempt whose
        status write failed (a PDB from replicas 2, before a change to 1); the next reconcile that is
        not fresh (retry, drift, child event) checks them."""
        for kind, child in absent:
            key = (isvc.uid, kind, child)
            if key not in self._known_absent:
                await ssa.delete_owned(self.kube, kind, isvc.namespace, child, isvc.uid)
                self._known_absent.add(key)

    def _build_options(self, podmonitor: bool) -> BuildOptions:
        base = self.config.build
        if base.podmonitor_available == podmonitor:
            return base
        return BuildOptions(**{**base.__dict__, "podmonitor_available": podmonitor})

    @staticmethod
    def _remember(
        obj: dict[str, Any], live: dict[str, Any], observed: status_mod.Observed, isvc: InferenceService
    ) -> None:
        if obj["kind"] != "Deployment":
            return
        if obj["metadata"]["name"] == names.model_server_name(isvc.name):
            observed.model = live
        else:
            observed.router = live

    async def _check_references(self, isvc: InferenceService) -> list[status_mod.Problem]:
        """Inputs only the cluster can check: referenced PVCs and Secrets exist."""
        try:
            return await self._check_references_unsafe(isvc)
        except ApiError as exc:
            if exc.status == 403:  # not allowed to look: the check is advisory
                return []
            raise

    async def _check_references_unsafe(self, isvc: InferenceService) -> list[status_mod.Problem]:
        problems: list[status_mod.Problem] = []
        claim = pvc_claim(isvc)
        if claim is not None:
            pvc = await self.kube.get(path_for("PersistentVolumeClaim", isvc.namespace, claim))
            if pvc is None:
                problems.append(
                    status_mod.Problem(
                        "PVCNotFound",
                        f"model.uri {isvc.spec.model.uri}: PersistentVolumeClaim {claim!r} does not exist "
                        f"in namespace {isvc.namespace!r}",
                    )
                )
        secret = isvc.spec.routing.api_keys_secret
        if (
            secret
            and isvc.spec.routing.mode == "Router"
            and await self.kube.get(path_for("Secret", isvc.namespace, secret)) is None
        ):
            problems.append(
                status_mod.Problem(
                    "SecretNotFound",
                    f"routing.apiKeysSecret: Secret {secret!r} does not exist in namespace {isvc.namespace!r}",
                )
            )
        return problems

    async def _write_status(self, body: dict[str, Any], isvc: InferenceService, new: dict[str, Any]) -> None:
        before = (body.get("status") or {}).get("conditions", []) or []
        current = {k: v for k, v in (body.get("status") or {}).items() if k in new}
        current["conditions"] = cond.only(before, cond.OPERATOR_TYPES)
        if current != new:
            await ssa.apply_status(self.kube, isvc.namespace, isvc.name, new)
        if cond.transitioned(before, new["conditions"], cond.DEGRADED):
            degraded = cond.find(new["conditions"], cond.DEGRADED)
            if degraded and degraded["status"] == "True":
                await self._emit(body, "Warning", degraded["reason"], degraded["message"])
            elif cond.find(before, cond.DEGRADED) is not None:
                await self._emit(body, "Normal", "Recovered", "no longer degraded")
        if cond.transitioned(before, new["conditions"], cond.READY):
            ready = cond.find(new["conditions"], cond.READY)
            if ready and ready["status"] == "True":
                await self._emit(body, "Normal", "Ready", ready["message"])

    async def _write_invalid(self, body: dict[str, Any], problem: status_mod.Problem) -> Outcome:
        meta = body["metadata"]
        before = (body.get("status") or {}).get("conditions", []) or []
        gen = meta.get("generation")
        conds = cond.set_condition(
            before, cond.DEGRADED, True, problem.reason, problem.message, observed_generation=gen
        )
        conds = cond.set_condition(
            conds, cond.READY, False, problem.reason, "the spec cannot be served", observed_generation=gen
        )
        conds = cond.set_condition(
            conds,
            cond.PROGRESSING,
            False,
            problem.reason,
            "waiting for a valid spec",
            observed_generation=gen,
        )
        new = {"conditions": cond.only(conds, cond.OPERATOR_TYPES), "observedGeneration": gen}
        try:
            if cond.only(before, cond.OPERATOR_TYPES) != new["conditions"]:
                await ssa.apply_status(self.kube, meta["namespace"], meta["name"], new)
        except ApiError as exc:
            raise TransientError(str(exc)) from exc
        if cond.transitioned(before, conds, cond.DEGRADED):
            await self._emit(body, "Warning", problem.reason, problem.message)
        return Outcome("invalid", False, new)


def _validation_message(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"])
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
