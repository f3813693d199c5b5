"""Prometheus → per-service observations: one PromQL query per metric kind per cycle, for all services.

Each query returns, per ``(namespace, inferenceservice)``, three series told apart by a ``shoal_field``
label: ``value`` (the aggregated figure), ``ts`` (the oldest scrape timestamp behind it, so the policy can
judge staleness) and ``series`` (how many pod series were aggregated).  Only series whose scrape target is
up right now count (``and on (job, instance) (up == 1)``), and, for the pods' own signals, only series of
the pods the API server lists now (``pod=~"..."``), so series of deleted or unreachable pods never feed a
decision.  The query text for each kind is operator configuration (:class:`QueryTemplate`); a
service may replace one kind with its own PromQL (``prometheusQueryOverrides``), which costs one extra
query for that service and has no scrape timestamp (the evaluation time is used).

prometheus-api-client is synchronous (requests); the loop calls :meth:`MetricsSource.collect` in a thread.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from .kinds import POD_SIGNALS, ServiceKey, Signal
from .model import Observation, UnusableKind

GROUP = "namespace, inferenceservice"
FIELD = "shoal_field"


@dataclass(frozen=True)
class QueryTemplate:
    """How one metric kind is read.

    ``value``: PromQL with one series per ``(namespace, inferenceservice)``; ``{quantile}`` is substituted
    for latency kinds.  ``freshness``: plain series selectors (``timestamp()`` needs bare selectors) whose
    oldest sample timestamp stands for the value's age; the first one's series count is the number of pods.
    """

    value: str
    freshness: tuple[str, ...]


_UP = "and on (job, instance) (up == 1)"


def _names(*names: str) -> str:
    """A selector for metric names, also matching the OpenMetrics spelling of ``vllm:`` names.

    prometheus_client >= 0.2x writes ``vllm:foo`` as ``vllm_foo`` when Prometheus negotiates OpenMetrics,
    so both spellings exist in the wild; a pod exports only one of them.
    """
    spelled = [n for name in names for n in dict.fromkeys((name, name.replace(":", "_")))]
    return '{__name__=~"' + "|".join(spelled) + '"}'


_ENGINE_WAITING = _names("vllm:num_requests_waiting")
_ADMISSION = _names("shoal_server_queue_depth")
_SERVER_WAITING = _names("vllm:num_requests_waiting", "shoal_server_queue_depth")
# The router's (and EPP's) flow-control queue: when every replica is full the router holds requests instead
# of sending them on, so the replicas' queues stay short while clients wait (#19: 593 requests queued in
# the router while QueueDepth read 1). The routers' series are written as bare names so that the live-pods
# restriction (model-server pods, `_only_pods`) leaves them alone; `up == 1` drops dead routers.
_ROUTER_QUEUED = "shoal_router_flow_queued_requests"
_ROUTER_WAIT_BUCKET = "shoal_router_flow_wait_seconds_bucket"
_RUNNING = _names("vllm:num_requests_running")
_PENDING = _names("shoal_router_pending_requests")
_KV = _names("vllm:kv_cache_usage_perc")
# Client-visible TTFT (arrival at the model-server, admission queue included) first; the engine's own
# (which excludes shoal's admission queue) only for pods that do not export the former.
_CLIENT_TTFT_BUCKET = _names("shoal_server_time_to_first_token_seconds_bucket")
_ENGINE_TTFT_BUCKET = _names("vllm:time_to_first_token_seconds_bucket")
_CLIENT_TTFT_COUNT = _names("shoal_server_time_to_first_token_seconds_count")
_ENGINE_TTFT_COUNT = _names("vllm:time_to_first_token_seconds_count")
_TTFT_COUNT = _names(
    "shoal_server_time_to_first_token_seconds_count", "vllm:time_to_first_token_seconds_count"
)


def _quantile(buckets: str) -> str:
    return f"(histogram_quantile({{quantile}}, sum by ({GROUP}, le) (rate({buckets}[1m]) {_UP})) >= 0)"


_SERVER_TTFT = (
    f"({_quantile(_CLIENT_TTFT_BUCKET)} or {_quantile(_ENGINE_TTFT_BUCKET)}"
    f" or (sum by ({GROUP}) (rate({_TTFT_COUNT}[1m]) {_UP}) * 0))"
)


DEFAULT_TEMPLATES: dict[Signal, QueryTemplate] = {
    # model-server admission queue + the engine's own waiting queue + the routers' queues
    Signal.QUEUE_DEPTH: QueryTemplate(
        f"sum by ({GROUP}) (({_SERVER_WAITING} {_UP}) or ({_ROUTER_QUEUED} {_UP}))",
        (_ENGINE_WAITING, _ADMISSION),
    ),
    Signal.RUNNING_REQUESTS: QueryTemplate(f"sum by ({GROUP}) ({_RUNNING} {_UP})", (_RUNNING,)),
    Signal.ROUTER_PENDING: QueryTemplate(f"sum by ({GROUP}) ({_PENDING} {_UP})", (_PENDING,)),
    Signal.KV_CACHE_USAGE: QueryTemplate(f"avg by ({GROUP}) ({_KV} {_UP})", (_KV,)),
    # What a client waits for its first token: the model-server's client-visible TTFT (the engine's misses
    # the admission queue: #19 saw clients wait 30 s while it read under 2 s) plus the p95 of the wait in
    # the router's flow-control queue before the request reached a replica (0 without a router). A sum of
    # p95s bounds the p95 of the sum from above: it errs towards scaling up. No request in the window
    # gives NaN from histogram_quantile; it reads 0 s then (no traffic, no latency).
    Signal.TIME_TO_FIRST_TOKEN: QueryTemplate(
        f"{_SERVER_TTFT} + on ({GROUP}) ({_quantile(_ROUTER_WAIT_BUCKET)} or {_SERVER_TTFT} * 0)",
        (_CLIENT_TTFT_COUNT, _ENGINE_TTFT_COUNT),
    ),
}


def build_query(template: QueryTemplate, quantile: float = 0.95, pods: frozenset[str] | None = None) -> str:
    """The one query of a metric kind; with `pods`, only series of these (live) pods count."""
    value = template.value.replace("{quantile}", f"{quantile:g}")
    fresh = " or ".join(f"(timestamp({sel}) {_UP})" for sel in template.freshness)
    count = f"{template.freshness[0]} {_UP}"
    query = (
        f'label_replace({value}, "{FIELD}", "value", "", "")'
        f' or label_replace(min by ({GROUP}) ({fresh}), "{FIELD}", "ts", "", "")'
        f' or label_replace(count by ({GROUP}) ({count}), "{FIELD}", "series", "", "")'
    )
    return _only_pods(query, pods) if pods else query


_NAME_SELECTOR = re.compile(r'\{__name__=~"([^"]*)"\}')


def _only_pods(query: str, pods: frozenset[str]) -> str:
    """Restrict every metric selector to the `pod` label of live pods.

    A scrape target that is up is not enough: series of pods deleted from the API can stay up (a
    recreated InferenceService of the same name found the old pods' queue gauges still reporting 0,
    #19). Pod names are DNS-1123 names; a dot is the only regex character they can hold."""
    alternatives = "|".join(sorted(p.replace(".", "\\\\.") for p in pods))
    return _NAME_SELECTOR.sub(lambda m: f'{{__name__=~"{m.group(1)}",pod=~"{alternatives}"}}', query)


@dataclass(frozen=True)
class ServiceQuery:
    """What one InferenceService needs from Prometheus this cycle."""

    namespace: str
    name: str
    signals: frozenset[Signal]
    quantile: float = 0.95
    overrides: Mapping[Signal, str] = field(default_factory=dict)
    #: Names of the service's live model-server pods (from the API server); None: do not restrict.
    pods: frozenset[str] | None = None


@dataclass
class Snapshot:
    observations: dict[ServiceKey, dict[Signal, Observation]]
    queries: list[str]
    errors: dict[Signal, str]

    def for_service(self, namespace: str, name: str) -> dict[Signal, Observation]:
        return self.observations.get((namespace, name), {})


class MetricsSource:
    def __init__(
        self,
        url: str,
        templates: Mapping[Signal, QueryTemplate] | None = None,
        timeout_seconds: float = 5.0,
        client: Any | None = None,
    ) -> None:
        self.templates = dict(DEFAULT_TEMPLATES)
        self.templates.update(templates or {})
        self.timeout = timeout_seconds
        self.client: Any = client or PrometheusConnect(
            url=url,
            disable_ssl=True,
            retry=Retry(total=0),
            timeout=int(max(timeout_seconds, 1)),
            method="POST",
        )

    def _query(self, promql: str, queries: list[str]) -> list[dict[str, Any]]:
        queries.append(promql)
        result = self.client.custom_query(query=promql)
        return list(result)

    def collect(self, services: Iterable[ServiceQuery], now: float | None = None) -> Snapshot:
        """Query Prometheus once per metric kind (and per distinct latency quantile) for all services."""
        services = list(services)
        queries: list[str] = []
        errors: dict[Signal, str] = {}
        out: dict[ServiceKey, dict[Signal, Observation]] = {(s.namespace, s.name): {} for s in services}

        # group (signal, quantile) -> services that want it from the shared query
        wanted: dict[tuple[Signal, float], list[ServiceQuery]] = {}
        for s in services:
            for sig in s.signals:
                if sig in s.overrides:
                    continue
                q = s.quantile if sig is Signal.TIME_TO_FIRST_TOKEN else 0.0
                wanted.setdefault((sig, q), []).append(s)

        for (sig, q), users in sorted(wanted.items(), key=lambda kv: (kv[0][0].value, kv[0][1])):
            promql = build_query(self.templates[sig], q or 0.95, _live_pods(sig, users))
            try:
                rows = self._query(promql, queries)
            except Exception as exc:  # connection refused, timeout, HTTP 4xx/5xx, bad JSON
                reason = f"Prometheus query failed: {type(exc).__name__}: {_short(exc)}"
                errors[sig] = reason
                for s in users:
                    out[(s.namespace, s.name)][sig] = Observation(None, error=reason)
                continue
            parsed = _parse(rows)
            for s in users:
                out[(s.namespace, s.name)][sig] = _observation(parsed.get((s.namespace, s.name), {}))

        for s in services:
            for sig, promql in s.overrides.items():
                if sig in s.signals:
                    out[(s.namespace, s.name)][sig] = self._override(promql, s, queries)
        return Snapshot(out, queries, errors)

    def _override(self, promql: str, s: ServiceQuery, queries: list[str]) -> Observation:
        try:
            rows = self._query(promql, queries)
        except Exception as exc:
            return Observation(None, error=f"override query failed: {type(exc).__name__}: {_short(exc)}")
        return _override_observation(rows, s)


def _live_pods(sig: Signal, users: list[ServiceQuery]) -> frozenset[str] | None:
    """The live pods of these services, when every one of them knows its pods and the signal is a pod's."""
    if sig not in POD_SIGNALS or any(u.pods is None for u in users):
        return None
    return frozenset().union(*(u.pods or frozenset() for u in users)) or None


def _observation(fields: dict[str, float]) -> Observation:
    series = fields.get("series")
    return Observation(
        value=fields.get("value"),
        timestamp=fields.get("ts"),
        series=int(series) if series is not None and math.isfinite(series) else 0,
    )


def _short(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ")
    return text[:200]


def _parse(rows: list[dict[str, Any]]) -> dict[ServiceKey, dict[str, float]]:
    out: dict[ServiceKey, dict[str, float]] = {}
    for row in rows:
        labels = row.get("metric", {})
        key = (str(labels.get("namespace", "")), str(labels.get("inferenceservice", "")))
        name = str(labels.get(FIELD, "value"))
        try:
            value = float(row["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        out.setdefault(key, {})[name] = value
    return out


def _override_observation(rows: list[dict[str, Any]], s: ServiceQuery) -> Observation:
    matching = [
        r
        for r in rows
        if r.get("metric", {}).get("namespace", s.namespace) == s.namespace
        and r.get("metric", {}).get("inferenceservice", s.name) == s.name
    ]
    if not matching:
        return Observation(None)
    total = 0.0
    stamp = math.inf
    for r in matching:
        try:
            total += float(r["value"][1])
            stamp = min(stamp, float(r["value"][0]))
        except (KeyError, IndexError, TypeError, ValueError):
            return Observation(
                None, error="override query returned a malformed sample", failure=UnusableKind.INVALID_VALUE
            )
    return Observation(total, timestamp=stamp, series=len(matching))
