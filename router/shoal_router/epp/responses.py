"""ext_proc answers the EPP sends, built as plain protobuf messages (pure functions).

Protocol (Gateway API Inference Extension, proposal 004): the picked endpoint goes both in the request
header `x-gateway-destination-endpoint` and in dynamic metadata `envoy.lb`, with the same value
(`ip:port[,fallback,...]`); the route cache is cleared so the gateway routes on the new header. Refusals
are ImmediateResponses carrying an OpenAI-style JSON error body.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.type.v3 import http_status_pb2
from google.protobuf import struct_pb2

DESTINATION_HEADER = "x-gateway-destination-endpoint"
METADATA_NAMESPACE = "envoy.lb"
SUBSET_NAMESPACE = "envoy.lb.subset_hint"
SUBSET_KEY = "x-gateway-destination-endpoint-subset"
SERVED_KEY = "x-gateway-destination-endpoint-served"
REQUEST_ID_HEADER = "x-request-id"


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    # raw_value: Envoy ignores `value` for ext_proc mutations of non-UTF-8-safe headers; raw is always right
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, raw_value=value.encode()),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def destination_value(endpoints: Sequence[str]) -> str:
    """`ip:port[,ip:port...]`: the primary first, then fallbacks the gateway may retry on."""
    if not endpoints:
        raise ValueError("at least one endpoint is required")
    return ",".join(endpoints)


def route_to(
    endpoints: Sequence[str],
    extra_headers: dict[str, str] | None = None,
    *,
    in_body: bool = False,
    body: bytes | None = None,
    remove_headers: Sequence[str] = (),
) -> pb.ProcessingResponse:
    """Where the request goes: the answer to the request headers (FULL_DUPLEX_STREAMED), or with
    `in_body` to the buffered body (BUFFERED: the headers are still held, so the mutation applies;
    `body` replaces the buffered body when given). `remove_headers`: client headers not to forward."""
    value = destination_value(endpoints)
    headers = [_header(DESTINATION_HEADER, value)]
    headers += [_header(k, v) for k, v in (extra_headers or {}).items()]
    metadata = struct_pb2.Struct()  # filled field by field: Struct.update() walks Python dicts slowly
    metadata.fields[METADATA_NAMESPACE].struct_value.fields[DESTINATION_HEADER].string_value = value
    mutation = pb.HeaderMutation(set_headers=headers, remove_headers=list(remove_headers))
    common = pb.CommonResponse(header_mutation=mutation, clear_route_cache=True)
    if body is not None:
        common.body_mutation.body = body
    if in_body:
        return pb.ProcessingResponse(request_body=pb.BodyResponse(response=common), dynamic_metadata=metadata)
    return pb.ProcessingResponse(
        request_headers=pb.HeadersResponse(response=common), dynamic_metadata=metadata
    )


def continue_request_headers() -> pb.ProcessingResponse:
    """Let the request headers go on unchanged for now (BUFFERED: the pick comes with the body)."""
    return pb.ProcessingResponse(request_headers=pb.HeadersResponse())


def request_body_chunk(chunk: bytes, end: bool) -> pb.ProcessingResponse:
    """One chunk of the request body echoed back (FULL_DUPLEX_STREAMED: the EPP owns the body stream)."""
    return pb.ProcessingResponse(
        request_body=pb.BodyResponse(
            response=pb.CommonResponse(
                body_mutation=pb.BodyMutation(
                    streamed_response=pb.StreamedBodyResponse(body=chunk, end_of_stream=end)
                )
            )
        )
    )


def response_body_chunk(chunk: bytes, end: bool) -> pb.ProcessingResponse:
    return pb.ProcessingResponse(
        response_body=pb.BodyResponse(
            response=pb.CommonResponse(
                body_mutation=pb.BodyMutation(
                    streamed_response=pb.StreamedBodyResponse(body=chunk, end_of_stream=end)
                )
            )
        )
    )


def continue_response_headers(extra_headers: dict[str, str] | None = None) -> pb.ProcessingResponse:
    """Let the response headers pass, adding `extra_headers` (a tenant's x-ratelimit-* headers)."""
    if not extra_headers:
        return pb.ProcessingResponse(response_headers=pb.HeadersResponse())
    mutation = pb.HeaderMutation(set_headers=[_header(k, v) for k, v in extra_headers.items()])
    return pb.ProcessingResponse(
        response_headers=pb.HeadersResponse(response=pb.CommonResponse(header_mutation=mutation))
    )


def continue_request_trailers() -> pb.ProcessingResponse:
    return pb.ProcessingResponse(request_trailers=pb.TrailersResponse())


def continue_response_trailers() -> pb.ProcessingResponse:
    return pb.ProcessingResponse(response_trailers=pb.TrailersResponse())


def error_body(message: str, kind: str, code: str, param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}}).encode()


def immediate(
    status: int,
    message: str,
    kind: str,
    code: str,
    *,
    retry_after_s: int | None = None,
    param: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> pb.ProcessingResponse:
    """Answer the client directly, without an upstream: 400, 429 (shed, quota) or 503 (nothing
    eligible). `extra_headers`: e.g. a token quota's x-ratelimit-* headers."""
    headers = [_header("content-type", "application/json")]
    if retry_after_s is not None:
        headers.append(_header("retry-after", str(max(1, retry_after_s))))
    headers += [_header(k.lower(), v) for k, v in (extra_headers or {}).items()]
    return pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=status),
            headers=pb.HeaderMutation(set_headers=headers),
            body=error_body(message, kind, code, param),
            details=f"shoal_epp_{code}",
        )
    )
