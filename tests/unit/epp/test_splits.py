"""Weighted splits in the endpoint picker: the shared `split.py` draws the target, the EPP rewrites the
echoed body's `model` (and Content-Length) and picks for the target; the splits file is re-read live."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from prometheus_client import CollectorRegistry
from shoal_router.epp.metrics import EppMetrics
from shoal_router.epp.service import ExternalProcessor
from shoal_router.epp.stream import StreamLimits
from shoal_router.multimodel.config import reload_splits
from shoal_router.split import SplitTable, parse_splits

from .test_stream import ScriptedPicker, _body, _exchange, _headers, _set_headers

pytestmark = pytest.mark.unit


@pytest.fixture
async def split_epp() -> AsyncIterator[tuple[pb_grpc.ExternalProcessorStub, ScriptedPicker, SplitTable]]:
    picker = ScriptedPicker()
    table = SplitTable(parse_splits({"sql": {"sql-v1": 1, "sql-v2": 1}}), rng=random.Random(3))
    server = grpc.aio.server()
    processor = ExternalProcessor(picker, EppMetrics(CollectorRegistry()), StreamLimits(), table)
    pb_grpc.add_ExternalProcessorServicer_to_server(processor, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb_grpc.ExternalProcessorStub(channel), picker, table
    finally:
        await channel.close()
        await server.stop(None)


async def _send(stub: pb_grpc.ExternalProcessorStub, model: str) -> tuple[dict[str, str], dict[str, Any]]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    out = await _exchange(stub, [_headers({":path": "/v1/chat/completions"}), _body(body, True)])
    echoed = b"".join(r.request_body.response.body_mutation.streamed_response.body for r in out[1:])
    return _set_headers(out[0]), json.loads(echoed)


async def test_split_rewrites_model_and_length(split_epp) -> None:  # type: ignore[no-untyped-def]
    stub, picker, _table = split_epp
    seen: dict[str, int] = {}
    for _ in range(40):
        headers, doc = await _send(stub, "sql")
        assert doc["model"] in ("sql-v1", "sql-v2") and doc["messages"][0]["content"] == "hi"
        assert int(headers["content-length"]) == len(json.dumps(doc, separators=(",", ":")).encode())
        seen[str(doc["model"])] = seen.get(str(doc["model"]), 0) + 1
    assert set(seen) == {"sql-v1", "sql-v2"}  # both targets drawn (1:1)
    assert {p.model for p in picker.seen} == {"sql-v1", "sql-v2"}
    # a model without a split passes untouched (no Content-Length rewrite)
    headers, doc = await _send(stub, "base")
    assert doc["model"] == "base" and "content-length" not in headers


def test_splits_file_reload(tmp_path: Path) -> None:
    path = tmp_path / "splits.yaml"
    path.write_text("splits:\n  sql: {sql-v1: 9, sql-v2: 1}\n")
    table = SplitTable()
    stamp = reload_splits(table, path, None)
    assert table.splits["sql"].weights == (9, 1)
    path.write_text("splits: [broken\n")
    stamp = reload_splits(table, path, stamp)
    assert table.splits["sql"].weights == (9, 1)  # a bad file keeps the previous splits
    path.write_text("splits:\n  sql: {sql-v2: 1}\n")
    reload_splits(table, path, stamp)
    assert table.splits["sql"].targets == ("sql-v2",)
