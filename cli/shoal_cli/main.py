"""Composition root of the `shoal` command.

Each component owns a small `cli` module exposing `register(subparsers)`. That module must stay cheap
to import (heavy imports go inside the command's handler) so `shoal --help` is instant and a missing
optional dependency of one component never breaks another's command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# (subcommand, module that registers it)
COMPONENT_CLIS: tuple[tuple[str, str], ...] = (
    ("sandbox", "shoal_sandbox.cli"),
    ("operator", "shoal_operator.cli"),
    ("model", "shoal_server.model_cli"),
    ("model-server", "shoal_server.cli"),
    ("router", "shoal_router.cli"),
    ("batch", "shoal_batch.cli"),
    ("demo", "shoal_sandbox.demo_cli"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoal", description="Serve LLMs on Kubernetes, scaled on real load.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name, module_name in COMPONENT_CLIS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and module_name.startswith(exc.name):
                continue  # component not built yet / not installed in this image
            raise
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
