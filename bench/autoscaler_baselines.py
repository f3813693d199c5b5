"""Faithful re-implementations of the autoscalers shoal is compared with, for the trace simulator.

* HPA v2 (kube-controller-manager ``podautoscaler``): ``calcPlainMetricReplicas`` for Pods metrics with
  ``groupPods`` (Pending pods are "unready", pods without metrics are "missing", both count 0 on a scale-up
  and 100 % on a scale-down), the 10 % tolerance, ``stabilizeRecommendationWithBehaviors`` (up 0 s, down
  300 s) and ``convertDesiredReplicasWithBehaviorRate`` with the default policies (up: max(100 %, 4 pods)
  per 15 s; down: 100 % per 15 s), a 15 s sync period.
* KEDA: an HPA on External metrics with ``AverageValue`` targets, i.e. ``GetExternalPerPodMetricReplicas``
  (``ceil(sum / target)`` unless within tolerance of ``status.replicas``), plus its own 30 s polling loop
  for the 0 <-> 1 activation and a 300 s cooldown before scaling to zero.

Both read the metric values Prometheus holds at their sync time (the latest scrape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HPAMetric:
    name: str  # a key of the per-pod metric maps ("waiting", "running")
    target: float  # AverageValue per pod


@dataclass
class PodView:
    """What the Kubernetes API and Prometheus show of one pod."""

    name: str
    phase: str  # "Pending" or "Running"
    ready: bool
    metrics: dict[str, float] | None  # None: the pod exports nothing yet (loading)


@dataclass(frozen=True)
class Policy:
    kind: str  # "Pods" or "Percent"
    value: int
    period: float


@dataclass
class HPA:
    metrics: tuple[HPAMetric, ...]
    min_replicas: int
    max_replicas: int
    tolerance: float = 0.1
    up_window: float = 0.0
    down_window: float = 300.0
    up_policies: tuple[Policy, ...] = (Policy("Percent", 100, 15), Policy("Pods", 4, 15))
    down_policies: tuple[Policy, ...] = (Policy("Percent", 100, 15),)
    external: bool = False  # KEDA: External metrics with AverageValue
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    up_events: list[tuple[float, int]] = field(default_factory=list)
    down_events: list[tuple[float, int]] = field(default_factory=list)

    # ---------------------------------------------------------------------- replica_calculator.go
    def _plain(self, m: HPAMetric, pods: list[PodView], current: int) -> int | None:
        values: dict[str, float] = {}
        ready = 0
        unready: list[str] = []
        missing: list[str] = []
        for p in pods:
            if p.phase == "Pending":
                unready.append(p.name)
                continue
            if p.metrics is None or m.name not in p.metrics:
                missing.append(p.name)
                continue
            values[p.name] = p.metrics[m.name]
            ready += 1
        if not values:
            return None  # "did not receive metrics for targeted pods (pods might be unready)"
        ratio = sum(values.values()) / (len(values) * m.target)
        rebalance = bool(unready) and ratio > 1.0
        if not rebalance and not missing:
            if abs(1.0 - ratio) <= self.tolerance:
                return current
            return math.ceil(ratio * ready)
        if missing:
            fill = m.target if ratio < 1.0 else 0.0
            for name in missing:
                values[name] = fill
        if rebalance:
            for name in unready:
                values[name] = 0.0
        new_ratio = sum(values.values()) / (len(values) * m.target)
        if abs(1.0 - new_ratio) <= self.tolerance or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
            return current
        proposal = math.ceil(new_ratio * len(values))
        if (new_ratio < 1.0 and proposal > current) or (new_ratio > 1.0 and proposal < current):
            return current
        return proposal

    def _external(self, m: HPAMetric, total: float | None, status_replicas: int) -> int | None:
        if total is None:
            return None
        replicas = status_replicas
        if replicas == 0:
            return math.ceil(total / m.target)
        ratio = total / (m.target * replicas)
        if abs(1.0 - ratio) > self.tolerance:
            replicas = math.ceil(total / m.target)
        return replicas

    # ---------------------------------------------------------------------- horizontal.go
    def _stabilize(self, now: float, desired: int, current: int) -> int:
        up = desired
        down = desired
        for t, rec in self.recommendations:
            if t > now - self.up_window:
                up = min(up, rec)
            if t > now - self.down_window:
                down = max(down, rec)
        horizon = max(self.up_window, self.down_window)
        self.recommendations = [(t, r) for t, r in self.recommendations if t > now - horizon]
        self.recommendations.append((now, desired))
        result = current
        result = max(result, up)
        result = min(result, down)
        return result

    @staticmethod
    def _changed(events: list[tuple[float, int]], now: float, period: float) -> int:
        return sum(n for t, n in events if t > now - period)

    def _rate(self, now: float, desired: int, current: int) -> int:
        if desired > current:
            limit = -(1 << 30)
            for p in self.up_policies:
                start = (
                    current
                    - self._changed(self.up_events, now, p.period)
                    + self._changed(self.down_events, now, p.period)
                )
                proposed = start + p.value if p.kind == "Pods" else math.ceil(start * (1 + p.value / 100))
                limit = max(limit, proposed)
            limit = max(limit, current)
            desired = min(desired, limit, self.max_replicas)
        elif desired < current:
            limit = 1 << 30
            for p in self.down_policies:
                start = (
                    current
                    - self._changed(self.up_events, now, p.period)
                    + self._changed(self.down_events, now, p.period)
                )
                proposed = start - p.value if p.kind == "Pods" else int(start * (1 - p.value / 100))
                limit = min(limit, proposed)
            limit = min(limit, current)
            desired = max(desired, limit, self.min_replicas)
        return min(max(desired, self.min_replicas), self.max_replicas)

    def sync(self, now: float, current: int, pods: list[PodView], totals: dict[str, float | None]) -> int:
        """One reconcile of the HPA; returns the new spec.replicas."""
        if current == 0:
            return 0  # the HPA is disabled at zero replicas
        proposals: list[int] = []
        invalid = 0
        status_replicas = len(pods)
        for m in self.metrics:
            r = (
                self._external(m, totals.get(m.name), status_replicas)
                if self.external
                else self._plain(m, pods, current)
            )
            if r is None:
                invalid += 1
            else:
                proposals.append(r)
        if not proposals:
            return current
        desired = max(proposals)
        if invalid and desired < current:
            return current  # an invalid metric blocks scale-down
        stabilized = self._stabilize(now, desired, current)
        final = self._rate(now, stabilized, current)
        if final > current:
            self.up_events.append((now, final - current))
        elif final < current:
            self.down_events.append((now, current - final))
        keep = max([p.period for p in (*self.up_policies, *self.down_policies)])
        self.up_events = [e for e in self.up_events if e[0] > now - keep]
        self.down_events = [e for e in self.down_events if e[0] > now - keep]
        return final


@dataclass
class KEDA:
    """KEDA ScaledObject: its operator's activation loop plus the HPA it creates (External metrics)."""

    hpa: HPA
    polling_interval: float = 30.0
    cooldown: float = 300.0
    activation_threshold: float = 0.0
    min_replica_count: int = 1
    last_active: float | None = None

    def poll(self, now: float, current: int, totals: dict[str, float | None]) -> int:
        """The operator's activation check (every pollingInterval)."""
        active = any(v is not None and v > self.activation_threshold for v in totals.values())
        # KEDA's default treats an empty Prometheus result as 0 (ignoreNullValues=true)
        if active:
            self.last_active = now
            if current == 0:
                return max(1, self.min_replica_count)
            return current
        if (
            current > 0
            and self.min_replica_count == 0
            and (self.last_active is None or now - self.last_active >= self.cooldown)
        ):
            return 0
        return current
