"""Typed settings of one model-server replica (read once from the command line)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class ServerConfig:
    engine: Literal["vllm", "sim"]
    model: str
    served_model_name: str
    host: str = "127.0.0.1"
    port: int = 8000
    max_concurrency: int = 16
    max_queue: int = 64
    request_timeout: float = 600.0
    drain_timeout: float = 30.0
    engine_args: dict[str, str] = field(default_factory=dict)
    max_body_bytes: int = 16 * 1024 * 1024  # beyond: 413 (the router's default limit too)
    default_max_tokens: int = 256  # when a chat request sets no max_tokens (completions default to 16)
    log_level: str = "INFO"
    # vLLM's --scheduling-policy: "priority" serves lower `priority` values first (and may preempt)
    scheduling_policy: Literal["fcfs", "priority"] = "fcfs"
    # Simulated engine
    sim_prefill_tokens_per_s: float = 2000.0
    sim_decode_tokens_per_s: float = 30.0
    sim_max_batch: int = 16
    sim_startup_s: float = 0.0
    sim_batch_overhead: float = 0.1
    sim_prefix_cache_tokens: int = 0
    sim_max_batched_tokens: int = 0  # chunked prefill's per-step token budget (0: off)
    # LoRA adapters: (name, path) loaded at start; more can be added live (POST /v1/load_lora_adapter)
    adapters: tuple[tuple[str, str], ...] = ()
    enable_lora: bool = False
    max_loras: int = 4
    max_lora_rank: int = 16
    max_adapters: int = 256
    sim_lora_load_s: float = 0.05

    @property
    def lora_enabled(self) -> bool:
        return self.enable_lora or bool(self.adapters)

    def max_model_len(self, default: int) -> int:
        value = self.engine_args.get("max-model-len") or self.engine_args.get("max_model_len")
        return int(value) if value else default
