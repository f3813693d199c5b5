"""The ext_proc stream over a real in-process gRPC server, with a scripted picker (the core is tested on
its own; here: what the EPP says to the gateway)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2
from prometheus_client import CollectorRegistry
from shoal_router.epp.body import ECHO_CHUNK_BYTES
from shoal_router.epp.metrics import EppMetrics
from shoal_router.epp.picking import Picked, PickRequest, Refused
from shoal_router.epp.service import ExternalProcessor
from shoal_router.epp.stream import StreamLimits


@dataclass
class ScriptedPicker:
    endpoints: tuple[str, ...] = ("10.0.0.1:8000",)
    refuse: Refused | None = None
    gate: asyncio.Event | None = None
    seen: list[PickRequest] = field(default_factory=list)
    finished: list[tuple[str, int | None]] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)
    engine_priority: int | None = None

    async def pick(self, req: PickRequest) -> Picked:
        self.seen.append(req)
        if self.gate is not None:
            await self.gate.wait()
        if self.refuse is not None:
            raise self.refuse
        pool = [e for e in self.endpoints if req.subset is None or e in req.subset]
        if not pool:
            raise Refused(503, "no eligible endpoint", "no_endpoint")
        return Picked(tuple(pool), "scripted", engine_priority=self.engine_priority)

    def served(self, picked: Picked, served: str) -> None:
        self.moved.append((picked.endpoints[0], served))
        self.last_served = served

    def answer_headers(self, picked: Picked) -> dict[str, str]:
        return {}

    def finish(self, picked: Picked, status: int | None, tokens: int = 0) -> None:
        self.finished.append((getattr(self, "last_served", picked.endpoints[0]), status))

    def ready(self) -> bool:
        return True


@pytest.fixture
async def epp() -> AsyncIterator[tuple[pb_grpc.ExternalProcessorStub, ScriptedPicker]]:
    picker = ScriptedPicker()
    server = grpc.aio.server()
    pb_grpc.add_ExternalProcessorServicer_to_server(
        ExternalProcessor(picker, EppMetrics(CollectorRegistry()), StreamLimits(max_body_bytes=300_000)),
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb_grpc.ExternalProcessorStub(channel), picker
    finally:
        await channel.close()
        await server.stop(None)


def _headers(
    pairs: dict[str, str], eos: bool = False, subset: list[str] | None = None
) -> pb.ProcessingRequest:
    hm = base_pb2.HeaderMap(
        headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()]
    )
    req = pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=hm, end_of_stream=eos))
    if subset is not None:
        s = struct_pb2.Struct()
        s.update({"x-gateway-destination-endpoint-subset": subset})
        req.metadata_context.filter_metadata["envoy.lb.subset_hint"].CopyFrom(s)
    return req


def _body(chunk: bytes, eos: bool) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=chunk, end_of_stream=eos))


def _set_headers(resp: pb.ProcessingResponse) -> dict[str, str]:
    muts = resp.request_headers.response.header_mutation.set_headers
    return {h.header.key: h.header.raw_value.decode() for h in muts}


async def _exchange(
    stub: pb_grpc.ExternalProcessorStub, msgs: list[pb.ProcessingRequest]
) -> list[pb.ProcessingResponse]:
    call = stub.Process()
    for m in msgs:
        await call.write(m)
    await call.done_writing()
    return [r async for r in call]


CHAT = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hello there"}]}


async def test_picks_and_echoes_the_body_in_bounded_chunks(epp):
    stub, picker = epp
    body = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 150_000}]}).encode()
    half = len(body) // 2
    out = await _exchange(
        stub,
        [
            _headers({":path": "/v1/chat/completions", "x-request-id": "r1"}),
            _body(body[:half], False),
            _body(body[half:], True),
        ],
    )
    first = out[0]
    assert _set_headers(first)["x-gateway-destination-endpoint"] == "10.0.0.1:8000"
    assert first.request_headers.response.clear_route_cache
    lb = first.dynamic_metadata.fields["envoy.lb"].struct_value
    assert lb.fields["x-gateway-destination-endpoint"].string_value == "10.0.0.1:8000"
    chunks = [r.request_body.response.body_mutation.streamed_response for r in out[1:]]
    assert b"".join(c.body for c in chunks) == body
    assert all(len(c.body) <= ECHO_CHUNK_BYTES for c in chunks) and len(chunks) == 3
    assert [c.end_of_stream for c in chunks] == [False, False, True]
    assert picker.seen[0].request_id == "r1" and picker.seen[0].stream and picker.seen[0].model == "m"
    assert picker.seen[0].key and picker.seen[0].key.startswith("user:xxx")


async def test_buffered_body_mode_answers_headers_at_once_and_picks_on_the_body(epp):
    """Envoy's `protocol_config` says BUFFERED: it waits for the headers' answer (a plain continue), then
    sends the whole body; the pick rides on the body's answer and the body stays in Envoy (no echo)."""
    from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2

    stub, picker = epp
    stub_call = stub.Process()
    first = _headers({":path": "/v1/chat/completions"})
    first.protocol_config.request_body_mode = processing_mode_pb2.ProcessingMode.BUFFERED
    await stub_call.write(first)
    reply = await stub_call.read()  # answered before any body is sent (or Envoy would wait forever)
    assert reply.WhichOneof("response") == "request_headers"
    assert not reply.request_headers.response.header_mutation.set_headers and not picker.seen
    body = json.dumps(CHAT).encode()
    await stub_call.write(_body(body, True))
    await stub_call.done_writing()
    out = []
    for _ in range(5):  # bounded: the stream ends after the body's answer
        msg = await stub_call.read()
        if msg is grpc.aio.EOF:
            break
        out.append(msg)
    assert len(out) == 1 and out[0].WhichOneof("response") == "request_body"
    common = out[0].request_body.response
    muts = {h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers}
    assert muts["x-gateway-destination-endpoint"] == "10.0.0.1:8000" and common.clear_route_cache
    assert not common.HasField("body_mutation")  # Envoy keeps its buffered copy
    lb = out[0].dynamic_metadata.fields["envoy.lb"].struct_value
    assert lb.fields["x-gateway-destination-endpoint"].string_value == "10.0.0.1:8000"
    assert picker.seen[0].model == "m"


async def test_fallbacks_and_subset_hint(epp):
    stub, picker = epp
    picker.endpoints = ("10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000")
    out = await _exchange(
        stub,
        [_headers({}, subset=["10.0.0.3:8000", "10.0.0.2:8000"]), _body(json.dumps(CHAT).encode(), True)],
    )
    assert _set_headers(out[0])["x-gateway-destination-endpoint"] == "10.0.0.2:8000,10.0.0.3:8000"
    assert picker.seen[0].subset == frozenset({"10.0.0.2:8000", "10.0.0.3:8000"})


async def test_empty_subset_is_503_with_openai_error(epp):
    stub, _ = epp
    out = await _exchange(stub, [_headers({}, subset=[]), _body(json.dumps(CHAT).encode(), True)])
    imm = out[0].immediate_response
    assert imm.status.code == 503
    err = json.loads(imm.body)["error"]
    assert err["code"] == "no_endpoint" and err["type"] == "server_error" and "message" in err


async def test_shed_is_429_with_retry_after(epp):
    stub, picker = epp
    picker.refuse = Refused(429, "queue full", "queue_full", retry_after_s=3)
    out = await _exchange(stub, [_headers({}), _body(json.dumps(CHAT).encode(), True)])
    imm = out[0].immediate_response
    hdrs = {h.header.key: h.header.raw_value.decode() for h in imm.headers.set_headers}
    assert imm.status.code == 429 and hdrs["retry-after"] == "3"
    assert json.loads(imm.body)["error"]["type"] == "rate_limit_error"


async def test_bad_json_is_400_and_never_picked(epp):
    stub, picker = epp
    out = await _exchange(stub, [_headers({}), _body(b"{not json", True)])
    assert out[0].immediate_response.status.code == 400
    assert json.loads(out[0].immediate_response.body)["error"]["code"] == "invalid_request_body"
    assert picker.seen == []


async def test_body_over_the_bound_is_413(epp):
    stub, picker = epp
    out = await _exchange(stub, [_headers({}), _body(b"x" * 200_000, False), _body(b"x" * 200_000, False)])
    assert out[0].immediate_response.status.code == 413
    assert picker.seen == []


async def test_get_without_body_is_routed_at_headers(epp):
    stub, _ = epp
    out = await _exchange(stub, [_headers({":method": "GET", ":path": "/v1/models"}, eos=True)])
    assert len(out) == 1 and _set_headers(out[0])["x-gateway-destination-endpoint"] == "10.0.0.1:8000"


async def test_response_passes_through_and_served_endpoint_is_reported(epp):
    stub, picker = epp
    picker.endpoints = ("10.0.0.1:8000", "10.0.0.2:8000")
    served = struct_pb2.Struct()
    served.update({"x-gateway-destination-endpoint-served": "10.0.0.2:8000"})
    rh = pb.ProcessingRequest(
        response_headers=pb.HttpHeaders(
            headers=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=":status", raw_value=b"200")])
        )
    )
    rh.metadata_context.filter_metadata["envoy.lb"].CopyFrom(served)
    out = await _exchange(
        stub,
        [
            _headers({}),
            _body(json.dumps(CHAT).encode(), True),
            rh,
            pb.ProcessingRequest(response_body=pb.HttpBody(body=b"data: 1\n\n", end_of_stream=False)),
            pb.ProcessingRequest(response_body=pb.HttpBody(body=b"data: [DONE]\n\n", end_of_stream=True)),
        ],
    )
    kinds = [r.WhichOneof("response") for r in out]
    assert kinds == ["request_headers", "request_body", "response_headers", "response_body", "response_body"]
    assert out[-1].response_body.response.body_mutation.streamed_response.end_of_stream
    assert out[-2].response_body.response.body_mutation.streamed_response.body == b"data: 1\n\n"
    assert picker.moved == [("10.0.0.1:8000", "10.0.0.2:8000")]
    assert picker.finished == [("10.0.0.2:8000", 200)]


async def test_client_gone_while_held_releases_nothing_and_ends(epp):
    stub, picker = epp
    picker.gate = asyncio.Event()
    call = stub.Process()
    await call.write(_headers({}))
    await call.write(_body(json.dumps(CHAT).encode(), True))
    for _ in range(100):
        if picker.seen:
            break
        await asyncio.sleep(0.01)
    call.cancel()
    await asyncio.sleep(0.05)
    assert picker.finished == []  # never charged: nothing to release


async def test_stream_ending_early_releases_the_endpoint(epp):
    stub, picker = epp
    out = await _exchange(stub, [_headers({}), _body(json.dumps(CHAT).encode(), True)])
    assert len(out) == 2
    for _ in range(100):
        if picker.finished:
            break
        await asyncio.sleep(0.01)
    assert picker.finished == [("10.0.0.1:8000", None)]


async def test_response_headers_only_mode_reports_the_status_when_envoy_closes(epp):
    # response_header_mode SEND, response_body_mode NONE: Envoy closes the ext_proc stream once the
    # response headers are answered; the lease is released then, with the status it saw
    stub, picker = epp
    rh = pb.ProcessingRequest(
        response_headers=pb.HttpHeaders(
            headers=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=":status", raw_value=b"503")])
        )
    )
    out = await _exchange(stub, [_headers({}), _body(json.dumps(CHAT).encode(), True), rh])
    assert [r.WhichOneof("response") for r in out] == ["request_headers", "request_body", "response_headers"]
    assert picker.finished == [("10.0.0.1:8000", 503)]
