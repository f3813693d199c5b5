"""The autoscaler's actuation loop (leader only): list, query once, decide per service, write /scale.

Every ``period_seconds``: list the InferenceServices with ``spec.autoscaling.enabled`` and their
model-server pods (one list call each), query Prometheus once per metric kind for all of them, run the
pure policy per service, and when the desired count changes write it through the InferenceService's
**scale subresource** (server-side apply, field manager ``shoal-autoscaler``), post an Event with the
reason, and record ``status.autoscaler`` and the conditions ``MetricsAvailable`` / ``ScalingLimited``
(status writes only when something changed).

Entry points: ``await run(ctx)`` (what the operator's leader-only hook calls) or
``await Autoscaler(kube, settings, registry, emit_event).run(stop)``; ``cycle()`` runs one pass (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError
from shoal_common import names

from shoal_operator import conditions
from shoal_operator.api import InferenceService
from shoal_operator.kube import ApiError, path_for

from . import adapter
from .metrics import MetricsSource, QueryTemplate, ServiceQuery, Snapshot
from .policy import Decision, Direction, PolicyInput, PolicyState, Reason, Signal, decide

log = logging.getLogger("shoal.autoscaler")

MANAGER = names.FIELD_MANAGER_AUTOSCALER
EmitEvent = Callable[..., Awaitable[None]]


class KubeLike(Protocol):
    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: Any = None,
        content_type: str | None = None,
    ) -> dict[str, Any]: ...

    async def apply(
        self, obj: dict[str, Any], *, manager: str, force: bool = True, subresource: str | None = None
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class AutoscalerSettings:
    prometheus_url: str
    #: One cycle costs one Prometheus query per metric kind and two list calls, whatever the number of
    #: services; 3 s keeps a decision within 10 s of a load step at a 5 s scrape interval.
    period_seconds: float = 3.0
    namespaces: tuple[str, ...] = ()
    templates: Mapping[Signal, QueryTemplate] | None = None
    prometheus_timeout_seconds: float = 5.0


class AutoscalerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.desired = Gauge(
            "shoal_autoscaler_desired_replicas",
            "Replicas the autoscaler wants for an InferenceService.",
            ["namespace", "inferenceservice"],
            registry=registry,
        )
        self.decisions = Counter(
            "shoal_autoscaler_decisions_total",
            "Autoscaler decisions (one per service per cycle) by direction and reason.",
            ["direction", "reason"],
            registry=registry,
        )
        self.cycle_errors = Counter(
            "shoal_autoscaler_cycle_errors_total", "Autoscaler cycles that failed.", registry=registry
        )


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, AutoscalerMetrics] = weakref.WeakKeyDictionary()


def metrics_for(registry: CollectorRegistry) -> AutoscalerMetrics:
    """One set of collectors per registry (the loop restarts when leadership comes back)."""
    if registry not in _METRICS:
        _METRICS[registry] = AutoscalerMetrics(registry)
    return _METRICS[registry]


@dataclass
class PodCounts:
    ready: int = 0
    starting: int = 0
    unschedulable: int = 0


@dataclass
class ServiceState:
    policy: PolicyState | None = None
    last_status: dict[str, Any] | None = None
    last_scale_time: str | None = None
    last_decision: dict[str, Any] | None = None


@dataclass
class CycleResult:
    namespace: str
    name: str
    decision: Decision
    scaled: bool
    status: dict[str, Any] = field(default_factory=dict)


def count_pods(items: list[dict[str, Any]]) -> dict[tuple[str, str], PodCounts]:
    out: dict[tuple[str, str], PodCounts] = {}
    for pod in items:
        meta = pod.get("metadata", {})
        isvc = (meta.get("labels") or {}).get(names.LABEL_ISVC)
        if not isvc or meta.get("deletionTimestamp"):
            continue
        status = pod.get("status", {}) or {}
        phase = status.get("phase")
        if phase in ("Succeeded", "Failed"):
            continue
        conds = {c.get("type"): c for c in status.get("conditions") or []}
        counts = out.setdefault((str(meta.get("namespace")), str(isvc)), PodCounts())
        if (conds.get("Ready") or {}).get("status") == "True":
            counts.ready += 1
            continue
        counts.starting += 1
        sched = conds.get("PodScheduled") or {}
        if phase == "Pending" and sched.get("status") == "False" and sched.get("reason") == "Unschedulable":
            counts.unschedulable += 1
    return out


def _now_rfc3339(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Autoscaler:
    def __init__(
        self,
        kube: KubeLike,
        settings: AutoscalerSettings,
        registry: CollectorRegistry | None = None,
        emit_event: EmitEvent | None = None,
        *,
        source: MetricsSource | None = None,
        clock: Callable[[], float] = time.time,
        is_leader: Callable[[], bool] = lambda: True,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.metrics = metrics_for(registry if registry is not None else CollectorRegistry())
        self.emit_event = emit_event
        self.source = source or MetricsSource(
            settings.prometheus_url, settings.templates, settings.prometheus_timeout_seconds
        )
        self.clock = clock
        self.is_leader = is_leader
        self.services: dict[tuple[str, str], ServiceState] = {}
        self.last_snapshot: Snapshot | None = None

    # ------------------------------------------------------------------------------------------ reads
    async def _list(self, kind: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for ns in self.settings.namespaces or (None,):
            body = await self.kube.request("GET", path_for(kind, ns), params=params)
            items.extend(body.get("items", []))
        return items

    # ------------------------------------------------------------------------------------------ one pass
    async def cycle(self) -> list[CycleResult]:
        isvcs: list[tuple[dict[str, Any], InferenceService]] = []
        for body in await self._list("InferenceService"):
            if not ((body.get("spec") or {}).get("autoscaling") or {}).get("enabled"):
                continue
            body.setdefault("apiVersion", names.API_VERSION)
            body.setdefault("kind", names.KIND)
            try:
                isvcs.append((body, InferenceService.model_validate(body)))
            except ValidationError as exc:
                log.warning(
                    "skipping invalid InferenceService %s: %s", body.get("metadata", {}).get("name"), exc
                )
        live = {(i.namespace, i.name) for _, i in isvcs}
        for key in list(self.services):
            if key not in live:
                del self.services[key]
                with contextlib.suppress(KeyError):
                    self.metrics.desired.remove(*key)
        if not isvcs:
            return []
        pods = count_pods(
            await self._list(
                "Pod", {"labelSelector": f"{names.LABEL_COMPONENT}={names.COMPONENT_MODEL_SERVER}"}
            )
        )
        queries = [
            ServiceQuery(
                i.namespace,
                i.name,
                adapter.signals(i.spec),
                adapter.quantile(i.spec),
                adapter.overrides(i.spec),
            )
            for _, i in isvcs
        ]
        snapshot = await asyncio.to_thread(self.source.collect, queries)
        self.last_snapshot = snapshot
        now = self.clock()
        results = []
        for body, isvc in isvcs:
            try:
                results.append(
                    await self._one(
                        body, isvc, pods.get((isvc.namespace, isvc.name), PodCounts()), snapshot, now
                    )
                )
            except ApiError as exc:
                log.warning("autoscaling %s/%s failed: %s", isvc.namespace, isvc.name, exc)
        return results

    async def _one(
        self, body: dict[str, Any], isvc: InferenceService, pods: PodCounts, snapshot: Snapshot, now: float
    ) -> CycleResult:
        key = (isvc.namespace, isvc.name)
        st = self.services.setdefault(key, ServiceState())
        cfg = adapter.policy_config(isvc.spec)
        inp = PolicyInput(
            now=now,
            spec_replicas=isvc.spec.replicas,
            ready_replicas=pods.ready,
            starting_replicas=pods.starting,
            unschedulable_replicas=pods.unschedulable,
            observations=snapshot.for_service(*key),
        )
        decision, st.policy = decide(cfg, inp, st.policy)
        self.metrics.decisions.labels(direction=decision.direction.value, reason=decision.reason.value).inc()
        self.metrics.desired.labels(*key).set(decision.desired)
        scaled = False
        if decision.changed and self.is_leader():
            await self._scale(isvc, decision.desired)
            scaled = True
            st.last_scale_time = _now_rfc3339(now)
            st.last_decision = {
                "from": decision.current,
                "to": decision.desired,
                "reason": decision.reason.value,
                "inputs": {**decision.inputs, "message": decision.message[:1000]},
            }
            if self.emit_event is not None:
                with contextlib.suppress(Exception):
                    await self.emit_event(
                        body,
                        "Normal",
                        decision.reason.value,
                        f"scaled {decision.current} -> {decision.desired}: {decision.message}",
                        component=MANAGER,
                    )
            log.info(
                "scaled",
                extra={
                    "namespace": key[0],
                    "inferenceservice": key[1],
                    "from": decision.current,
                    "to": decision.desired,
                    "reason": decision.reason.value,
                    "detail": decision.message,
                },
            )
        elif st.last_decision is None and body.get("status", {}).get("autoscaler", {}).get("lastDecision"):
            # keep what a previous leader recorded
            previous = body["status"]["autoscaler"]
            st.last_decision = previous.get("lastDecision")
            st.last_scale_time = previous.get("lastScaleTime")
        status = self._status(body, decision, pods, st)
        if status != st.last_status and self.is_leader():
            await self.kube.apply(status, manager=MANAGER, subresource="status")
            st.last_status = status
        return CycleResult(key[0], key[1], decision, scaled, status)

    async def _scale(self, isvc: InferenceService, replicas: int) -> None:
        # A merge patch, not server-side apply: the API server cannot convert an apply patch of a custom
        # resource's /scale (autoscaling/v1 Scale) when the value changes ("request to convert CR to an
        # invalid group/version").  The field manager is still recorded on spec.replicas.
        await self.kube.request(
            "PATCH",
            path_for("InferenceService", isvc.namespace, isvc.name, "scale"),
            params={"fieldManager": MANAGER},
            json_body={"spec": {"replicas": replicas}},
            content_type="application/merge-patch+json",
        )

    def _status(self, body: dict[str, Any], d: Decision, pods: PodCounts, st: ServiceState) -> dict[str, Any]:
        existing = (body.get("status") or {}).get("conditions") or []
        conds = conditions.only(existing, conditions.AUTOSCALER_TYPES)
        if d.metrics_unavailable:
            conds = conditions.set_condition(
                conds,
                conditions.METRICS_AVAILABLE,
                False,
                _unavailable_reason(d),
                d.unavailable_reason[:1000],
            )
        else:
            conds = conditions.set_condition(
                conds, conditions.METRICS_AVAILABLE, True, "MetricsFresh", "every configured metric is fresh"
            )
        if pods.unschedulable:
            conds = conditions.set_condition(
                conds,
                conditions.SCALING_LIMITED,
                True,
                "PodsUnschedulable",
                f"{pods.unschedulable} model-server pods cannot be scheduled (no node with free GPUs?)",
            )
        elif d.limited_at_max:
            conds = conditions.set_condition(
                conds,
                conditions.SCALING_LIMITED,
                True,
                "TooManyReplicas",
                f"metrics ask for more than maxReplicas ({d.desired}): {d.message[:800]}",
            )
        else:
            conds = conditions.set_condition(
                conds,
                conditions.SCALING_LIMITED,
                False,
                "DesiredWithinRange",
                "the desired count is within bounds",
            )
        autoscaler: dict[str, Any] = {"desiredReplicas": d.desired}
        if st.last_scale_time:
            autoscaler["lastScaleTime"] = st.last_scale_time
        if st.last_decision:
            autoscaler["lastDecision"] = st.last_decision
        meta = body.get("metadata", {})
        return {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
            "status": {"autoscaler": autoscaler, "conditions": conds},
        }

    # ------------------------------------------------------------------------------------------ loop
    async def run(self, stop: asyncio.Event) -> None:
        period = self.settings.period_seconds
        log.info(
            "autoscaler started", extra={"period_seconds": period, "prometheus": self.settings.prometheus_url}
        )
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.cycle()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.metrics.cycle_errors.inc()
                log.exception("autoscaler cycle failed")
            remaining = max(period - (time.monotonic() - started), 0.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=remaining)


def _unavailable_reason(d: Decision) -> str:
    text = d.unavailable_reason
    if "Prometheus query failed" in text:
        return "PrometheusUnavailable"
    if "stale" in text:
        return "MetricsStale"
    if "no data" in text:
        return "NoData"
    if "nan" in text.lower() or "inf" in text.lower():
        return "InvalidValue"
    return "MetricsUnavailable"


async def run(ctx: Any) -> None:
    """Entry point for the operator (``handlers.start_autoscaler``): runs until ``ctx.stop`` is set.

    Called only while this replica holds the leader Lease (the operator cancels it when leadership is
    lost).  ``ctx`` is ``shoal_operator.context.OperatorContext``.
    """
    s = ctx.settings
    settings = AutoscalerSettings(
        prometheus_url=s.prometheus_url,
        period_seconds=float(getattr(s, "autoscaler_period_seconds", 3.0)),
        namespaces=tuple(getattr(s, "namespaces", ()) or ()),
    )
    await Autoscaler(ctx.kube, settings, ctx.registry, ctx.emit_event).run(ctx.stop)


__all__ = ["Autoscaler", "AutoscalerSettings", "CycleResult", "Direction", "Reason", "count_pods", "run"]
