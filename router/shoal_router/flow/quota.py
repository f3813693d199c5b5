"""Per-tenant tokens-per-minute quotas, counted from what the engine reports (`usage`).

A bucket per tenant holds up to one minute's quota and refills continuously. A request is admitted while
the bucket is positive; its tokens are charged when its usage is known (after the answer), so one large
request may take the bucket below zero and the tenant then waits until it refills. Pure state over an
injected clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Bucket:
    limit: int
    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class QuotaState:
    limit: int
    remaining: int
    reset_s: float  # seconds until the bucket is full again
    retry_after_s: float  # seconds until a request would be admitted (0: admitted now)

    def headers(self) -> dict[str, str]:
        """OpenAI's rate-limit headers for tokens."""
        return {
            "x-ratelimit-limit-tokens": str(self.limit),
            "x-ratelimit-remaining-tokens": str(self.remaining),
            "x-ratelimit-reset-tokens": format_duration(self.reset_s),
        }


def format_duration(seconds: float) -> str:
    """OpenAI's style: "1m30s", "6s", "250ms"."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


@dataclass(slots=True)
class TokenQuotas:
    max_tenants: int = 100_000
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def _bucket(self, tenant: str, limit: int, now: float) -> _Bucket:
        b = self._buckets.get(tenant)
        if b is None:
            if len(self._buckets) >= self.max_tenants:
                self._buckets.clear()  # bounded memory under a flood of tenants
            b = self._buckets[tenant] = _Bucket(limit, float(limit), now)
        if b.limit != limit:  # the key's quota changed: keep the spent share
            b.tokens = min(float(limit), b.tokens)
            b.limit = limit
        rate = limit / 60.0
        b.tokens = min(float(limit), b.tokens + (now - b.updated) * rate)
        b.updated = now
        return b

    def check(self, tenant: str, limit: int, now: float) -> QuotaState:
        b = self._bucket(tenant, limit, now)
        rate = limit / 60.0
        reset = (limit - b.tokens) / rate
        wait = 0.0 if b.tokens > 0 else (1.0 - b.tokens) / rate
        return QuotaState(limit, max(0, math.floor(b.tokens)), reset, wait)

    def charge(self, tenant: str, limit: int, tokens: int, now: float) -> None:
        if limit <= 0 or tokens <= 0:
            return
        b = self._bucket(tenant, limit, now)
        b.tokens -= tokens
