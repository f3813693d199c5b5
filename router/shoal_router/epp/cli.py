"""`shoal epp`: the router's own flags (discovery, strategy, flow control: one core, one set of names)
plus the EPP's listeners. Cheap to import; the handler imports the server lazily."""

from __future__ import annotations

import argparse
from typing import Any


def _router_parser() -> argparse.ArgumentParser:
    """The router's parser, reused as a parent so both commands always take the same core flags."""
    from shoal_router import cli as router_cli

    holder = argparse.ArgumentParser(add_help=False)
    sub = holder.add_subparsers()
    router_cli.register(sub)
    parser: argparse.ArgumentParser = sub.choices["router"]
    return parser


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "epp",
        help="run the Endpoint Picker of a Gateway API InferencePool (Envoy ext_proc)",
        description="Endpoint Picker: Envoy ext_proc gRPC server that picks a model-server replica per request "
        "with the router's strategies and flow control (docs/gateway.md).",
        parents=[_router_parser()],
        conflict_handler="resolve",
    )
    g = p.add_argument_group("endpoint picker")
    g.add_argument("--grpc-port", type=int, default=9002, help="ext_proc port the gateway calls")
    g.add_argument("--health-port", type=int, default=9003, help="gRPC health: liveness, readiness, ext_proc")
    g.add_argument("--metrics-port", type=int, default=9090, help="Prometheus /metrics")
    g.add_argument("--plaintext", action="store_true", help="no TLS on the ext_proc port (default: TLS)")
    g.add_argument("--cert-file", default=None, help="PEM certificate (default: self-signed at start)")
    g.add_argument("--key-file", default=None, help="PEM key of --cert-file")
    g.add_argument(
        "--fallbacks",
        type=int,
        default=0,
        help="extra endpoints after the pick in x-gateway-destination-endpoint, for the gateway's retries",
    )
    g.add_argument(
        "--splits",
        default=None,
        metavar="FILE",
        help="weighted model splits (`splits:` of docs/models.md) applied to the `model` of each request; "
        "re-read when the file changes",
    )
    g.add_argument(
        "--tenant",
        action="append",
        metavar="'ID [priority=P] [weight=W] [tokens-per-minute=N]'",
        help="flow-control policy of the tenant whose x-gateway-inference-fairness-id is ID (the gateway "
        "authenticates and sets that header): band, fair-share weight, token quota; repeatable",
    )
    p.set_defaults(handler=_run, prefix_chars=4096)


def _run(args: argparse.Namespace) -> int:
    from shoal_router.config import from_args
    from shoal_router.epp.config import EppConfig
    from shoal_router.epp.server import main
    from shoal_router.flow.classify import parse_tenants

    try:
        cfg = EppConfig(
            core=from_args(args),
            grpc_port=args.grpc_port,
            health_port=args.health_port,
            metrics_port=args.metrics_port,
            secure=not args.plaintext,
            cert_file=args.cert_file,
            key_file=args.key_file,
            fallbacks=args.fallbacks,
            max_body_bytes=args.max_body_bytes,
            splits_file=args.splits,
            tenants=tuple(parse_tenants(args.tenant or []).items()),
        ).validate()
    except ValueError as exc:
        raise SystemExit(f"shoal epp: {exc}") from exc
    return main(cfg)
