"""The one protocol every picking strategy implements: a pure function over a snapshot of endpoint state."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class EndpointView:
    """What a strategy may look at: an eligible endpoint and the requests the router has in flight on it."""

    id: str
    inflight: int


@dataclass(frozen=True, slots=True)
class PickContext:
    """Per-request inputs besides the snapshot. Everything random or stateful is passed in, so a pick is
    reproducible from its inputs."""

    seq: int = 0  # monotonically increasing request number (round-robin)
    key: str | None = None  # affinity key (PrefixHash): a prefix of the prompt
    rng: random.Random | None = None  # power-of-two choices


@dataclass(frozen=True, slots=True)
class Pick:
    endpoint: str
    reason: str


class Strategy(Protocol):
    name: str
    needs_key: bool  # whether the proxy should extract a prompt prefix for this strategy

    def pick(self, endpoints: Sequence[EndpointView], ctx: PickContext) -> Pick:
        """Choose one of `endpoints` (never empty)."""
        ...
