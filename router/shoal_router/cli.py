"""`shoal router`: argument parsing only (cheap to import); the handler imports the server lazily."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

STRATEGIES = ("LeastLoad", "PrefixHash", "PrefixLoad", "RoundRobin", "AdapterAffinity")


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "router",
        help="run one LLM-aware load balancer in front of model-server replicas",
        description="LLM-aware load balancer: OpenAI routes proxied to model-server replicas.",
    )
    _listening(p)
    _discovery(p)
    _picking(p)
    _proxying(p)
    _flow_control(p)
    _security(p)
    _process(p)
    p.set_defaults(handler=_run)


def _listening(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("listening")
    g.add_argument("--host", default="0.0.0.0", help="address to listen on")
    g.add_argument(
        "--listen-host",
        default=None,
        help="deprecated alias of --host (same meaning; removed in a later release)",
    )
    g.add_argument("--port", type=int, default=8080)


def _discovery(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("discovery")
    g.add_argument("--upstream", action="append", metavar="URL", help="static upstream (repeatable)")
    g.add_argument(
        "--discovery",
        choices=("static", "kubernetes", "pods"),
        default=None,
        help="kubernetes: EndpointSlices of --service; pods: the Pods it selects; "
        "default: static with --upstream, else kubernetes",
    )
    g.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "default"))
    g.add_argument("--service", default=None, help="model-server Service whose EndpointSlices to watch")
    g.add_argument("--kubeconfig", default=None, help="default: in-cluster config, else $KUBECONFIG")
    g.add_argument("--port-name", default="http", help="EndpointSlice / container port name to route to")
    g.add_argument("--selector", default=None, help="pods discovery: label selector (default: the Service's)")
    g.add_argument("--target-port", type=int, default=8000, help="pods discovery: port when none is named")


def _picking(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("picking")
    g.add_argument("--strategy", choices=STRATEGIES, default="LeastLoad")
    g.add_argument("--prefix-chars", type=int, default=256, help="PrefixHash: prompt prefix length hashed")
    g.add_argument(
        "--hash-load-factor",
        type=float,
        default=1.25,
        help="PrefixHash: no replica takes more than this x the mean load",
    )


def _proxying(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("proxying and failures")
    g.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024)
    g.add_argument("--connect-timeout", type=float, default=2.0)
    g.add_argument(
        "--first-byte-timeout",
        type=float,
        default=600.0,
        help="seconds to wait for upstream response headers (and between body chunks)",
    )
    g.add_argument("--max-attempts", type=int, default=3)
    g.add_argument("--retry-budget-ratio", type=float, default=0.2)
    g.add_argument("--retry-budget-min-per-s", type=float, default=5.0)
    g.add_argument("--eject-consecutive-failures", type=int, default=5)
    g.add_argument("--eject-base-s", type=float, default=10.0)
    g.add_argument("--eject-max-s", type=float, default=300.0)


def _flow_control(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("flow control (scale from zero and saturation)")
    g.add_argument(
        "--max-pending",
        type=int,
        default=1024,
        help="requests the router queues (while no replica is ready, or every replica is full); beyond: 429",
    )
    g.add_argument("--max-queued-bytes", type=int, default=256 * 1024 * 1024, help="their bodies, summed")
    g.add_argument("--pending-timeout", type=float, default=300.0, help="hold while no replica is ready (s)")
    g.add_argument("--pending-retry-after", type=int, default=5)
    g.add_argument("--queue-timeout", type=float, default=60.0, help="wait for a free replica slot (s)")
    g.add_argument(
        "--replica-queue",
        type=int,
        default=0,
        help="requests a replica may queue beyond its max concurrency (the router queues the rest)",
    )
    g.add_argument(
        "--load-poll-interval", type=float, default=0.1, help="GET /load on each replica every N s (0: off)"
    )
    g.add_argument(
        "--fair-reserve",
        type=float,
        default=0.25,
        help="share of replica slots kept for tenants below their fair share while several are active (0: off)",
    )
    g.add_argument(
        "--fair-reserve-max",
        type=float,
        default=0.5,
        help="the reserve grows to the protected tenants' recent peak demand, up to this share of slots "
        "(0: a fixed --fair-reserve)",
    )
    g.add_argument(
        "--fair-window",
        type=float,
        default=10.0,
        help="seconds a tenant stays active after its last request (its reserve and recent peak kept); "
        "longer than a quiet tenant's gaps between requests",
    )
    g.add_argument(
        "--engine-priority",
        action="store_true",
        help="set each request's engine priority (x-shoal-priority) from its band, light tenants ahead of "
        "heavy ones; for replicas run with --scheduling-policy priority",
    )
    g.add_argument(
        "--objective",
        action="append",
        metavar="NAME=PRIORITY",
        help="map an x-gateway-inference-objective value to a priority band (integer, or "
        "critical/high/standard/low/sheddable); repeatable",
    )


def _security(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("security and limits")
    g.add_argument("--api-keys-secret", default=None, help="Secret in --namespace whose values are API keys")
    g.add_argument("--api-keys-file", default=None, help="file with one key (or name:key) per line")
    g.add_argument("--rate-limit-rps", type=float, default=0.0, help="per-key requests/s (0: off)")
    g.add_argument("--rate-limit-burst", type=float, default=0.0, help="default: max(1, rps)")

    g = p.add_argument_group("multi-model entry point")
    g.add_argument(
        "--models-config",
        default=None,
        metavar="FILE",
        help="front several pools (InferenceServices) at one URL, routing by `model`, with weighted splits; "
        "FILE lists the pools and splits and is re-read when it changes (docs/models.md)",
    )
    g.add_argument(
        "--models-namespace",
        default=None,
        metavar="NS",
        help="the pools are the InferenceServices of NS (their model-server pods); --selector key=value "
        "narrows them by the InferenceServices' labels; the models file then only needs the splits",
    )
    g.add_argument(
        "--models-gateway",
        default=None,
        metavar="NAME",
        help="with --models-namespace: take the splits and the InferenceService selector from the "
        "InferenceGateway NAME (watched: changes apply at once); how the operator runs the entry point",
    )


def _process(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("process")
    g.add_argument("--log-level", default="INFO")
    g.add_argument("--no-access-log", action="store_true")
    g.add_argument("--shutdown-timeout", type=float, default=30.0)


def _run(args: argparse.Namespace) -> int:
    from shoal_router.config import from_args
    from shoal_router.server import main

    if args.listen_host is not None:
        print("shoal router: --listen-host is deprecated; use --host", file=sys.stderr)
    multi = bool(args.models_config or args.models_gateway)
    if multi and args.discovery is None:
        args.discovery = "models"  # the pools' replicas come from the models config or the cluster
    try:
        config = from_args(args)
    except ValueError as exc:
        raise SystemExit(f"shoal router: {exc}") from exc
    if multi:
        from shoal_router.multimodel.server import main as gateway_main

        return gateway_main(config, args.models_config, args.models_namespace, args.models_gateway)
    return main(config)
