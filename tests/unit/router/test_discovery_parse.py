"""EndpointSlice parsing (pure) and the config/CLI surface."""

from __future__ import annotations

import pytest
from shoal_cli.main import build_parser
from shoal_router.config import from_args
from shoal_router.discovery.endpointslice import merge_slices, parse_endpoint_slice
from shoal_router.endpoints import DiscoveredEndpoint

pytestmark = pytest.mark.unit


def slice_(endpoints: list[dict], ports: list[dict] | None = None, address_type: str = "IPv4") -> dict:
    return {
        "metadata": {"name": "chat-model-abc", "labels": {"kubernetes.io/service-name": "chat-model"}},
        "addressType": address_type,
        "ports": ports if ports is not None else [{"name": "http", "port": 8000, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


def test_conditions_and_nil_defaults() -> None:
    s = slice_(
        [
            {
                "addresses": ["10.0.0.1"],
                "conditions": {"ready": True},
                "targetRef": {"kind": "Pod", "name": "p1"},
            },
            {"addresses": ["10.0.0.2"]},  # nil conditions: ready
            {"addresses": ["10.0.0.3"], "conditions": {"ready": False, "serving": True, "terminating": True}},
            {"addresses": ["10.0.0.4"], "conditions": {"ready": False}},
        ]
    )
    assert parse_endpoint_slice(s) == [
        DiscoveredEndpoint("http://10.0.0.1:8000", True, True, False, "p1"),
        DiscoveredEndpoint("http://10.0.0.2:8000", True, True, False, ""),
        DiscoveredEndpoint("http://10.0.0.3:8000", False, True, True, ""),
        DiscoveredEndpoint("http://10.0.0.4:8000", False, False, False, ""),
    ]


def test_ports_ipv6_and_merge() -> None:
    unnamed = slice_([{"addresses": ["10.0.0.1"]}], ports=[{"port": 9000}])
    assert parse_endpoint_slice(unnamed)[0].url == "http://10.0.0.1:9000"
    two = slice_(
        [{"addresses": ["10.0.0.1"]}], ports=[{"name": "metrics", "port": 9}, {"name": "grpc", "port": 7}]
    )
    assert parse_endpoint_slice(two) == []
    v6 = slice_([{"addresses": ["fd00::1"]}], address_type="IPv6")
    assert parse_endpoint_slice(v6)[0].url == "http://[fd00::1]:8000"
    no_endpoints = slice_([])
    no_endpoints["endpoints"] = None
    assert merge_slices([no_endpoints, unnamed]) == parse_endpoint_slice(unnamed)


def test_cli_renders_the_operator_command_line() -> None:
    argv = [
        "router",
        "--listen-host",
        "0.0.0.0",
        "--port",
        "8080",
        "--discovery",
        "kubernetes",
        "--namespace",
        "team-a",
        "--service",
        "chat-model",
        "--strategy",
        "PrefixHash",
        "--api-keys-secret",
        "chat-keys",
    ]
    config = from_args(build_parser().parse_args(argv))
    assert (config.discovery, config.namespace, config.service, config.strategy) == (
        "kubernetes",
        "team-a",
        "chat-model",
        "PrefixHash",
    )
    assert config.api_keys_secret == "chat-keys"
    static = from_args(build_parser().parse_args(["router", "--upstream", "127.0.0.1:8001/"]))
    assert static.discovery == "static" and static.upstreams == ("http://127.0.0.1:8001",)
    with pytest.raises(ValueError):
        from_args(build_parser().parse_args(["router", "--discovery", "static"]))


def pod(name: str, ip: str | None = "10.1.0.5", ready: bool = True, deleting: bool = False) -> dict:
    return {
        "metadata": {"name": name, **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {})},
        "spec": {"containers": [{"name": "server", "ports": [{"name": "http", "containerPort": 8001}]}]},
        "status": {
            "phase": "Running",
            **({"podIP": ip} if ip else {}),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_pods_discovery_parsing() -> None:
    from shoal_router.discovery.pods import merge_pods, parse_pod, selector_string

    assert parse_pod(pod("a")) == DiscoveredEndpoint("http://10.1.0.5:8001", True, True, False, "a")
    assert parse_pod(pod("a", ready=False)) == DiscoveredEndpoint(
        "http://10.1.0.5:8001", False, False, False, "a"
    )
    terminating = parse_pod(pod("a", deleting=True))
    assert terminating is not None and terminating.terminating and not terminating.ready
    assert parse_pod(pod("a", ip=None)) is None
    no_port = pod("a")
    no_port["spec"]["containers"][0]["ports"] = []
    assert parse_pod(no_port, default_port=9000) is not None
    assert merge_pods([pod("a"), pod("b", ip=None)]) == [parse_pod(pod("a"))]
    assert selector_string({"b": "2", "a": "1"}) == "a=1,b=2"
