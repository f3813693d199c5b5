"""Composition root of the `shoal` command.

Each component owns a small `cli` module exposing `register(subparsers)`. That module must stay cheap
to import (heavy imports go inside the command's handler) so `shoal --help` is instant and a missing
optional dependency of one component (say, vLLM in the router's image) never breaks another's command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that register the subcommands, in the order `shoal --help` lists them.
COMPONENT_CLIS: tuple[str, ...] = (
    "shoal_sandbox.cli",  # sandbox
    "shoal_operator.cli",  # operator
    "shoal_server.model_cli",  # model
    "shoal_server.cli",  # model-server
    "shoal_router.cli",  # router
    "shoal_router.epp.cli",  # epp (the router's core behind Envoy ext_proc)
    "shoal_batch.cli",  # batch
    "shoal_sandbox.demo_cli",  # demo
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shoal", description="Serve LLMs on Kubernetes, scaled on real load."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in COMPONENT_CLIS:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    result = handler(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
