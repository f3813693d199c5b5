"""spec.serving.schedulingPolicy and spec.routing.objectives rendered into the model-server's, the
router's and the endpoint picker's commands; each command is parsed by the real `shoal` CLI."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from pydantic import ValidationError
from shoal_operator.builders import BuildOptions, gateway, model_server, router
from shoal_router.config import from_args

from tests.unit.operator.helpers import isvc

pytestmark = pytest.mark.unit

OPTS = BuildOptions(model_server_image="img/shoal:1", router_image="img/router:1")


def _command(dep: dict[str, Any]) -> list[str]:
    cmd: list[str] = dep["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[0] == "shoal"
    return cmd[1:]


def _parse(argv: list[str]) -> argparse.Namespace:
    """The `shoal` command line as the pod runs it (the real subcommand parsers)."""
    from shoal_cli.main import build_parser

    return build_parser().parse_args(argv)


def test_fcfs_default_renders_no_priority_flags() -> None:
    obj = isvc({"engine": {"kind": "sim"}})
    assert obj.spec.serving.scheduling_policy == "fcfs" and obj.spec.routing.objectives == {}
    ms = _command(model_server.deployment(obj, OPTS))
    rt = _command(router.deployment(obj, OPTS))
    assert "--scheduling-policy" not in ms
    assert "--engine-priority" not in rt and "--objective" not in rt
    assert _parse(ms).scheduling_policy == "fcfs"
    assert not from_args(_parse(rt)).engine_priority


def test_priority_policy_and_objectives_reach_every_component() -> None:
    spec = {
        "engine": {"kind": "sim"},
        "serving": {"schedulingPolicy": "priority"},
        "routing": {"objectives": {"interactive": 1, "batch": -1}},
    }
    obj = isvc(spec)
    ms = _parse(_command(model_server.deployment(obj, OPTS)))
    assert ms.scheduling_policy == "priority"
    rt = from_args(_parse(_command(router.deployment(obj, OPTS))))
    assert rt.engine_priority and rt.flow().engine_priority
    assert rt.objectives == (("batch", -1), ("interactive", 1))  # sorted: a stable command, no rollouts
    gw = isvc({**spec, "routing": {**spec["routing"], "mode": "Gateway"}})
    epp_cmd = _command(gateway.deployment(gw, OPTS))
    assert epp_cmd[0] == "epp"
    epp = from_args(_parse(epp_cmd))
    assert epp.engine_priority and dict(epp.objectives) == {"interactive": 1, "batch": -1}


@pytest.mark.parametrize(
    "spec",
    [
        {"serving": {"schedulingPolicy": "lifo"}},
        {"routing": {"objectives": {"x": 5000}}},
        {"routing": {"objectives": {"x": "high"}}},
    ],
)
def test_bad_values_are_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        isvc(spec)


def test_gateway_tenants_reach_the_endpoint_picker() -> None:
    from shoal_router.flow.classify import TenantPolicy, parse_tenants

    routing = {
        "mode": "Gateway",
        "tenants": {"team-b": {}, "team-a": {"priority": 1, "weight": 2.5, "tokensPerMinute": 60000}},
    }
    cmd = _command(gateway.deployment(isvc({"routing": routing}), OPTS))
    ns = _parse(cmd)
    assert parse_tenants(ns.tenant) == {
        "team-a": TenantPolicy(priority=1, weight=2.5, tokens_per_minute=60000),
        "team-b": TenantPolicy(),
    }
    assert [cmd[i + 1].split()[0] for i, a in enumerate(cmd) if a == "--tenant"] == ["team-a", "team-b"]
    router_cmd = _command(router.deployment(isvc({"routing": {"objectives": {"x": 1}}}), OPTS))
    assert "--tenant" not in router_cmd  # Router mode: tenants' policies are the API keys' options
