"""What the autoscaler can read: the metric kinds a user targets, and the series the metrics layer reads.

`MetricKind` is the one vocabulary of metric kinds: the CRD's `spec.autoscaling.metrics[].type` (api.py),
the policy's targets and the metrics layer's queries all use it. `Signal` adds what every autoscaled
service is read for besides its targets (the router's held requests) and keys the observations.
"""

from __future__ import annotations

from enum import StrEnum

#: Which InferenceService an observation or a probe is about: (namespace, name).
ServiceKey = tuple[str, str]


class MetricKind(StrEnum):
    QUEUE_DEPTH = "QueueDepth"  # requests waiting (model-server admission queue + engine waiting), summed
    RUNNING_REQUESTS = "RunningRequests"  # requests being decoded, summed
    TIME_TO_FIRST_TOKEN = "TimeToFirstToken"  # a quantile in seconds (a per-service value)
    KV_CACHE_USAGE = "KVCacheUsage"  # mean KV-cache usage fraction of the ready pods (a per-service value)


class Signal(StrEnum):
    QUEUE_DEPTH = MetricKind.QUEUE_DEPTH.value
    RUNNING_REQUESTS = MetricKind.RUNNING_REQUESTS.value
    TIME_TO_FIRST_TOKEN = MetricKind.TIME_TO_FIRST_TOKEN.value
    KV_CACHE_USAGE = MetricKind.KV_CACHE_USAGE.value
    ROUTER_PENDING = "RouterPending"  # requests the router holds because no replica is ready

    @classmethod
    def of(cls, kind: MetricKind) -> Signal:
        return cls(kind.value)


#: Metrics whose value is a sum over pods: desired = ceil(sum / targetPerReplica).
SUM_METRICS = frozenset({MetricKind.QUEUE_DEPTH, MetricKind.RUNNING_REQUESTS})
#: Metrics set per replica (targetPerReplica); TimeToFirstToken has targetSeconds instead.
PER_REPLICA_METRICS = (MetricKind.QUEUE_DEPTH, MetricKind.RUNNING_REQUESTS, MetricKind.KV_CACHE_USAGE)
#: Signals exported by model-server pods: no series is expected when no pod is ready.
POD_SIGNALS = frozenset(
    {Signal.QUEUE_DEPTH, Signal.RUNNING_REQUESTS, Signal.TIME_TO_FIRST_TOKEN, Signal.KV_CACHE_USAGE}
)
#: Signals computed from requests in a window: with no request in the window there is nothing to measure.
PER_REQUEST_SIGNALS = frozenset({Signal.TIME_TO_FIRST_TOKEN})
#: The load: scale from and to zero, the cold-start cap.
LOAD_SIGNALS = (Signal.QUEUE_DEPTH, Signal.RUNNING_REQUESTS, Signal.ROUTER_PENDING)
