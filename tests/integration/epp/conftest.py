"""Fixtures: processes started by a test are stopped after it, whatever happens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from integration.epp.procs import Proc, start_epp, start_model_server, start_replica


class Started:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Any] = []

    def replica(self, *extra: str, **kw: Any) -> Proc:
        p = start_replica(self.tmp, *extra, **kw)
        self.procs.append(p)
        return p

    def replica_with(self, engine_args: list[str], **kw: Any) -> Proc:
        p = start_model_server(self.tmp, engine_args, **kw)
        self.procs.append(p)
        return p

    def epp(self, upstreams: list[str], *extra: str, **kw: Any) -> Any:
        p = start_epp(self.tmp, upstreams, *extra, **kw)
        self.procs.append(p)
        return p

    def envoy(self, **kw: Any) -> Any:
        from support.envoy import start_envoy

        e = start_envoy(self.tmp, **kw)
        self.procs.append(e)
        return e


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Started]:
    s = Started(tmp_path)
    yield s
    for p in reversed(s.procs):
        p.stop()
