"""The demo's background load against a real sim model-server: it stops on request (the demo ends the base
load once the service is back at one replica) and reports what it sent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from shoal_batch.schedule import RateCurve
from shoal_sandbox.demo_load import BackgroundLoad
from support.procs import Proc, start_cli


@pytest.fixture
def sim_server(tmp_path: Path) -> Iterator[Proc]:
    args = ["model-server", "--engine", "sim", "--model", "demo", "--host", "127.0.0.1"]
    proc = start_cli(tmp_path, "sim", args, within=60)
    try:
        yield proc
    finally:
        proc.stop()


def test_background_load_stops_early_and_reports(sim_server: Proc) -> None:
    load = BackgroundLoad(sim_server.url, RateCurve(points=((0.0, 5.0), (60.0, 5.0))))
    load.start()
    time.sleep(3)
    t0 = time.monotonic()
    load.stop(30)
    assert not load.is_alive()
    assert time.monotonic() - t0 < 30  # stopped, not run to the end of its 60 s curve
    assert load.error is None, load.error
    assert load.report is not None and load.report.ok >= 5 and load.report.failed == 0
    load.stop(1)  # a second stop, after the loop closed, is harmless
