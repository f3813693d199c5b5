"""Real model-server and router processes on free loopback ports, for the fuzz and batch tests."""

from __future__ import annotations

from pathlib import Path

from support.procs import Proc, start_cli

__all__ = ["Proc", "start_model_server", "start_router"]

# A fast simulated engine: fuzzed requests may ask for thousands of tokens.
FAST_SIM = [
    "--engine",
    "sim",
    "--sim-decode-tokens-per-s",
    "200000",
    "--sim-prefill-tokens-per-s",
    "10000000",
]


def start_model_server(tmp: Path, model: str, extra: list[str] | None = None) -> Proc:
    args = ["model-server", *FAST_SIM, "--model", model, "--host", "127.0.0.1", *(extra or [])]
    return start_cli(tmp, "model-server", args, within=60)


def start_router(tmp: Path, upstream: str, extra: list[str] | None = None) -> Proc:
    args = ["router", "--host", "127.0.0.1", "--upstream", upstream, *(extra or [])]
    return start_cli(tmp, "router", args, within=60)
