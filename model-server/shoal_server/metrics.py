"""Prometheus series of the model-server (names are a public API: see docs/metrics.md).

Every process builds its own registries (no module-level singletons), so tests can run many
servers in one interpreter.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from shoal_common.series import SeriesBuilder

# Buckets match vLLM's, so shoal's and vLLM's histograms can be compared bucket by bucket.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)  # fmt: skip


class ServerMetrics:
    """shoal_server_* series."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        s = SeriesBuilder(self.registry)
        self.queue_depth = s.gauge(
            "shoal_server_queue_depth", "Requests waiting in the admission queue for a slot."
        )
        self.inflight = s.gauge(
            "shoal_server_inflight", "Requests holding a concurrency slot (sent to the engine)."
        )
        self.requests = s.counter(
            "shoal_server_requests", "Finished OpenAI API requests by HTTP status code.", "code"
        )
        self.rejected = s.counter(
            "shoal_server_rejected",
            "Requests refused before reaching the engine, by reason "
            "(queue_full, draining, not_ready, timeout, invalid).",
            "reason",
        )
        self.ttft = s.histogram(
            "shoal_server_time_to_first_token_seconds",
            "Arrival at the server to the first generated token (includes admission queueing).",
            TTFT_BUCKETS,
        )
        self.duration = s.histogram(
            "shoal_server_request_duration_seconds",
            "Arrival at the server to the last byte of the response, for admitted requests.",
            E2E_BUCKETS,
        )
        self.queue_time = s.histogram(
            "shoal_server_queue_time_seconds",
            "Time admitted requests spent in the admission queue.",
            TTFT_BUCKETS,
        )
        self.tokens = s.counter(
            "shoal_server_tokens", "Tokens processed, by kind (prompt, completion).", "kind"
        )
        self.ready = s.gauge("shoal_server_ready", "1 when the model is loaded and not draining.")
        self.draining = s.gauge("shoal_server_draining", "1 once a drain (SIGTERM) has started.")
        self.model_requests = s.counter(
            "shoal_server_model_requests",
            "Requests accepted for generation, by requested model (the base model or a LoRA adapter).",
            "model",
        )
        self.adapters_loaded = s.gauge(
            "shoal_server_lora_adapters_loaded", "LoRA adapters registered and servable."
        )
        self.adapter_info = s.gauge(
            "shoal_server_lora_adapter_info", "1 for each loaded LoRA adapter.", "adapter"
        )
        for reason in ("queue_full", "draining", "not_ready", "timeout", "invalid"):
            self.rejected.labels(reason)
        for kind in ("prompt", "completion"):
            self.tokens.labels(kind)


class VllmCompatMetrics:
    """The `vllm:*` series the simulated engine exports, with vLLM's names, types and labels."""

    def __init__(self, model_name: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        s = SeriesBuilder(self.registry)
        labels = ("model_name", "engine")
        values = (model_name, "0")  # one model, one engine: the engine updates these label children
        self.waiting = s.gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed.", *labels
        ).labels(*values)
        self.running = s.gauge(
            "vllm:num_requests_running", "Number of requests in model execution batches.", *labels
        ).labels(*values)
        self.kv_usage = s.gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", *labels
        ).labels(*values)
        self.ttft = s.histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            TTFT_BUCKETS,
            *labels,
        ).labels(*values)
        self.e2e = s.histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            E2E_BUCKETS,
            *labels,
        ).labels(*values)
        self.queue_time = s.histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            E2E_BUCKETS,
            *labels,
        ).labels(*values)
        self.prompt_tokens = s.counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", *labels
        ).labels(*values)
        self.generation_tokens = s.counter(
            "vllm:generation_tokens", "Number of generation tokens processed.", *labels
        ).labels(*values)
