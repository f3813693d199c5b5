"""Prometheus series of the model-server (names are a public API: see docs/metrics.md).

Every process builds its own registries (no module-level singletons), so tests can run many
servers in one interpreter.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Buckets match vLLM's, so shoal's and vLLM's histograms can be compared bucket by bucket.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0)  # fmt: skip


class ServerMetrics:
    """shoal_server_* series."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.queue_depth = Gauge(
            "shoal_server_queue_depth", "Requests waiting in the admission queue for a slot.", registry=r
        )
        self.inflight = Gauge(
            "shoal_server_inflight", "Requests holding a concurrency slot (sent to the engine).", registry=r
        )
        self.requests = Counter(
            "shoal_server_requests", "Finished OpenAI API requests by HTTP status code.", ["code"], registry=r
        )
        self.rejected = Counter(
            "shoal_server_rejected",
            "Requests refused before reaching the engine, by reason "
            "(queue_full, draining, not_ready, timeout, invalid).",
            ["reason"],
            registry=r,
        )
        self.ttft = Histogram(
            "shoal_server_time_to_first_token_seconds",
            "Arrival at the server to the first generated token (includes admission queueing).",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "shoal_server_request_duration_seconds",
            "Arrival at the server to the last byte of the response, for admitted requests.",
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "shoal_server_queue_time_seconds",
            "Time admitted requests spent in the admission queue.",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "shoal_server_tokens", "Tokens processed, by kind (prompt, completion).", ["kind"], registry=r
        )
        self.ready = Gauge("shoal_server_ready", "1 when the model is loaded and not draining.", registry=r)
        self.draining = Gauge("shoal_server_draining", "1 once a drain (SIGTERM) has started.", registry=r)
        self.model_requests = Counter(
            "shoal_server_model_requests",
            "Requests accepted for generation, by requested model (the base model or a LoRA adapter).",
            ["model"],
            registry=r,
        )
        self.adapters_loaded = Gauge(
            "shoal_server_lora_adapters_loaded", "LoRA adapters registered and servable.", registry=r
        )
        self.adapter_info = Gauge(
            "shoal_server_lora_adapter_info", "1 for each loaded LoRA adapter.", ["adapter"], registry=r
        )
        for reason in ("queue_full", "draining", "not_ready", "timeout", "invalid"):
            self.rejected.labels(reason)
        for kind in ("prompt", "completion"):
            self.tokens.labels(kind)


class VllmCompatMetrics:
    """The `vllm:*` series the simulated engine exports, with vLLM's names, types and labels."""

    def __init__(self, model_name: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        labels = ["model_name", "engine"]
        values = (model_name, "0")
        self.waiting = Gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed.", labels, registry=r
        ).labels(*values)
        self.running = Gauge(
            "vllm:num_requests_running", "Number of requests in model execution batches.", labels, registry=r
        ).labels(*values)
        self.kv_usage = Gauge(
            "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", labels, registry=r
        ).labels(*values)
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds.",
            labels,
            buckets=TTFT_BUCKETS,
            registry=r,
        ).labels(*values)
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Histogram of e2e request latency in seconds.",
            labels,
            buckets=E2E_BUCKETS,
            registry=r,
        ).labels(*values)
        self.queue_time = Histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            labels,
            buckets=E2E_BUCKETS,
            registry=r,
        ).labels(*values)
        self.prompt_tokens = Counter(
            "vllm:prompt_tokens", "Number of prefill tokens processed.", labels, registry=r
        ).labels(*values)
        self.generation_tokens = Counter(
            "vllm:generation_tokens", "Number of generation tokens processed.", labels, registry=r
        ).labels(*values)
