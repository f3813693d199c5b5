"""Typed settings of a batch run and of an open-loop load run (the Python API's input)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal_batch.balancer import Balance
from shoal_batch.grading import GradeMode
from shoal_batch.inputs import Item
from shoal_batch.replay import ReplayPlan
from shoal_batch.schedule import Arrivals, RateCurve


class ConfigError(ValueError):
    pass


@dataclass(slots=True)
class BatchConfig:
    endpoints: list[str]
    input: str | Path | None = None  # JSONL file; or give ``items`` directly
    items: list[Item] | None = None
    out: str | Path | None = None  # output JSONL (resumable); None keeps records in memory only
    concurrency: int = 16
    model: str | None = None  # default: the first model the first endpoint lists
    timeout_s: float = 600.0  # per attempt
    max_attempts: int = 5
    retry_budget: float = 1.0  # retries allowed = retry_budget_min + retry_budget * requests; inf = no cap
    retry_budget_min: int = 50
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    max_retry_after_s: float = 600.0  # a larger Retry-After is not waited for: the attempt fails instead
    stream: bool = False  # stream responses to measure time to first token
    balance: Balance = Balance.ROUND_ROBIN
    api_key: str | None = None
    grade: GradeMode | None = None
    fail_fast: bool = False  # raise on the first malformed input line
    retry_failed: bool = False  # on resume, run ids whose earlier record is an error again
    params: dict[str, Any] = field(default_factory=dict)  # defaults for every request body (max_tokens ...)
    headers: dict[str, str] = field(default_factory=dict)
    progress: bool = False
    fsync: bool = False
    keep_records: bool = False  # Report.records holds every output record (for tests)
    seed: int | None = None  # jitter RNG seed

    def validate(self) -> None:
        if not self.endpoints:
            raise ConfigError("at least one --endpoint is required")
        if self.concurrency < 1:
            raise ConfigError("concurrency must be >= 1")
        if self.max_attempts < 1:
            raise ConfigError("max attempts must be >= 1")
        if not (self.timeout_s > 0):
            raise ConfigError("timeout must be > 0")
        if self.retry_budget < 0 or math.isnan(self.retry_budget):
            raise ConfigError("retry budget must be >= 0")
        if self.input is None and self.items is None:
            raise ConfigError("an input file or items are required")


@dataclass(slots=True)
class LoadConfig(BatchConfig):
    """Open loop: send at the curve's schedule whatever the responses do."""

    curve: RateCurve | None = None
    replay: ReplayPlan | None = (
        None  # a request trace: its own instants and token counts (instead of a curve)
    )
    arrivals: Arrivals = Arrivals.UNIFORM
    schedule_seed: int = 0
    max_requests: int = 100_000
    max_duration_s: float = 3600.0
    max_inflight: int = 4096  # beyond this, a due send is dropped (counted) rather than queued
    drain_timeout_s: float = 60.0  # after the last send, how long in-flight requests may finish
    prompt: str = "Say hello."  # used when no input file is given
    max_attempts: int = 1

    def validate(self) -> None:
        if (self.curve is None) == (self.replay is None):
            raise ConfigError("exactly one of a rate trace or shape (--trace) and a request trace (--replay)")
        if self.replay is not None and (self.input is not None or self.items):
            raise ConfigError("--input is not used with --replay (the trace gives every prompt's length)")
        if self.input is None and self.items is None:
            self.items = []
        BatchConfig.validate(self)
        if self.max_requests < 1 or not (self.max_duration_s > 0):
            raise ConfigError("max requests and max duration must be positive")
