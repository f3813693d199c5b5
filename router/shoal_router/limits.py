"""Token buckets: per-key rate limits and the retry budget. Pure state machines over an injected clock."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class TokenBucket:
    rate: float  # tokens per second
    burst: float  # bucket size
    tokens: float
    updated: float

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take `cost` tokens. Returns 0.0 when allowed, else the seconds until it would be."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate if self.rate > 0 else math.inf


@dataclass(slots=True)
class RateLimiter:
    """Per-identity token buckets (identity: the API key's id, or the client address without keys)."""

    rate: float
    burst: float
    clock: Callable[[], float]
    max_keys: int = 100_000
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, identity: str) -> float:
        """0.0 if allowed, else seconds to wait (for Retry-After)."""
        now = self.clock()
        bucket = self._buckets.get(identity)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.clear()  # bounded memory under a flood of distinct identities
            bucket = self._buckets[identity] = TokenBucket(self.rate, self.burst, self.burst, now)
        return bucket.take(now)


@dataclass(slots=True)
class RetryBudget:
    """Retries may add at most `ratio` of the request rate, plus `min_per_s` so a quiet router can still
    retry (Finagle-style). Each request deposits `ratio` tokens; each retry withdraws one."""

    ratio: float
    min_per_s: float
    clock: Callable[[], float]
    window_s: float = 10.0
    _tokens: float = 0.0
    _updated: float | None = None

    def _refill(self) -> None:
        now = self.clock()
        if self._updated is None:
            self._updated = now
            self._tokens = self.min_per_s * self.window_s
        self._tokens += (now - self._updated) * self.min_per_s
        self._updated = now
        self._cap()

    def _cap(self) -> None:
        # the bucket holds at most a window's worth of deposits and floor
        cap = max(1.0, self.min_per_s * self.window_s + self.ratio * 1000)
        self._tokens = min(self._tokens, cap)

    def deposit(self) -> None:
        self._refill()
        self._tokens += self.ratio
        self._cap()

    def try_withdraw(self) -> bool:
        self._refill()
        if self._tokens >= 1.0 - 1e-9:  # ten deposits of 0.1 make one retry despite float rounding
            self._tokens -= 1.0
            return True
        return False
