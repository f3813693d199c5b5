"""`shoal model-server ...`: one model-server replica. Cheap to import (heavy imports in the handler)."""

from __future__ import annotations

import argparse
import os
from typing import Any


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip().lstrip("-"), value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "model-server",
        help="run one OpenAI-compatible model-server replica (vLLM or simulated engine)",
        description="Run one model-server replica: OpenAI routes, /healthz, /readyz, /metrics.",
    )
    p.add_argument("--engine", choices=["vllm", "sim"], default="sim")
    p.add_argument("--model", required=True, help="model path or name (a HF folder for vllm)")
    p.add_argument("--served-model-name", default=None, help="model id clients send (default: --model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-concurrency", type=int, default=16, help="requests sent to the engine at once")
    p.add_argument("--max-queue", type=int, default=64, help="requests waiting for a slot; beyond: 429")
    p.add_argument("--request-timeout", type=_positive_float, default=600.0, help="per-request deadline (s)")
    p.add_argument("--drain-timeout", type=float, default=30.0, help="grace period after SIGTERM (s)")
    p.add_argument(
        "--engine-arg",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="engine setting, e.g. max-model-len=2048 (vLLM engine args; repeatable)",
    )
    p.add_argument(
        "--max-body-bytes", type=int, default=16 * 1024 * 1024, help="largest request body; beyond: 413"
    )
    p.add_argument("--default-max-tokens", type=int, default=256, help="max_tokens for chat when unset")
    p.add_argument(
        "--scheduling-policy",
        choices=["fcfs", "priority"],
        default="fcfs",
        help="vLLM's: fcfs (a request's non-zero priority is refused) or priority (lower served first; "
        "the engine may preempt worse-priority requests)",
    )
    p.add_argument("--log-level", default=os.environ.get("SHOAL_LOG_LEVEL", "INFO"))
    _add_lora_flags(p)
    _add_sim_flags(p)
    p.set_defaults(handler=_main)


def _add_lora_flags(p: argparse.ArgumentParser) -> None:
    lora = p.add_argument_group("LoRA adapters")
    lora.add_argument(
        "--lora",
        action="append",
        type=_key_value,
        default=[],
        metavar="NAME=PATH",
        help="a LoRA adapter served as model NAME, loaded at start (repeatable; enables LoRA)",
    )
    lora.add_argument(
        "--enable-lora",
        action="store_true",
        help="serve LoRA adapters (added live via /v1/load_lora_adapter)",
    )
    lora.add_argument("--max-loras", type=int, default=4, help="adapters in one batch (vLLM max_loras)")
    lora.add_argument(
        "--max-lora-rank", type=int, default=16, help="largest adapter rank (vLLM max_lora_rank)"
    )
    lora.add_argument("--max-adapters", type=int, default=256, help="adapters registered at once")


def _add_sim_flags(p: argparse.ArgumentParser) -> None:
    sim = p.add_argument_group("simulated engine (--engine sim)")
    sim.add_argument("--sim-prefill-tokens-per-s", type=_positive_float, default=2000.0)
    sim.add_argument(
        "--sim-decode-tokens-per-s", type=_positive_float, default=30.0, help="one sequence alone"
    )
    sim.add_argument("--sim-max-batch", type=int, default=16)
    sim.add_argument("--sim-startup-s", type=float, default=0.0)
    sim.add_argument(
        "--sim-batch-overhead", type=float, default=0.1, help="step slowdown per extra sequence in the batch"
    )
    sim.add_argument(
        "--sim-prefix-cache-tokens",
        type=int,
        default=0,
        help="simulated automatic prefix cache capacity in tokens, LRU (0: off); prefill skips cached blocks",
    )
    sim.add_argument(
        "--sim-max-batched-tokens",
        type=int,
        default=0,
        help="tokens one step computes, as vLLM's max_num_batched_tokens: chunked prefill, a long prompt is "
        "prefilled over several steps (0: off, a prompt's prefill is one step; else >= --sim-max-batch)",
    )
    sim.add_argument(
        "--sim-lora-load-s", type=float, default=0.05, help="time to bring an adapter into a batch slot"
    )


def _main(args: argparse.Namespace) -> int:
    from shoal_common.logging import configure_logging

    from shoal_server.config import ServerConfig
    from shoal_server.server import run

    if args.max_concurrency < 1 or args.max_queue < 0 or args.drain_timeout < 0 or args.max_body_bytes < 1:
        raise SystemExit(
            "--max-concurrency and --max-body-bytes must be >= 1, --max-queue and --drain-timeout >= 0"
        )
    if min(args.max_loras, args.max_lora_rank, args.max_adapters) < 1 or args.sim_lora_load_s < 0:
        raise SystemExit(
            "--max-loras, --max-lora-rank and --max-adapters must be >= 1, --sim-lora-load-s >= 0"
        )
    if args.sim_max_batched_tokens < 0 or 0 < args.sim_max_batched_tokens < args.sim_max_batch:
        raise SystemExit("--sim-max-batched-tokens must be 0 (off) or at least --sim-max-batch")
    if any(key.replace("-", "_") == "scheduling_policy" for key, _ in args.engine_arg):
        raise SystemExit("set the scheduling policy with --scheduling-policy, not --engine-arg")
    names = [name for name, _ in args.lora]
    if len(set(names)) != len(names):
        raise SystemExit("--lora names must be unique")
    configure_logging(args.log_level)
    cfg = ServerConfig(
        engine=args.engine,
        model=args.model,
        served_model_name=args.served_model_name or args.model,
        host=args.host,
        port=args.port,
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        request_timeout=args.request_timeout,
        drain_timeout=args.drain_timeout,
        engine_args=dict(args.engine_arg),
        max_body_bytes=args.max_body_bytes,
        default_max_tokens=args.default_max_tokens,
        log_level=args.log_level,
        scheduling_policy=args.scheduling_policy,
        sim_prefill_tokens_per_s=args.sim_prefill_tokens_per_s,
        sim_decode_tokens_per_s=args.sim_decode_tokens_per_s,
        sim_max_batch=args.sim_max_batch,
        sim_startup_s=args.sim_startup_s,
        sim_batch_overhead=args.sim_batch_overhead,
        sim_prefix_cache_tokens=args.sim_prefix_cache_tokens,
        sim_max_batched_tokens=args.sim_max_batched_tokens,
        adapters=tuple(args.lora),
        enable_lora=args.enable_lora,
        max_loras=args.max_loras,
        max_lora_rank=args.max_lora_rank,
        max_adapters=args.max_adapters,
        sim_lora_load_s=args.sim_lora_load_s,
    )
    return run(cfg)
