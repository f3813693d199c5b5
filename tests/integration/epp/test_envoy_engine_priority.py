"""Engine priorities behind a real Envoy and the EPP (issue 16): the EPP sets x-shoal-priority in its
header mutation (overwriting a client's) with `--engine-priority`, and removes a client's copy without
it. Scenario: support/engine_priority_checks.py, against a real sim model-server."""

from __future__ import annotations

import pytest
from support.engine_priority_checks import (
    OBJECTIVES,
    PRIORITY_REPLICA,
    high_band_preempts_in_the_engine,
    preemptions,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("on", [True, False], ids=["engine-priority", "off"])
async def test_high_band_preempts_behind_envoy_only_with_engine_priority(started, on: bool) -> None:
    rep = started.replica(*PRIORITY_REPLICA)
    epp = started.epp([rep.hostport], *OBJECTIVES, *(["--engine-priority"] if on else []))
    envoy = started.envoy(pool=[rep.hostport], mode="original_dst", epp_port=epp.port)
    await high_band_preempts_in_the_engine(envoy.url, preempts=on)
    assert await preemptions(rep.url) == (1 if on else 0)
