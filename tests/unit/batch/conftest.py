from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


def _load_fake() -> type:
    name = "shoal_batch_tests_fake_openai"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("fake_openai.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name].FakeOpenAI  # type: ignore[no-any-return]


FakeOpenAI = _load_fake()


@pytest.fixture
def fake_server() -> Iterator[object]:
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_server() -> Iterator[object]:
    started: list[object] = []

    def make(**kwargs: object) -> object:
        server = FakeOpenAI(**kwargs).start()
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()  # type: ignore[attr-defined]
