"""Operator settings (env + flags), CLI wiring, kopf registry shape."""

from __future__ import annotations

import argparse

import pytest
from shoal_operator import cli
from shoal_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["operator", *argv])


def test_env_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_PROMETHEUS_URL", "http://prom:9090")
    monkeypatch.setenv("SHOAL_NAMESPACES", "a, b")
    monkeypatch.setenv("SHOAL_DRIFT_PERIOD_SECONDS", "12")
    s = cli.settings_from_args(_parse([]))
    assert (
        s.prometheus_url == "http://prom:9090" and s.namespaces == ["a", "b"] and s.drift_period_seconds == 12
    )
    assert not s.clusterwide
    s = cli.settings_from_args(
        _parse(["--namespace", "x", "--drift-period", "2", "--standalone", "--no-autoscaler"])
    )
    assert s.namespaces == ["x"] and s.drift_period_seconds == 2 and s.peering is False
    assert s.autoscaler_enabled is False


def test_defaults() -> None:
    s = OperatorSettings()
    assert s.clusterwide and s.peering and s.peering_name == "shoal" and s.drift_period_seconds == 30


def test_crd_subcommand_and_handler() -> None:
    args = _parse(["crd"])
    assert args.handler is cli._crd
    assert _parse([]).handler is cli._run


def test_registry_has_no_finalizer_and_all_triggers() -> None:
    import asyncio

    from kubernetes_asyncio.client import Configuration
    from shoal_operator.builders import BuildOptions
    from shoal_operator.context import OperatorContext
    from shoal_operator.handlers import build_registry
    from shoal_operator.kube import Connection, Kube
    from shoal_operator.metrics import OperatorMetrics
    from shoal_operator.reconcile import Reconciler, ReconcilerConfig

    async def build() -> None:
        kube = Kube(Connection(Configuration(host="http://127.0.0.1:1"), None))
        ctx = OperatorContext(
            settings=OperatorSettings(drift_period_seconds=5),
            kube=kube,
            metrics=OperatorMetrics(),
            identity="t",
        )
        registry = build_registry(ctx, Reconciler(kube, ReconcilerConfig(BuildOptions()), ctx.metrics))
        # no timers or daemons (they need kopf's finalizer): drift repair is a plain leader-only task
        assert not registry._spawning.get_all_handlers()
        # no change-detecting handlers: kopf writes nothing into InferenceServices
        assert not registry._changing.get_all_handlers()
        watched = {h.selector.any_name for h in registry._watching.get_all_handlers()}  # type: ignore[union-attr]
        assert watched == {"inferenceservices", "inferencegateways", "deployments"}
        await kube.aclose()

    asyncio.run(build())


def test_leader_lease_is_per_watched_scope_unless_set() -> None:
    assert OperatorSettings().leader_lease == "shoal-operator-leader"  # cluster-wide
    a = OperatorSettings(namespaces=["team-a"]).leader_lease
    b = OperatorSettings(namespaces=["team-b"]).leader_lease
    assert a != b and a.startswith("shoal-operator-leader-") and len(a) <= 63
    assert OperatorSettings(namespaces=["team-a"], lease_name="mine").leader_lease == "mine"


def test_kopf_workers_are_bounded_and_idle_ones_leave_soon() -> None:
    """A burst of new services must not have a kopf worker alive per object (the operator's memory)."""
    import kopf
    from kubernetes_asyncio.client import Configuration
    from shoal_operator.context import OperatorContext
    from shoal_operator.handlers import configure_kopf
    from shoal_operator.kube import Connection, Kube
    from shoal_operator.metrics import OperatorMetrics

    def configured(settings: OperatorSettings) -> kopf.OperatorSettings:
        kube = Kube(Connection(Configuration(host="http://127.0.0.1:1"), None))
        out = kopf.OperatorSettings()
        configure_kopf(
            out, OperatorContext(settings=settings, kube=kube, metrics=OperatorMetrics(), identity="t")
        )
        return out

    default = configured(OperatorSettings())
    assert default.queueing.worker_limit == 48 and default.queueing.idle_timeout <= 1.0
    assert configured(cli.settings_from_args(_parse(["--worker-limit", "8"]))).queueing.worker_limit == 8
