"""Flow control through a real Envoy and the EPP (issue 16, "behind Envoy"): the same scenarios as the
HTTP router's (tests/integration/router/test_flow_control.py, shared in support/flow_checks.py), with the
band from `x-gateway-inference-objective`, the tenant from `x-gateway-inference-fairness-id` and the
tenant's policy from the EPP's `--tenant`. Real sim model-servers; no client retries."""

from __future__ import annotations

import pytest
from support.flow_checks import (
    FAIRNESS,
    high_band_overtakes_a_low_band_backlog,
    token_quota_for_one_tenant,
    two_tenants_get_fair_shares,
)

pytestmark = pytest.mark.integration


def shed(epp, *labels: str) -> float:
    """shoal_router_flow_shed_total summed over the series carrying every one of `labels`."""
    total = 0.0
    for line in epp.metrics().splitlines():
        if line.startswith("shoal_router_flow_shed_total{") and all(lab in line for lab in labels):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_high_band_overtakes_a_low_band_backlog_behind_envoy(started):
    rep = started.replica("--max-concurrency", "2", "--max-queue", "2")
    objectives = ("--objective", "chat=high", "--objective", "batch=low")
    epp = started.epp([rep.hostport], *objectives, "--max-pending", "10")
    envoy = started.envoy(pool=[rep.hostport], mode="original_dst", epp_port=epp.port)
    await high_band_overtakes_a_low_band_backlog(envoy.url)
    assert shed(epp, 'priority="1"') == 0  # nothing of the high band was shed
    assert shed(epp, 'priority="-1"') >= 1


async def test_two_tenants_get_fair_shares_behind_envoy(started):
    rep = started.replica("--max-concurrency", "2", "--max-queue", "0")
    epp = started.epp([rep.hostport])
    envoy = started.envoy(pool=[rep.hostport], mode="original_dst", epp_port=epp.port)
    await two_tenants_get_fair_shares(envoy.url)


async def test_token_quota_behind_envoy(started):
    rep = started.replica()
    epp = started.epp([rep.hostport], "--tenant", "alice tokens-per-minute=60")
    envoy = started.envoy(pool=[rep.hostport], mode="original_dst", epp_port=epp.port)
    await token_quota_for_one_tenant(envoy.url, {FAIRNESS: "alice"}, {FAIRNESS: "bob"})
    assert shed(epp, 'tenant="alice"', 'reason="tokens_quota"') == 1
    assert shed(epp, 'tenant="bob"') == 0
