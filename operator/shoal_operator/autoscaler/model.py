"""The policy's data: configuration, inputs, remembered state, the typed signal readings and the decision.

Plain frozen dataclasses and enums, no behaviour beyond small derived properties; the stages that use
them are `signals.py` (evaluate), `recommend.py` (recommend) and `guards.py` (guards).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from .kinds import MetricKind, Signal

# --------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class MetricTarget:
    type: MetricKind
    #: targetPerReplica for sum metrics, targetSeconds for TTFT, a fraction (0..1) for KV-cache usage.
    target: float
    quantile: float = 0.95


@dataclass(frozen=True)
class StepBehavior:
    stabilization_seconds: float
    max_percent_per_step: float | None  # None: no percentage limit
    period_seconds: float
    max_replicas_per_step: int | None = None


def _default_up() -> StepBehavior:
    return StepBehavior(stabilization_seconds=0.0, max_percent_per_step=100.0, period_seconds=15.0)


def _default_down() -> StepBehavior:
    return StepBehavior(stabilization_seconds=300.0, max_percent_per_step=50.0, period_seconds=60.0)


@dataclass(frozen=True)
class PolicyConfig:
    """The autoscaling block of an InferenceService, as plain data (see ``adapter.py`` for the CR)."""

    min_replicas: int = 1
    max_replicas: int = 4
    metrics: tuple[MetricTarget, ...] = (MetricTarget(MetricKind.QUEUE_DEPTH, 4.0),)
    tolerance: float = 0.1
    scale_up: StepBehavior = field(default_factory=_default_up)
    scale_down: StepBehavior = field(default_factory=_default_down)
    panic_threshold_percent: float = 200.0
    panic_window_seconds: float = 60.0
    scale_to_zero: bool = False
    idle_seconds: float = 600.0
    metrics_max_age_seconds: float = 30.0
    #: Scale-down decisions use each metric's mean over this window, scale-up decisions the mean over
    #: ``up_window_seconds`` (noise does not move replicas); panic detection uses the newest sample alone
    #: (a spike is seen at the first scrape).
    stable_window_seconds: float = 60.0
    up_window_seconds: float = 20.0
    #: A scale-down must remove at least this share of the replicas (at least one): scale-down events
    #: cost drains and cold caches, so they are batched rather than taken one replica a minute.
    min_scale_down_percent: float = 20.0
    #: Requests one replica serves at its target load; used to turn a backlog into a replica count
    #: (scale from zero, the cold-start cap).  Defaults to the RunningRequests target when configured.
    replica_capacity: float | None = None
    #: A scale-down never leaves more load per replica than this share of ``replica_capacity`` (running +
    #: waiting + held against maxConcurrency): an empty queue under steady load means the capacity is
    #: there, not that one replica is enough (#19). With a RunningRequests target that target is the
    #: capacity at full use (the user chose it).
    scale_down_utilization: float = 0.5

    def capacity(self) -> float | None:
        if self.replica_capacity is not None and self.replica_capacity > 0:
            return self.replica_capacity
        for m in self.metrics:
            if m.type is MetricKind.RUNNING_REQUESTS and m.target > 0:
                return m.target
        return None

    @property
    def floor(self) -> int:
        return max(self.min_replicas, 1)

    @property
    def ceiling(self) -> int:
        return max(self.max_replicas, self.floor)


# --------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Observation:
    """One signal for one service, as the metrics layer saw it.

    ``value is None and error is None`` means the query succeeded but returned no series for the service.
    ``timestamp`` is the newest scrape time behind the value (seconds since the epoch); ``series`` is the
    number of pod series that were aggregated (0 when unknown). With ``error`` set, ``failure`` says what
    kind of failure it was (the query itself by default).
    """

    value: float | None
    timestamp: float | None = None
    error: str | None = None
    series: int = 0
    failure: UnusableKind | None = None


@dataclass(frozen=True)
class PolicyInput:
    now: float
    #: InferenceService spec.replicas (what the scale subresource holds).
    spec_replicas: int
    ready_replicas: int
    #: Pods that exist, are not terminating and are not ready: Pending (incl. unschedulable) or loading.
    starting_replicas: int = 0
    #: Subset of starting_replicas: Pending with PodScheduled=False/Unschedulable (e.g. no free GPU).
    unschedulable_replicas: int = 0
    observations: Mapping[Signal, Observation] = field(default_factory=dict)
    #: How long this service's ready pods took from creation to Ready (their median; None: no ready pod
    #: to measure). The horizon of the backlog outlook (`outlook.py`).
    startup_seconds: float | None = None

    @property
    def starting_schedulable(self) -> int:
        return max(self.starting_replicas - self.unschedulable_replicas, 0)


@dataclass(frozen=True)
class ScaleEvent:
    time: float
    from_replicas: int
    to_replicas: int


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between cycles (kept in memory by the loop, one per service)."""

    #: When this state was first used; scale-down needs a full stabilization window of history.
    started_at: float
    #: (time, recommendation) of recent cycles; a cycle with missing metrics records the current count.
    recommendations: tuple[tuple[float, int], ...] = ()
    events: tuple[ScaleEvent, ...] = ()
    panic_until: float | None = None
    idle_since: float | None = None
    #: (signal, sample timestamp, value) of the stable window, one entry per scrape.
    samples: tuple[tuple[str, float, float], ...] = ()
    #: (time, demand) of the last cycles, for the backlog's growth (`outlook.py`).
    demand_history: tuple[tuple[float, float], ...] = ()


# --------------------------------------------------------------------------------------------- stage 1


class UnusableKind(StrEnum):
    """Why a signal cannot be used; each kind maps to one ``MetricsAvailable=False`` reason."""

    NOT_QUERIED = "NotQueried"
    QUERY_FAILED = "QueryFailed"
    NO_DATA = "NoData"
    INVALID_VALUE = "InvalidValue"
    NO_TIMESTAMP = "NoTimestamp"
    STALE = "Stale"


#: The condition reason for each kind, and which one wins when several signals are unusable.
CONDITION_REASONS: dict[UnusableKind, str] = {
    UnusableKind.QUERY_FAILED: "PrometheusUnavailable",
    UnusableKind.STALE: "MetricsStale",
    UnusableKind.NO_DATA: "NoData",
    UnusableKind.INVALID_VALUE: "InvalidValue",
    UnusableKind.NO_TIMESTAMP: "MetricsUnavailable",
    UnusableKind.NOT_QUERIED: "MetricsUnavailable",
}


@dataclass(frozen=True)
class Usable:
    value: float
    age: float


@dataclass(frozen=True)
class Unusable:
    kind: UnusableKind
    detail: str  # human text with the signal's name, e.g. "QueueDepth: stale (45s old > 30s)"


Reading = Usable | Unusable


def condition_reason(unusable: Sequence[Unusable]) -> str:
    """The ``MetricsAvailable=False`` reason for these unusable signals (the most telling kind wins)."""
    kinds = {u.kind for u in unusable}
    for kind, reason in CONDITION_REASONS.items():
        if kind in kinds:
            return reason
    return "MetricsUnavailable"


# --------------------------------------------------------------------------------------------- output


class Reason(StrEnum):
    """Reasons recorded in ``status.autoscaler.lastDecision.reason``, Events and the decisions counter."""

    SCALE_UP = "ScaleUp"
    SCALE_DOWN = "ScaleDown"
    PANIC_SCALE_UP = "PanicScaleUp"
    SCALE_FROM_ZERO = "ScaleFromZero"
    SCALE_TO_ZERO = "ScaleToZero"
    BELOW_MIN = "BelowMinReplicas"
    ABOVE_MAX = "AboveMaxReplicas"
    WITHIN_TOLERANCE = "WithinTolerance"
    STABILIZING = "ScaleDownStabilizing"
    RATE_LIMITED = "RateLimited"
    COLD_START = "ColdStartHold"
    PANIC_HOLD = "PanicHold"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    CAPACITY_HOLD = "CapacityHold"
    IDLE = "Idle"
    AT_MAX = "AtMaxReplicas"


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"
    NONE = "none"


@dataclass(frozen=True)
class Draft:
    """A decision in the making: what the recommendation or a guard wants, and why."""

    desired: int
    reason: Reason
    message: str


@dataclass(frozen=True)
class Decision:
    current: int
    desired: int
    reason: Reason
    message: str
    direction: Direction
    limited_at_max: bool = False
    panic: bool = False
    #: The configured metrics that could not be used this cycle (typed: no string parsing downstream).
    unusable: tuple[Unusable, ...] = ()
    #: Replica count each configured metric asked for (those that were usable).
    per_metric: Mapping[str, int] = field(default_factory=dict)
    #: The numbers the decision was based on, for status.autoscaler.lastDecision.inputs.
    inputs: Mapping[str, float | int | str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return self.desired != self.current

    @property
    def metrics_unavailable(self) -> bool:
        return bool(self.unusable)

    @property
    def unavailable_reason(self) -> str:
        return "; ".join(u.detail for u in self.unusable)

    @property
    def condition_reason(self) -> str:
        return condition_reason(self.unusable)
