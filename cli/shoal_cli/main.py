"""Composition root of the `shoal` command.

Each component owns a small `cli` module exposing `register(subparsers)`. That module must stay cheap
to import (heavy imports go inside the command's handler) so `shoal --help` is instant and a missing
optional dependency of one component (say, vLLM in the router's image) never breaks another's command.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
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
    "shoal_sandbox.images.cli",  # images
)


def _version() -> str:
    try:
        return importlib.metadata.version("shoal")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shoal", description="Serve LLMs on Kubernetes, scaled on real load."
    )
    parser.add_argument("--version", action="version", version=f"shoal {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in COMPONENT_CLIS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # An image installs only its own component (docker/*.Dockerfile): skip the others' commands.
            if exc.name != module_name.split(".")[0]:
                raise
            continue
        module.register(subparsers)
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
