"""Retry policy: which failures are retried, how long to wait, and a budget. Pure."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUS


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    ``now`` is the current Unix time (for the date form). Returns ``None`` when absent or unparseable;
    never negative.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isnan(seconds) or math.isinf(seconds):
            return None
        return max(0.0, seconds)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        return None
    return max(0.0, when.timestamp() - now)


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry number ``attempt`` (1 = the first retry).

    Exponential backoff with "full jitter" (uniform in ``[0, min(cap, base * 2**(attempt-1))]``). A server's
    ``Retry-After`` is a floor: we never come back earlier than asked, plus a little jitter (up to 10 %
    of the backoff ceiling) so that clients told the same instant do not return in lock-step.
    """
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    r = rng.random() if rng is not None else random.random()
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 62))
    if retry_after is None:
        return r * ceiling
    return retry_after + r * 0.1 * ceiling


@dataclass(slots=True)
class RetryBudget:
    """Caps retries across the whole run: ``minimum + ratio * first_attempts`` retries in total.

    Protects an overloaded service from a retry storm: when most requests fail, the run fails fast
    instead of multiplying the load. ``ratio = inf`` disables the budget.
    """

    ratio: float = 1.0
    minimum: int = 50
    first_attempts: int = 0
    retries: int = 0

    def record_attempt(self) -> None:
        self.first_attempts += 1

    def allowed(self) -> float:
        if math.isinf(self.ratio):
            return math.inf
        return self.minimum + self.ratio * self.first_attempts

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        if self.retries + 1 > self.allowed():
            return False
        self.retries += 1
        return True
