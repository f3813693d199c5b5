"""The backlog ahead: how many requests will be in flight when pods started now are Ready (#19).

A burst keeps arriving while new pods load. Sized on the backlog of the burst's first seconds, a scale-up
climbs a staircase: in #19's live benchmark shoal went 1 -> 3 -> 4 -> 5 -> 6 -> 7 -> 8 over 18 s on a 5x
step, so the last pods were Ready 18 s after the first and the backlog took that much longer to drain.
The backlog's growth over the last seconds, times the time this service's pods take to become Ready,
says at the first decision how large the backlog will be when the capacity arrives.

Pure functions over the (time, demand) history the policy keeps; the startup time is measured from the
service's own pods (`report.startup_seconds`), never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

#: How far back the growth is measured: long enough to span two scrapes, short enough that a step's
#: growth is not averaged away by the quiet before it.
GROWTH_WINDOW_S = 10.0
#: The shortest span a growth figure is taken over (one cycle's difference is mostly scrape noise).
MIN_SPAN_S = 2.0

History = tuple[tuple[float, float], ...]  # (time, demand), oldest first


@dataclass(frozen=True)
class Outlook:
    """The demand now, its growth per second, and the demand expected once new pods are Ready."""

    demand: float
    growth_per_s: float | None
    startup_s: float | None

    @property
    def ahead(self) -> float:
        """Requests in flight when pods started now are Ready; the demand now when growth or the startup
        time is unknown, or the demand is not growing."""
        if self.growth_per_s is None or self.startup_s is None or self.growth_per_s <= 0:
            return self.demand
        return self.demand + self.growth_per_s * self.startup_s

    def describe(self) -> str:
        return (
            f"the backlog of {self.demand:g} grows {self.growth_per_s or 0:.2g}/s and new pods take "
            f"{self.startup_s or 0:.0f}s to be Ready: {self.ahead:.0f} then"
        )


def remember(history: History, now: float, demand: float) -> History:
    """The history with this cycle's demand, and nothing older than the growth window."""
    kept = tuple(h for h in history if now - GROWTH_WINDOW_S <= h[0] < now)
    return (*kept, (now, demand))


def growth(history: History) -> float | None:
    """Demand growth per second across the window (None: too short a span to tell)."""
    if len(history) < 2:
        return None
    (t0, d0), (t1, d1) = history[0], history[-1]
    span = t1 - t0
    if span < MIN_SPAN_S:
        return None
    return (d1 - d0) / span


def outlook(history: History, demand: float, startup_s: float | None) -> Outlook:
    return Outlook(demand, growth(history), startup_s)
