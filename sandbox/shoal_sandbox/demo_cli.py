"""`shoal demo`: argument parsing only (cheap to import); the demo itself is imported by the handler."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="the closed loop on this machine: real model, load ramp, live autoscaling, plot",
        description="Bring up (or reuse) the sandbox with its real node, install the operator with the Helm "
        "chart, start Prometheus, serve SmolLM2 on vLLM through the router, then scale a simulated model "
        "under a load ramp and plot it. Everything started is stopped on exit and on Ctrl-C.",
    )
    p.add_argument(
        "--no-real-model", dest="real_model", action="store_false", help="skip the vLLM/SmolLM2 part"
    )
    p.add_argument("--short", action="store_true", help="a shorter ramp and faster cold start / scale-down")
    p.add_argument("--peak-rps", type=float, default=12.0, help="requests/s at the top of the ramp")
    p.add_argument("--base-rps", type=float, default=2.0, help="requests/s before and after the ramp")
    p.add_argument("--ramp-seconds", type=float, default=150.0, help="length of the load ramp")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the plot and its samples (default: $SHOAL_CACHE/demo)",
    )
    p.add_argument("--namespace", default="shoal-demo")
    p.add_argument(
        "--sandbox-name",
        default=os.environ.get("SHOAL_SANDBOX_NAME") or "node",
        help="the real node's sandbox (one per host; default $SHOAL_SANDBOX_NAME or 'node', as the tests)",
    )
    p.add_argument("--keep", action="store_true", help="leave everything running at the end")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from shoal_sandbox.demo import DemoOptions, default_out_dir, run_demo

    return run_demo(
        DemoOptions(
            real_model=args.real_model,
            short=args.short,
            peak_rps=args.peak_rps,
            base_rps=args.base_rps,
            ramp_s=args.ramp_seconds,
            out_dir=args.out or default_out_dir(),
            namespace=args.namespace,
            keep=args.keep,
            sandbox_name=args.sandbox_name,
        )
    )
