"""The autoscaler's actuation loop (leader only): list, query once, decide per service, write /scale.

Every ``period_seconds``: list the InferenceServices with ``spec.autoscaling.enabled`` and their
model-server pods (one list call each), query Prometheus once per metric kind for all of them, run the
pure policy per service, and when the desired count changes write it through the InferenceService's
**scale subresource** (field manager ``shoal-autoscaler``), post an Event with the reason, and record
``status.autoscaler`` and the conditions ``MetricsAvailable`` / ``ScalingLimited`` (status writes only
when something changed).

The operator's composition root (``runner.py``) builds it with its metrics source and collectors and runs
``await Autoscaler(...).run(stop)`` while it holds the leader Lease; ``cycle()`` runs one pass (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from shoal_common import names
from shoal_common.series import SeriesBuilder
from shoal_common.timestamps import rfc3339

from shoal_operator.api import InferenceService
from shoal_operator.kube import ApiError

from . import adapter, wake
from .kinds import ServiceKey, Signal
from .metrics import ServiceQuery, Snapshot
from .model import Decision, Direction, Observation, PolicyInput, PolicyState, Reason
from .policy import decide
from .report import PodCounts, count_pods, last_decision, live_pods, status_patch

log = logging.getLogger("shoal.autoscaler")

MANAGER = names.FIELD_MANAGER_AUTOSCALER
EmitEvent = Callable[..., Awaitable[None]]


class KubeLike(Protocol):
    """What the loop needs of the API client (`shoal_operator.kube.Kube`)."""

    async def list(
        self, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[Any]: ...

    async def apply(
        self, obj: dict[str, Any], *, manager: str, force: bool = True, subresource: str | None = None
    ) -> dict[str, Any]: ...

    async def scale(self, namespace: str, name: str, replicas: int, *, manager: str) -> dict[str, Any]: ...


class MetricsSourceLike(Protocol):
    def collect(self, services: list[ServiceQuery], now: float | None = None) -> Snapshot: ...


class FrontEndProbeLike(Protocol):
    """Asks routers, endpoint pickers and entry points how many requests they hold (`wake.FrontEndProbe`)."""

    async def held(self, targets: Mapping[ServiceKey, list[wake.HeldSource]]) -> dict[ServiceKey, float]: ...


@dataclass(frozen=True)
class AutoscalerSettings:
    #: One cycle costs one Prometheus query per metric kind and two list calls (three while a service is
    #: at zero), whatever the number of services; 3 s keeps a decision within 10 s of a load step at a
    #: 5 s scrape interval.
    period_seconds: float = 3.0
    namespaces: tuple[str, ...] = ()
    #: While a service is at zero, its routers, endpoint pickers or entry points are asked for held
    #: requests this often between cycles (`wake.py`); 0: only through Prometheus, once a cycle.
    wake_poll_seconds: float = 0.5


class AutoscalerMetrics:
    """The loop's collectors; built once per process by the composition root."""

    def __init__(self, registry: CollectorRegistry) -> None:
        s = SeriesBuilder(registry)
        self.desired = s.gauge(
            "shoal_autoscaler_desired_replicas",
            "Replicas the autoscaler wants for an InferenceService.",
            "namespace",
            "inferenceservice",
        )
        self.decisions = s.counter(
            "shoal_autoscaler_decisions_total",
            "Autoscaler decisions (one per service per cycle) by direction and reason.",
            "direction",
            "reason",
        )
        self.cycle_errors = s.counter("shoal_autoscaler_cycle_errors_total", "Autoscaler cycles that failed.")


@dataclass
class ServiceState:
    policy: PolicyState | None = None
    last_status: dict[str, Any] | None = None
    last_scale_time: str | None = None
    last_decision: dict[str, Any] | None = None
    last_reason: Reason | None = None


#: Holds that are the normal state of a quiet service: not worth a log line.
QUIET = frozenset({Reason.WITHIN_TOLERANCE, Reason.IDLE})


@dataclass
class CycleResult:
    namespace: str
    name: str
    decision: Decision
    scaled: bool
    status: dict[str, Any] = field(default_factory=dict)


Listed = tuple[dict[str, Any], InferenceService]


class Autoscaler:
    def __init__(
        self,
        kube: KubeLike,
        settings: AutoscalerSettings,
        source: MetricsSourceLike,
        metrics: AutoscalerMetrics,
        emit_event: EmitEvent | None = None,
        *,
        clock: Callable[[], float] = time.time,
        is_leader: Callable[[], bool] = lambda: True,
        probe: FrontEndProbeLike | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.source = source
        self.metrics = metrics
        self.emit_event = emit_event
        self.clock = clock
        self.is_leader = is_leader
        self.probe = probe
        self.services: dict[tuple[str, str], ServiceState] = {}
        self.last_snapshot: Snapshot | None = None
        #: Where to read the held counts of the services the last cycle left at zero (what `pause` polls).
        self.wake_targets: dict[ServiceKey, list[wake.HeldSource]] = {}

    # ------------------------------------------------------------------------------------------ reads
    async def _list(self, kind: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for ns in self.settings.namespaces or (None,):
            items.extend(await self.kube.list(kind, ns, label_selector))
        return items

    async def _autoscaled(self) -> list[Listed]:
        out: list[Listed] = []
        for body in await self._list("InferenceService"):
            if not ((body.get("spec") or {}).get("autoscaling") or {}).get("enabled"):
                continue
            body.setdefault("apiVersion", names.API_VERSION)
            body.setdefault("kind", names.KIND)
            try:
                out.append((body, InferenceService.model_validate(body)))
            except ValidationError as exc:
                name = body.get("metadata", {}).get("name")
                log.warning("skipping invalid InferenceService %s: %s", name, exc)
        return out

    def _forget_gone(self, isvcs: list[Listed]) -> None:
        live = {(i.namespace, i.name) for _, i in isvcs}
        for key in list(self.services):
            if key not in live:
                del self.services[key]
                with contextlib.suppress(KeyError):
                    self.metrics.desired.remove(*key)

    # ------------------------------------------------------------------------------------------ one pass
    async def cycle(self, held_now: Mapping[ServiceKey, float] | None = None) -> list[CycleResult]:
        """One pass. `held_now`: requests the front ends of services at zero were just seen holding
        (`pause`), fresher than Prometheus's figure."""
        isvcs = await self._autoscaled()
        self._forget_gone(isvcs)
        self.wake_targets = {}
        if not isvcs:
            return []
        # Every pod of an InferenceService is a live source of its series (the router's and the endpoint
        # picker's queues count towards QueueDepth); only model-server pods are capacity.
        listed = await self._list("Pod", names.LABEL_ISVC)
        model_pods = [p for p in listed if _component(p) == names.COMPONENT_MODEL_SERVER]
        pods, names_of = count_pods(model_pods), live_pods(listed)
        queries = [
            ServiceQuery(
                i.namespace,
                i.name,
                adapter.signals(i.spec),
                adapter.quantile(i.spec),
                adapter.overrides(i.spec),
                pods=names_of.get((i.namespace, i.name), frozenset()),
            )
            for _, i in isvcs
        ]
        snapshot = await asyncio.to_thread(self.source.collect, queries)
        self.last_snapshot = snapshot
        now = self.clock()
        results = []
        for body, isvc in isvcs:
            counts = pods.get((isvc.namespace, isvc.name), PodCounts())
            held = (held_now or {}).get((isvc.namespace, isvc.name))
            try:
                results.append(await self._one(body, isvc, counts, snapshot, now, held))
            except ApiError as exc:  # one service's API trouble must not stop the others
                log.warning("autoscaling %s/%s failed: %s", isvc.namespace, isvc.name, exc)
        at_zero = frozenset((r.namespace, r.name) for r in results if r.decision.desired == 0)
        self.wake_targets = await self._wake_targets(listed, at_zero)
        return results

    async def _wake_targets(
        self, listed: list[dict[str, Any]], at_zero: frozenset[ServiceKey]
    ) -> dict[ServiceKey, list[wake.HeldSource]]:
        """The services' own front ends, and the namespaces' shared entry points (listed only while some
        service is at zero, and only when the wake poll is on: one more list call then)."""
        if not at_zero or self.settings.wake_poll_seconds <= 0:
            return {}
        try:
            entry = await self._list("Pod", f"{names.LABEL_COMPONENT}={names.COMPONENT_ENTRY_POINT}")
        except ApiError as exc:  # the services' own front ends are still asked
            log.warning("listing the entry points failed: %s", exc)
            entry = []
        return wake.front_end_targets(listed + entry, at_zero)

    async def _one(
        self,
        body: dict[str, Any],
        isvc: InferenceService,
        pods: PodCounts,
        snapshot: Snapshot,
        now: float,
        held: float | None = None,
    ) -> CycleResult:
        key = (isvc.namespace, isvc.name)
        st = self.services.setdefault(key, ServiceState())
        inp = PolicyInput(
            now=now,
            spec_replicas=isvc.spec.replicas,
            ready_replicas=pods.ready,
            starting_replicas=pods.starting,
            unschedulable_replicas=pods.unschedulable,
            observations=_with_held(snapshot.for_service(*key), held, now),
            startup_seconds=pods.startup_seconds,
        )
        decision, st.policy = decide(adapter.policy_config(isvc.spec), inp, st.policy)
        self.metrics.decisions.labels(direction=decision.direction.value, reason=decision.reason.value).inc()
        self.metrics.desired.labels(*key).set(decision.desired)
        scaled = False
        if decision.changed and self.is_leader():
            await self.kube.scale(isvc.namespace, isvc.name, decision.desired, manager=MANAGER)
            scaled = True
            st.last_scale_time = rfc3339(now)
            st.last_decision = last_decision(decision)
            await self._announce(body, key, decision)
        elif decision.reason is not st.last_reason and decision.reason not in QUIET:
            # A hold (cold start, rate limit, missing metrics, ...) is logged when it starts, so a service
            # whose metrics ask for more is never silent for minutes.
            log.info(
                "holding",
                extra={
                    "namespace": key[0],
                    "inferenceservice": key[1],
                    "replicas": decision.current,
                    "reason": decision.reason.value,
                    "detail": decision.message,
                },
            )
        st.last_reason = decision.reason
        if (
            not scaled
            and st.last_decision is None
            and body.get("status", {}).get("autoscaler", {}).get("lastDecision")
        ):
            # keep what a previous leader recorded
            previous = body["status"]["autoscaler"]
            st.last_decision = previous.get("lastDecision")
            st.last_scale_time = previous.get("lastScaleTime")
        status = status_patch(body, decision, pods, st.last_scale_time, st.last_decision)
        if status != st.last_status and self.is_leader():
            await self.kube.apply(status, manager=MANAGER, subresource="status")
            st.last_status = status
        return CycleResult(key[0], key[1], decision, scaled, status)

    async def _announce(self, body: dict[str, Any], key: tuple[str, str], d: Decision) -> None:
        """The Event (reason: the typed decision reason) and the log line for a scale."""
        if self.emit_event is not None:
            message = f"scaled {d.current} -> {d.desired}: {d.message}"
            try:
                await self.emit_event(body, "Normal", d.reason.value, message, component=MANAGER)
            except Exception:  # events are best effort
                log.warning("could not post the scale event", exc_info=True)
        log.info(
            "scaled",
            extra={
                "namespace": key[0],
                "inferenceservice": key[1],
                "from": d.current,
                "to": d.desired,
                "reason": d.reason.value,
                "detail": d.message,
            },
        )

    # ------------------------------------------------------------------------------------------ loop
    async def pause(self, stop: asyncio.Event, seconds: float) -> dict[ServiceKey, float]:
        """Waits `seconds` (or until `stop`). While services are at zero, asks their front ends every
        `wake_poll_seconds` and returns early with what they hold as soon as one holds a request."""
        deadline = time.monotonic() + seconds
        poll = self.settings.wake_poll_seconds
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wait = left
            if self.probe is not None and poll > 0 and self.wake_targets:
                found = await self._held()
                if found:
                    return found
                wait = min(poll, max(deadline - time.monotonic(), 0.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
        return {}

    async def _held(self) -> dict[ServiceKey, float]:
        """The front ends' answer; a failure to ask is logged and counts as nothing held (Prometheus still
        wakes the service at the next cycle), never an end to the loop."""
        assert self.probe is not None
        try:
            return await self.probe.held(self.wake_targets)
        except Exception:
            log.warning("asking the front ends of services at zero failed", exc_info=True)
            return {}

    async def run(self, stop: asyncio.Event) -> None:
        period = self.settings.period_seconds
        log.info("autoscaler started", extra={"period_seconds": period})
        held_now: dict[ServiceKey, float] = {}
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.cycle(held_now)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.metrics.cycle_errors.inc()
                log.exception("autoscaler cycle failed")
            held_now = await self.pause(stop, max(period - (time.monotonic() - started), 0.0))


__all__ = [
    "Autoscaler",
    "AutoscalerMetrics",
    "AutoscalerSettings",
    "CycleResult",
    "Direction",
    "Reason",
    "count_pods",
]


def _with_held(
    observations: Mapping[Signal, Observation], held: float | None, now: float
) -> Mapping[Signal, Observation]:
    """The front ends' held count read from them directly, when it is more than Prometheus's figure."""
    scraped = observations.get(Signal.ROUTER_PENDING)
    if held is None or (scraped is not None and scraped.error is None and (scraped.value or 0.0) >= held):
        return observations
    return {**observations, Signal.ROUTER_PENDING: Observation(held, now, series=1)}


def _component(pod: dict[str, Any]) -> str | None:
    labels: dict[str, str] = pod.get("metadata", {}).get("labels") or {}
    return labels.get(names.LABEL_COMPONENT)
