"""The real engine: vLLM's AsyncLLM in this process (its EngineCore runs in a child process).

The layer is deliberately thin: shoal's OpenAI layer renders chat with the model's own chat template
(the tokenizer vLLM loaded), tokenizes once, and hands token ids plus `SamplingParams` (whose own
validation turns bad parameters into 400s) to `AsyncLLM.generate` with DELTA outputs. vLLM's own
Prometheus series (`vllm:*`) live in prometheus_client's default registry and are exported as is.
Works the same with the GPU `vllm` package; the CPU-only defaults apply only on a CPU build.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, MutableMapping
from pathlib import Path
from typing import Any

from shoal_common.paths import cache_dir

from shoal_server.config import ServerConfig
from shoal_server.engines.adapters import AdapterError, AdapterRegistry
from shoal_server.engines.base import Delta, EngineInputError, Prompt, Sampling
from shoal_server.redact import redact_settings

log = logging.getLogger("shoal.server.vllm")


def configure_environment(env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Environment for vLLM and torch: caches under $SHOAL_CACHE, no hub, no telemetry, all CPU cores.
    Existing values win. Must run before vllm is imported (the EngineCore child inherits it)."""
    target: MutableMapping[str, str] = os.environ if env is None else env
    root = cache_dir()
    defaults = {
        "VLLM_CACHE_ROOT": str(root / "vllm"),
        "VLLM_CONFIG_ROOT": str(root / "vllm" / "config"),
        "TORCHINDUCTOR_CACHE_DIR": str(root / "torchinductor"),
        "TRITON_CACHE_DIR": str(root / "triton"),
        "HF_HOME": str(root / "hf"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{max(0, (os.cpu_count() or 1) - 1)}",
        "VLLM_CPU_KVCACHE_SPACE": "2",  # GiB of KV cache on CPU builds
    }
    applied = {}
    for key, value in defaults.items():
        if key not in target:
            target[key] = value
            applied[key] = value
    return applied


def parse_engine_value(text: str) -> Any:
    """`--engine-arg` values: JSON when it parses (numbers, true/false, lists), else the string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def resolve_model(model: str) -> str:
    """A known short name (smollm2) maps to the prepared folder in the cache; anything else is passed on."""
    from shoal_server.model_cli import MODELS, model_dir

    if model in MODELS and not Path(model).exists():
        path = model_dir(model)
        if not path.exists():
            raise RuntimeError(f"model {model!r} is not prepared: run `shoal model prepare {model}`")
        return str(path)
    return model


class VllmEngine:
    kind = "vllm"

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.max_model_len = cfg.max_model_len(2048)
        self.vocab_size = 0  # known once loaded; requests are refused until then
        self._llm: Any = None
        self._tokenizer: Any = None
        self._stats_task: asyncio.Task[None] | None = None
        self._sampling_cls: Any = None
        self._kinds: tuple[Any, Any] = (None, None)
        self.adapters = AdapterRegistry(cfg.served_model_name, cfg.max_adapters)

    def engine_args(self) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs

        fields = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
        kwargs: dict[str, Any] = {
            "model": resolve_model(self.cfg.model),
            "served_model_name": [self.cfg.served_model_name],
            "max_model_len": self.max_model_len,
            "disable_log_stats": False,
            "scheduling_policy": self.cfg.scheduling_policy,
        }
        if self.cfg.lora_enabled:
            # Adapters are then added and removed at runtime through AsyncLLM.add_lora/remove_lora.
            kwargs.update(
                enable_lora=True,
                max_loras=self.cfg.max_loras,
                max_lora_rank=self.cfg.max_lora_rank,
                max_cpu_loras=max(self.cfg.max_loras, self.cfg.max_adapters),
            )
        if _is_cpu_build():
            kwargs.update(
                dtype="float32", enforce_eager=True
            )  # bf16 is slow on AVX2; eager starts ~2x faster
        for key, raw in self.cfg.engine_args.items():
            name = key.replace("-", "_")
            if name not in fields:
                raise ValueError(f"unknown vLLM engine arg {key!r}")
            kwargs[name] = parse_engine_value(raw)
        return AsyncEngineArgs(**kwargs)

    async def start(self) -> None:
        # Importing vLLM and building AsyncLLM block for about a minute on CPU: do it in a thread so
        # the server keeps answering /healthz and /readyz (503) meanwhile. AsyncLLM starts its output
        # handler lazily on the first request when built outside the event loop.
        configure_environment()
        self._llm = await asyncio.to_thread(self._build)
        self._tokenizer = self._llm.get_tokenizer()
        self.max_model_len = int(self._llm.model_config.max_model_len)
        self.vocab_size = int(self._llm.model_config.get_vocab_size())
        self._stats_task = asyncio.create_task(self._log_stats_forever(), name="vllm-stats")

    def _build(self) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        args = self.engine_args()
        log.info(
            "starting vLLM",
            # Secrets passed as engine args (hf_token, ...) must not land in the pod's log.
            extra={"engine_args": redact_settings({k: v for k, v in vars(args).items() if v is not None})},
        )
        self._sampling_cls = SamplingParams
        self._kinds = (RequestOutputKind.DELTA, RequestOutputKind.FINAL_ONLY)
        return AsyncLLM.from_engine_args(args, usage_context=UsageContext.OPENAI_API_SERVER)

    async def _log_stats_forever(self) -> None:
        while True:
            await asyncio.sleep(10)
            with contextlib.suppress(Exception):
                await self._llm.do_log_stats()

    async def shutdown(self) -> None:
        if self._stats_task is not None:
            self._stats_task.cancel()
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        try:
            text = self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja errors on odd conversations (e.g. roles the template refuses)
            raise EngineInputError(f"chat template failed: {exc}") from None
        return str(text)

    def tokenize(self, text: str, add_special_tokens: bool = True) -> Prompt:
        # Rendered chat already carries its special tokens (add_special_tokens=False), as in vLLM's server.
        ids = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        return Prompt(text=text, token_ids=tuple(ids))

    def metrics_text(self) -> bytes:
        from prometheus_client import REGISTRY, generate_latest

        return generate_latest(REGISTRY)

    def _sampling_params(self, s: Sampling, stream: bool) -> Any:
        try:
            return self._sampling_cls(
                max_tokens=s.max_tokens,
                temperature=s.temperature,
                top_p=s.top_p,
                stop=list(s.stop) or None,
                seed=s.seed,
                presence_penalty=s.presence_penalty,
                frequency_penalty=s.frequency_penalty,
                ignore_eos=s.ignore_eos,
                # Non-streaming requests get one final output, as in vLLM's own server: no per-token
                # RequestOutput objects or wake-ups in this process.
                output_kind=self._kinds[0] if stream else self._kinds[1],
            )
        except (ValueError, TypeError) as exc:
            raise EngineInputError(str(exc)) from None

    def _lora_request(self, name: str) -> Any:
        from vllm.lora.request import LoRARequest

        return LoRARequest(name, self.adapters.int_id(name), self.adapters.path(name))

    async def add_adapter(self, name: str, path: str) -> bool:
        if not self.cfg.lora_enabled:
            raise AdapterError("LoRA is not enabled on this server (--enable-lora)", code="lora_disabled")
        if not self.adapters.add(name, path):
            return False
        try:  # vLLM loads the weights now (a bad path or a too-large rank fails here, not on a request)
            ok = await self._llm.add_lora(self._lora_request(name))
        except Exception as exc:
            self.adapters.remove(name)
            raise AdapterError(
                f"vLLM could not load adapter {name!r}: {exc}", code="adapter_load_failed"
            ) from None
        if not ok:
            self.adapters.remove(name)
            raise AdapterError(f"vLLM refused adapter {name!r}", code="adapter_load_failed")
        return True

    async def remove_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise AdapterError(f"adapter {name!r} is not loaded", 404, "adapter_not_found")
        int_id = self.adapters.int_id(name)
        self.adapters.remove(name)
        await self._llm.remove_lora(int_id)

    async def generate(
        self,
        request_id: str,
        prompt: Prompt,
        sampling: Sampling,
        stream: bool = True,
        adapter: str | None = None,
        priority: int = 0,
    ) -> AsyncIterator[Delta]:
        params = self._sampling_params(sampling, stream)
        if adapter is not None and adapter not in self.adapters:
            raise EngineInputError(f"adapter {adapter!r} is not loaded")
        # Only with an adapter: base-model requests go exactly as before LoRA support.
        extra: dict[str, Any] = {} if adapter is None else {"lora_request": self._lora_request(adapter)}
        if priority != 0:  # the server refuses it under fcfs before this point (vLLM would ignore it)
            extra["priority"] = priority
        engine_input = {"prompt_token_ids": list(prompt.token_ids)}
        # vLLM requires unique ids; clients may reuse X-Request-ID.
        rid = f"{request_id}-{uuid.uuid4().hex[:8]}"
        # Closing this generator (client gone, deadline) closes vLLM's, which aborts the request.
        try:
            async for out in self._llm.generate(engine_input, params, rid, **extra):
                yield _delta(out, stream)
        except ValueError as exc:  # vLLM's input checks (token ids, lengths): a 400, as in vLLM's server
            raise EngineInputError(str(exc)) from None


def _delta(out: Any, stream: bool) -> Delta:
    """One vLLM RequestOutput -> a Delta (DELTA outputs when streaming, one FINAL_ONLY output else)."""
    completion = out.outputs[0]
    finish = completion.finish_reason if out.finished else None
    if finish not in (None, "stop", "length"):
        finish = "stop"  # "abort" and friends: the client sees a normal end
    ttft = None
    if not stream and out.metrics is not None:
        ttft = getattr(out.metrics, "first_token_latency", None) or None
    return Delta(
        text=completion.text,
        num_tokens=len(completion.token_ids),
        finish_reason=finish,
        first_token_latency_s=ttft,
    )


def _is_cpu_build() -> bool:
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # pragma: no cover
        return False
