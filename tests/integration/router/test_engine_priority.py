"""Engine priorities through a real `shoal router` (issue 16): with `--engine-priority` a high-band
request preempts a low-band one inside a real sim model-server run `--scheduling-policy priority`;
without it the replica serves them first come, first served. Scenario: support/engine_priority_checks.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from integration.router.procs import model_servers, router
from support.engine_priority_checks import (
    OBJECTIVES,
    PRIORITY_REPLICA,
    high_band_preempts_in_the_engine,
    preemptions,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("on", [True, False], ids=["engine-priority", "off"])
async def test_high_band_preempts_only_with_engine_priority(tmp_path: Path, on: bool) -> None:
    flags = [*OBJECTIVES, *(["--engine-priority"] if on else [])]
    with model_servers(tmp_path, 1, *PRIORITY_REPLICA) as (rep,), router(tmp_path, [rep], *flags) as r:
        await high_band_preempts_in_the_engine(r.url, preempts=on)
        assert await preemptions(rep.url) == (1 if on else 0)
