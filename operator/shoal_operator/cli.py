"""`shoal operator`: argument parsing only (cheap to import); the handler imports kopf lazily."""

from __future__ import annotations

import argparse
from typing import Any

# flag dest -> OperatorSettings field (flags given win over SHOAL_* environment variables)
_FLAG_FIELDS = (
    "kubeconfig",
    "context",
    "namespaces",
    "prometheus_url",
    "drift_period_seconds",
    "metrics_port",
    "health_port",
    "peering_name",
    "peering",
    "peering_priority",
    "log_level",
    "json_logs",
    "model_server_image",
    "router_image",
    "autoscaler_enabled",
    "lease_namespace",
    "worker_limit",
)


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "operator",
        help="run the InferenceService operator (or print its CRD)",
        description="Reconcile InferenceServices into model-server pods, a router and Services. "
        "Every flag also reads from a SHOAL_* environment variable (e.g. SHOAL_PROMETHEUS_URL).",
    )
    p.add_argument(
        "--kubeconfig", default=None, help="default: in-cluster, else $KUBECONFIG / ~/.kube/config"
    )
    p.add_argument("--context", default=None)
    p.add_argument(
        "--namespace",
        dest="namespaces",
        action="append",
        default=None,
        help="watch only this namespace (repeatable)",
    )
    p.add_argument("--prometheus-url", default=None)
    p.add_argument("--drift-period", dest="drift_period_seconds", type=float, default=None, help="seconds")
    p.add_argument("--metrics-port", type=int, default=None, help="operator /metrics port (0: off)")
    p.add_argument("--health-port", type=int, default=None, help="kopf /healthz port (0: off)")
    p.add_argument("--peering-name", default=None)
    p.add_argument("--standalone", dest="peering", action="store_false", default=None, help="no kopf peering")
    p.add_argument(
        "--priority", dest="peering_priority", type=int, default=None, help="kopf peering priority"
    )
    p.add_argument("--log-level", default=None)
    p.add_argument("--text-logs", dest="json_logs", action="store_false", default=None)
    p.add_argument("--model-server-image", default=None)
    p.add_argument("--router-image", default=None)
    p.add_argument("--no-autoscaler", dest="autoscaler_enabled", action="store_false", default=None)
    p.add_argument("--lease-namespace", default=None)
    p.add_argument("--worker-limit", type=int, default=None)
    p.set_defaults(handler=_run)

    sub = p.add_subparsers(dest="operator_command", metavar="{crd}")
    crd = sub.add_parser("crd", help="print (or write) the generated CRDs")
    crd.add_argument("--out-dir", default=None, help="write the CRD files into this folder instead")
    crd.set_defaults(handler=_crd)


def settings_from_args(args: argparse.Namespace) -> Any:
    from shoal_operator.settings import OperatorSettings

    given = {f: getattr(args, f) for f in _FLAG_FIELDS if getattr(args, f, None) is not None}
    return OperatorSettings(**given)


def _skip_unused_kubernetes_clients() -> None:
    """kopf imports kubernetes/pykube when installed, only to recognise their objects; the operator uses
    neither (its client is kubernetes_asyncio). Skipping the import saves memory and start-up time.
    Only in the operator's own process."""
    import sys

    for name in ("kubernetes", "pykube"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


def _run(args: argparse.Namespace) -> int:
    _skip_unused_kubernetes_clients()
    from pydantic import ValidationError

    from shoal_operator.runner import run

    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        raise SystemExit(f"shoal operator: invalid settings:\n{exc}") from exc
    return run(settings)


def _crd(args: argparse.Namespace) -> int:
    from shoal_operator import crdgen

    argv = ["--out-dir", args.out_dir] if args.out_dir else ["--stdout"]
    return crdgen.main(argv)
