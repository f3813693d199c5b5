"""Typed configuration of one router, read once from the command line."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from shoal_router.flow.classify import parse_objectives
from shoal_router.flow.model import FlowConfig
from shoal_router.strategies import STRATEGY_NAMES


@dataclass(frozen=True, slots=True)
class RouterConfig:
    listen_host: str = "0.0.0.0"
    port: int = 8080
    # discovery
    discovery: str = "static"  # static | kubernetes (EndpointSlices) | pods
    upstreams: tuple[str, ...] = ()
    namespace: str = "default"
    service: str = ""
    kubeconfig: str | None = None
    port_name: str = "http"
    selector: str = ""  # pods discovery: label selector (default: the Service's selector)
    target_port: int = 8000  # pods discovery: when no container port is named port_name
    # picking
    strategy: str = "LeastLoad"
    prefix_chars: int = 256
    hash_load_factor: float = 1.25
    # proxying
    max_body_bytes: int = 16 * 1024 * 1024
    connect_timeout_s: float = 2.0
    first_byte_timeout_s: float = 600.0
    # failures
    max_attempts: int = 3
    retry_budget_ratio: float = 0.2
    retry_budget_min_per_s: float = 5.0
    eject_consecutive_failures: int = 5
    eject_base_s: float = 10.0
    eject_max_s: float = 300.0
    # scale from zero, and the saturation queue (one bounded queue: max_pending counts both)
    max_pending: int = 1024
    pending_timeout_s: float = 300.0
    pending_retry_after_s: int = 5
    max_queued_bytes: int = 256 * 1024 * 1024
    queue_timeout_s: float = 60.0
    replica_queue: int = 0  # requests a replica may queue beyond its maxConcurrency (router holds the rest)
    load_poll_interval_s: float = 0.1  # GET /load on each replica (0: off; response headers still count)
    objectives: tuple[tuple[str, int], ...] = ()  # x-gateway-inference-objective name -> priority band
    fair_reserve: float = 0.25  # share of slots kept for tenants below their fair share
    fair_reserve_max: float = 0.5  # the reserve grows with protected tenants' recent demand up to this
    fair_window_s: float = 10.0  # a tenant is active (and its recent peak remembered) this long
    engine_priority: bool = False  # set x-shoal-priority (replicas run --scheduling-policy priority)
    # security and limits
    api_keys_secret: str | None = None
    api_keys_file: str | None = None
    rate_limit_rps: float = 0.0
    rate_limit_burst: float = 0.0
    # process
    log_level: str = "INFO"
    access_log: bool = True
    shutdown_timeout_s: float = 30.0

    def validate(self) -> RouterConfig:
        problem = self._routing_problem() or self._bounds_problem()
        if problem:
            raise ValueError(problem)
        return self

    def _routing_problem(self) -> str | None:
        """What is wrong with discovery, strategy and credentials, first problem first; None if nothing."""
        if self.discovery not in ("static", "kubernetes", "pods", "models"):  # models: --models-config
            return "--discovery must be static, kubernetes or pods"
        if self.discovery == "static" and not self.upstreams:
            return "static discovery needs at least one --upstream URL"
        if self.discovery == "kubernetes" and not self.service:
            return "--discovery kubernetes needs --service (the model-server Service, X-model)"
        if self.discovery == "pods" and not (self.service or self.selector):
            return "--discovery pods needs --service or --selector"
        if self.strategy not in STRATEGY_NAMES:
            return f"--strategy must be one of {', '.join(STRATEGY_NAMES)}"
        if self.api_keys_secret and self.discovery == "static":
            return "--api-keys-secret needs Kubernetes discovery (use --api-keys-file otherwise)"
        return None

    def _bounds_problem(self) -> str | None:
        """Which numeric setting is out of range, first problem first; None if none."""
        if self.max_attempts < 1:
            return "--max-attempts must be >= 1"
        if self.hash_load_factor < 1.0:
            return "--hash-load-factor must be >= 1.0"
        if self.max_pending < 0 or self.max_queued_bytes < 0 or self.replica_queue < 0:
            return "--max-pending, --max-queued-bytes and --replica-queue must be >= 0"
        if not (self.queue_timeout_s > 0 and self.pending_timeout_s > 0):
            return "--queue-timeout and --pending-timeout must be > 0"
        if not (0 <= self.fair_reserve < 1 and 0 <= self.fair_reserve_max < 1):
            return "--fair-reserve and --fair-reserve-max must be in [0, 1)"
        if not 0 < self.fair_window_s <= 600:
            return "--fair-window must be more than 0 and at most 600 seconds"
        if not 0 <= self.load_poll_interval_s <= 10:
            return "--load-poll-interval must be between 0 (off) and 10 seconds"
        return None

    def flow(self) -> FlowConfig:
        """The dispatcher's bounds and timings."""
        return FlowConfig(
            max_queued=self.max_pending,
            max_queued_bytes=self.max_queued_bytes,
            queue_timeout_s=self.queue_timeout_s,
            hold_timeout_s=self.pending_timeout_s,
            hold_retry_after_s=self.pending_retry_after_s,
            replica_queue=self.replica_queue,
            fair_reserve=self.fair_reserve,
            fair_reserve_max=self.fair_reserve_max,
            fair_window_s=self.fair_window_s,
            engine_priority=self.engine_priority,
        )

    @property
    def rate_burst(self) -> float:
        return self.rate_limit_burst or max(1.0, self.rate_limit_rps)


def normalise_upstream(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


def from_args(ns: argparse.Namespace) -> RouterConfig:
    upstreams = tuple(normalise_upstream(u) for u in (ns.upstream or []))
    discovery = ns.discovery or ("static" if upstreams else "kubernetes")
    return RouterConfig(
        listen_host=ns.listen_host or ns.host,
        port=ns.port,
        discovery=discovery,
        upstreams=upstreams,
        namespace=ns.namespace,
        service=ns.service or "",
        kubeconfig=ns.kubeconfig,
        port_name=ns.port_name,
        selector=ns.selector or "",
        target_port=ns.target_port,
        strategy=ns.strategy,
        prefix_chars=ns.prefix_chars,
        hash_load_factor=ns.hash_load_factor,
        max_body_bytes=ns.max_body_bytes,
        connect_timeout_s=ns.connect_timeout,
        first_byte_timeout_s=ns.first_byte_timeout,
        max_attempts=ns.max_attempts,
        retry_budget_ratio=ns.retry_budget_ratio,
        retry_budget_min_per_s=ns.retry_budget_min_per_s,
        eject_consecutive_failures=ns.eject_consecutive_failures,
        eject_base_s=ns.eject_base_s,
        eject_max_s=ns.eject_max_s,
        max_pending=ns.max_pending,
        pending_timeout_s=ns.pending_timeout,
        pending_retry_after_s=ns.pending_retry_after,
        max_queued_bytes=ns.max_queued_bytes,
        queue_timeout_s=ns.queue_timeout,
        replica_queue=ns.replica_queue,
        load_poll_interval_s=ns.load_poll_interval,
        objectives=tuple(parse_objectives(ns.objective or []).items()),
        fair_reserve=ns.fair_reserve,
        fair_reserve_max=ns.fair_reserve_max,
        fair_window_s=ns.fair_window,
        engine_priority=ns.engine_priority,
        api_keys_secret=ns.api_keys_secret,
        api_keys_file=ns.api_keys_file,
        rate_limit_rps=ns.rate_limit_rps,
        rate_limit_burst=ns.rate_limit_burst,
        log_level=ns.log_level,
        access_log=not ns.no_access_log,
        shutdown_timeout_s=ns.shutdown_timeout,
    ).validate()
