"""Reading what the gateway sends (pure): headers, the subset hint, and which endpoint served."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2

from shoal_router.epp.responses import METADATA_NAMESPACE, SERVED_KEY, SUBSET_KEY, SUBSET_NAMESPACE

EXT_PROC_ATTRIBUTES = "envoy.filters.http.ext_proc"  # the key Envoy files CEL attributes under


def header_map(headers: base_pb2.HeaderMap) -> dict[str, str]:
    """Lower-cased name -> value (raw_value preferred: Envoy fills it, `value` is legacy)."""
    out: dict[str, str] = {}
    for h in headers.headers:
        value = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
        out[h.key.lower()] = value
    return out


def _struct_field(s: struct_pb2.Struct, key: str) -> struct_pb2.Value | None:
    return s.fields.get(key)


def subset_hint(req: pb.ProcessingRequest) -> frozenset[str] | None:
    """The candidate endpoints (`ip:port`) the gateway allows, or None when it sent no hint. An empty set
    is a hint too: nothing may be picked (answered 503)."""
    ns = req.metadata_context.filter_metadata
    if SUBSET_NAMESPACE not in ns:
        return None
    value = _struct_field(ns[SUBSET_NAMESPACE], SUBSET_KEY)
    if value is None:
        return None
    if value.HasField("list_value"):
        return frozenset(v.string_value for v in value.list_value.values if v.string_value)
    if value.HasField("string_value"):  # tolerate a comma-separated string
        return frozenset(p.strip() for p in value.string_value.split(",") if p.strip())
    return frozenset()


def served_endpoint(req: pb.ProcessingRequest) -> str | None:
    """Which endpoint actually served: `envoy.lb` metadata (the protocol's way) or the `upstream.address`
    attribute (what a plain Envoy can forward)."""
    ns = req.metadata_context.filter_metadata
    if METADATA_NAMESPACE in ns:
        value = _struct_field(ns[METADATA_NAMESPACE], SERVED_KEY)
        if value is not None and value.string_value:
            return str(value.string_value)
    attrs = req.attributes
    if EXT_PROC_ATTRIBUTES in attrs:
        value = _struct_field(attrs[EXT_PROC_ATTRIBUTES], "upstream.address")
        if value is not None and value.string_value:
            return str(value.string_value)
    return None


def response_status(headers: base_pb2.HeaderMap) -> int:
    """The `:status` pseudo-header (0 when absent or not a number); the rest is not decoded."""
    for h in headers.headers:
        if h.key == ":status":
            raw = h.raw_value or h.value.encode()
            return int(raw) if raw.isdigit() else 0
    return 0


def buffered_request_body(req: pb.ProcessingRequest) -> bool:
    """Envoy says (in the first message's `protocol_config`, Envoy 1.34+) that it sends the request body
    BUFFERED: it waits for an answer to the headers and keeps its own copy of the body. Without the field
    the EPP assumes FULL_DUPLEX_STREAMED, the Inference Extension's mode."""
    if not req.HasField("protocol_config"):
        return False
    mode = req.protocol_config.request_body_mode
    return bool(mode == processing_mode_pb2.ProcessingMode.BUFFERED)
