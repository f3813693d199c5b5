"""RFC 3339 timestamps in UTC with a `Z` suffix, as Kubernetes writes them (conditions, Events, Leases)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

Digits = Literal[0, 3, 6]


def _utc(when: datetime | float | None) -> datetime:
    if when is None:
        return datetime.now(UTC)
    if isinstance(when, datetime):
        return when.astimezone(UTC)
    return datetime.fromtimestamp(when, UTC)


def rfc3339(when: datetime | float | None = None, digits: Digits = 0) -> str:
    """`when` (a datetime, a Unix time, or now) as `2026-01-02T03:04:05Z`; `digits` of fractional seconds.

    0 digits is Kubernetes' `Time` (conditions, Events), 6 its `MicroTime` (Leases), 3 suits log lines.
    """
    t = _utc(when)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{t.microsecond:06d}"[:digits]
    return text + "Z"


def parse_rfc3339(value: str) -> datetime:
    """The aware datetime that `value` (RFC 3339, `Z` or an offset) names; ValueError when it is not one."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
