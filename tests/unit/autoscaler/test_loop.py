"""loop.py with a fake API server and a fake metrics source: what gets written, and when."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import pytest
from kubernetes_asyncio.client import Configuration
from prometheus_client import CollectorRegistry
from shoal_operator.autoscaler import wake
from shoal_operator.autoscaler.loop import Autoscaler, AutoscalerMetrics, AutoscalerSettings, count_pods
from shoal_operator.autoscaler.metrics import ServiceQuery, Snapshot
from shoal_operator.autoscaler.policy import Observation, Signal
from shoal_operator.kube import ApiError, Connection, Kube

pytestmark = pytest.mark.unit


def isvc(replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "shoal.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "chat", "namespace": "ns", "uid": "u1"},
        "spec": {
            "model": {"name": "m", "uri": "hf://o/m"},
            "replicas": replicas,
            "autoscaling": {
                "enabled": True,
                "maxReplicas": 6,
                "metrics": [{"type": "QueueDepth", "targetPerReplica": 4}],
            },
        },
    }


def pod(
    ready: bool,
    pending_unschedulable: bool = False,
    deleting: bool = False,
    component: str = "model-server",
    name: str = "",
) -> dict[str, Any]:
    conds = [{"type": "Ready", "status": "True" if ready else "False"}]
    if pending_unschedulable:
        conds.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable"})
    labels = {"shoal.dev/inferenceservice": "chat", "app.kubernetes.io/component": component}
    meta: dict[str, Any] = {"namespace": "ns", "labels": labels}
    if name:
        meta["name"] = name
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "status": {"phase": "Pending" if pending_unschedulable else "Running", "conditions": conds},
    }


def _selected(obj: dict[str, Any], selector: str) -> bool:
    """The API server's equality and existence label selectors (`k=v,k2`), which the loop uses."""
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if key not in labels or (value and labels[key] != value):
            return False
    return True


class FakeKube(Kube):
    """The real client's verbs over an in-memory API server (its one `request` funnel replaced)."""

    def __init__(self, obj: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        super().__init__(Connection(Configuration(host="http://127.0.0.1:9"), None))
        self.obj = obj
        self.pods = pods
        self.writes: list[tuple[str, str, Any]] = []

    async def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:  # type: ignore[override]
        if method == "GET" and path.endswith("/inferenceservices"):
            return {"items": [self.obj]}
        if method == "GET" and path.endswith("/pods"):
            selector = (kw.get("params") or {}).get("labelSelector", "")
            return {"items": [p for p in self.pods if _selected(p, selector)]}
        self.writes.append((method, path, kw))
        if path.endswith("/scale"):
            self.obj["spec"]["replicas"] = kw["json_body"]["spec"]["replicas"]
        if path.endswith("/status"):
            self.obj["status"] = kw["json_body"]["status"]
        return {}


class FakeSource:
    def __init__(self, waiting: float | None, error: str | None = None) -> None:
        self.waiting = waiting
        self.error = error
        self.calls = 0

    def collect(self, services: list[ServiceQuery], now: float | None = None) -> Snapshot:
        self.calls += 1
        self.services = services
        obs = {s: Observation(0.0, time.time() - 1) for s in Signal}
        obs[Signal.QUEUE_DEPTH] = Observation(self.waiting, time.time() - 1, error=self.error)
        return Snapshot({(s.namespace, s.name): dict(obs) for s in services}, ["q"], {})


def test_count_pods() -> None:
    c = count_pods([pod(True), pod(False), pod(False, pending_unschedulable=True), pod(True, deleting=True)])
    got = c[("ns", "chat")]
    assert (got.ready, got.starting, got.unschedulable) == (1, 2, 1)


async def test_router_pods_are_series_sources_but_not_capacity() -> None:
    """The router's queue is part of QueueDepth (it holds what no longer queues in the replicas), so its
    pods are live series sources; only model-server pods count as replicas."""
    pods = [pod(True, name="chat-model-a"), pod(True, component="router", name="chat-router-b")]
    kube = FakeKube(isvc(1), pods)
    source = FakeSource(0)
    scaler = Autoscaler(kube, AutoscalerSettings(), source, AutoscalerMetrics(CollectorRegistry()), _no_event)
    [r] = await scaler.cycle()
    assert source.services[0].pods == frozenset({"chat-model-a", "chat-router-b"})
    assert (r.decision.inputs["readyReplicas"], r.decision.inputs["startingReplicas"]) == (1, 0)


async def _no_event(body: dict[str, Any], type_: str, reason: str, message: str, **_: Any) -> None:
    pass


async def test_the_pods_measured_startup_reaches_the_decision() -> None:
    """The backlog outlook's horizon is the service's own pods' creation-to-Ready time."""
    started = pod(True, name="chat-model-a")
    started["metadata"]["creationTimestamp"] = "2026-11-28T10:00:00Z"
    started["status"]["conditions"][0]["lastTransitionTime"] = "2026-11-28T10:00:42Z"
    kube = FakeKube(isvc(1), [started, pod(False, name="chat-model-b")])
    scaler = Autoscaler(kube, AutoscalerSettings(), FakeSource(0), AutoscalerMetrics(CollectorRegistry()))
    [r] = await scaler.cycle()
    assert r.decision.inputs["podStartupSeconds"] == 42.0


async def test_scale_event_status_and_no_redundant_writes() -> None:
    kube = FakeKube(isvc(1), [pod(True)])
    events: list[tuple[str, str]] = []

    async def emit(body: dict[str, Any], type_: str, reason: str, message: str, **_: Any) -> None:
        events.append((reason, message))

    registry = CollectorRegistry()
    scaler = Autoscaler(kube, AutoscalerSettings(), FakeSource(12), AutoscalerMetrics(registry), emit)
    [r] = await scaler.cycle()
    assert r.scaled and r.decision.desired == 4  # ceil(12 / 4 * 1.1) = 4 (panic: 400% of 1)
    scale = [w for w in kube.writes if w[1].endswith("/scale")]
    assert scale and scale[0][2]["params"] == {"fieldManager": "shoal-autoscaler"}
    assert events and events[0][0] == "PanicScaleUp" and "1 -> 4" in events[0][1]
    status = kube.obj["status"]
    assert status["autoscaler"]["lastDecision"]["to"] == 4
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "MetricsAvailable": "True",
        "ScalingLimited": "False",
    }
    assert (
        registry.get_sample_value(
            "shoal_autoscaler_desired_replicas", {"namespace": "ns", "inferenceservice": "chat"}
        )
        == 4
    )
    assert (
        registry.get_sample_value(
            "shoal_autoscaler_decisions_total", {"direction": "up", "reason": "PanicScaleUp"}
        )
        == 1
    )
    n = len(kube.writes)
    kube.pods = [pod(True), pod(False), pod(False), pod(False)]
    [r] = await scaler.cycle()  # same state: no write at all
    assert not r.scaled and len(kube.writes) == n


async def test_metrics_unavailable_holds_and_sets_condition() -> None:
    kube = FakeKube(isvc(3), [pod(True)] * 3)
    scaler = Autoscaler(
        kube,
        AutoscalerSettings(),
        FakeSource(None, error="Prometheus query failed: refused"),
        AutoscalerMetrics(CollectorRegistry()),
    )
    [r] = await scaler.cycle()
    assert r.decision.desired == 3 and not r.scaled
    cond = {c["type"]: c for c in kube.obj["status"]["conditions"]}["MetricsAvailable"]
    assert cond["status"] == "False" and cond["reason"] == "PrometheusUnavailable"


async def test_follower_writes_nothing() -> None:
    kube = FakeKube(isvc(1), [pod(True)])
    scaler = Autoscaler(
        kube,
        AutoscalerSettings(),
        FakeSource(40),
        AutoscalerMetrics(CollectorRegistry()),
        is_leader=lambda: False,
    )
    await scaler.cycle()
    assert kube.writes == []


async def test_disabled_services_are_ignored() -> None:
    obj = isvc(1)
    obj["spec"]["autoscaling"]["enabled"] = False
    source = FakeSource(40)
    scaler = Autoscaler(
        FakeKube(obj, []), AutoscalerSettings(), source, AutoscalerMetrics(CollectorRegistry())
    )
    assert await scaler.cycle() == []
    assert source.calls == 0


async def test_condition_reason_is_typed_not_read_from_the_error_text() -> None:
    """#14: an error text with "inf" in it ("infra", "maintenance") is a failed query, not InvalidValue."""
    kube = FakeKube(isvc(3), [pod(True)] * 3)
    source = FakeSource(None, error="override query failed: infra maintenance")
    scaler = Autoscaler(kube, AutoscalerSettings(), source, AutoscalerMetrics(CollectorRegistry()))
    [r] = await scaler.cycle()
    assert r.decision.desired == 3
    cond = {c["type"]: c for c in kube.obj["status"]["conditions"]}["MetricsAvailable"]
    assert cond["status"] == "False" and cond["reason"] == "PrometheusUnavailable", cond


async def test_a_hold_is_logged_when_it_starts(caplog: pytest.LogCaptureFixture) -> None:
    """#19: holds were silent, so a service whose metrics asked for more logged nothing for minutes."""
    kube = FakeKube(isvc(3), [pod(True)] * 3)
    source = FakeSource(None, error="Prometheus query failed: refused")
    scaler = Autoscaler(kube, AutoscalerSettings(), source, AutoscalerMetrics(CollectorRegistry()))
    with caplog.at_level("INFO", logger="shoal.autoscaler"):
        await scaler.cycle()
        await scaler.cycle()
    holds = [r for r in caplog.records if r.getMessage() == "holding"]
    assert len(holds) == 1 and holds[0].reason == "MetricsUnavailable"  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------- waking from zero


def zero_isvc() -> dict[str, Any]:
    obj = isvc(0)
    obj["spec"]["autoscaling"].update(minReplicas=0, scaleToZero={"enabled": True, "idleSeconds": 600})
    return obj


class FakeProbe:
    """The routers' answer: `held` requests for every service asked about (after `after` asks)."""

    def __init__(self, held: float, after: int = 0) -> None:
        self.held_count, self.after = held, after
        self.asked: list[dict[tuple[str, str], list[wake.HeldSource]]] = []

    async def held(
        self, targets: Mapping[tuple[str, str], list[wake.HeldSource]]
    ) -> dict[tuple[str, str], float]:
        self.asked.append(dict(targets))
        if len(self.asked) <= self.after or not self.held_count:
            return {}
        return {key: self.held_count for key in targets}


def router_pod(ip: str = "198.18.0.7") -> dict[str, Any]:
    p = pod(True, component="router", name="chat-router-a")
    p["status"]["podIP"] = ip
    return p


async def test_a_request_held_at_zero_wakes_the_service_before_the_next_period() -> None:
    """Prometheus still reads 0 held requests; the router, asked directly between cycles, holds one."""
    kube = FakeKube(zero_isvc(), [router_pod()])
    probe = FakeProbe(held=1, after=2)  # the request arrives during the third ask
    scaler = Autoscaler(
        kube,
        AutoscalerSettings(period_seconds=3.0, wake_poll_seconds=0.05),
        FakeSource(0),
        AutoscalerMetrics(CollectorRegistry()),
        probe=probe,
    )
    [r] = await scaler.cycle()
    assert r.decision.desired == 0 and scaler.wake_targets == {
        ("ns", "chat"): [wake.HeldSource("http://198.18.0.7:8080/readyz")]
    }
    started = time.monotonic()
    held = await scaler.pause(asyncio.Event(), 3.0)
    assert held == {("ns", "chat"): 1} and time.monotonic() - started < 1.0  # not the whole period
    [r] = await scaler.cycle(held)
    assert r.scaled and (r.decision.current, r.decision.desired) == (0, 1)
    assert r.decision.reason.value == "ScaleFromZero"
    assert scaler.wake_targets == {}  # no longer at zero: the routers are not polled again


def entry_point_pod(ip: str = "198.18.0.8") -> dict[str, Any]:
    """A namespace's shared entry point (InferenceGateway): no InferenceService label of its own."""
    labels = {"shoal.dev/inferencegateway": "models", "app.kubernetes.io/component": "entry-point"}
    meta = {"namespace": "ns", "name": "models-entry-a", "labels": labels}
    return {"metadata": meta, "status": {"phase": "Running", "podIP": ip}}


async def test_a_service_at_zero_behind_an_entry_point_is_asked_for_through_it() -> None:
    def scaler(poll: float) -> Autoscaler:
        settings = AutoscalerSettings(period_seconds=3.0, wake_poll_seconds=poll)
        kube = FakeKube(zero_isvc(), [entry_point_pod()])
        metrics = AutoscalerMetrics(CollectorRegistry())
        return Autoscaler(kube, settings, FakeSource(0), metrics, probe=FakeProbe(held=2))

    polled = scaler(0.05)
    [r] = await polled.cycle()
    assert r.decision.desired == 0 and polled.wake_targets == {
        ("ns", "chat"): [wake.HeldSource("http://198.18.0.8:8080/readyz", pool="chat")]
    }
    held = await polled.pause(asyncio.Event(), 3.0)
    [r] = await polled.cycle(held)
    assert (r.decision.current, r.decision.desired) == (0, 1)
    unpolled = scaler(0)  # the wake poll off: no entry points listed, nothing to ask
    await unpolled.cycle()
    assert unpolled.wake_targets == {}


async def test_entry_points_that_cannot_be_listed_leave_the_services_own_front_ends() -> None:
    class NoEntryPoints(FakeKube):
        async def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:  # type: ignore[override]
            if "entry-point" in ((kw.get("params") or {}).get("labelSelector") or ""):
                raise ApiError(403, "Forbidden", "pods is forbidden")
            return await super().request(method, path, **kw)

    kube = NoEntryPoints(zero_isvc(), [router_pod(), entry_point_pod()])
    settings = AutoscalerSettings(wake_poll_seconds=0.05)
    scaler = Autoscaler(
        kube, settings, FakeSource(0), AutoscalerMetrics(CollectorRegistry()), probe=FakeProbe(1)
    )
    [r] = await scaler.cycle()
    assert r.decision.desired == 0
    assert scaler.wake_targets == {("ns", "chat"): [wake.HeldSource("http://198.18.0.7:8080/readyz")]}


async def test_pause_waits_the_period_when_nothing_is_held_or_nothing_is_at_zero() -> None:
    stop = asyncio.Event()
    quiet = Autoscaler(
        FakeKube(zero_isvc(), [router_pod()]),
        AutoscalerSettings(wake_poll_seconds=0.05),
        FakeSource(0),
        AutoscalerMetrics(CollectorRegistry()),
        probe=FakeProbe(held=0),
    )
    await quiet.cycle()
    started = time.monotonic()
    assert await quiet.pause(stop, 0.3) == {}
    assert time.monotonic() - started >= 0.29 and len(quiet.probe.asked) >= 3  # type: ignore[union-attr]
    busy = Autoscaler(
        FakeKube(isvc(1), [pod(True), router_pod()]),
        AutoscalerSettings(wake_poll_seconds=0.05),
        FakeSource(0),
        AutoscalerMetrics(CollectorRegistry()),
        probe=FakeProbe(held=5),
    )
    await busy.cycle()
    assert busy.wake_targets == {} and await busy.pause(stop, 0.1) == {}  # at one replica: never asked
    assert busy.probe.asked == []  # type: ignore[union-attr]


async def test_a_failing_probe_counts_as_nothing_held_and_the_loop_goes_on() -> None:
    class Broken:
        async def held(
            self, targets: Mapping[tuple[str, str], list[wake.HeldSource]]
        ) -> dict[tuple[str, str], float]:
            raise RuntimeError("boom")

    scaler = Autoscaler(
        FakeKube(zero_isvc(), [router_pod()]),
        AutoscalerSettings(wake_poll_seconds=0.05),
        FakeSource(0),
        AutoscalerMetrics(CollectorRegistry()),
        probe=Broken(),
    )
    await scaler.cycle()
    assert await scaler.pause(asyncio.Event(), 0.15) == {}
