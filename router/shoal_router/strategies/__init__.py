"""Endpoint-picking strategies, one per module, behind `Strategy` (see base.py)."""

from __future__ import annotations

from shoal_router.strategies.adapter_affinity import AdapterAffinity
from shoal_router.strategies.base import EndpointView, Pick, PickContext, Strategy
from shoal_router.strategies.least_load import LeastLoad
from shoal_router.strategies.prefix_hash import PrefixHash
from shoal_router.strategies.prefix_load import PrefixLoad
from shoal_router.strategies.round_robin import RoundRobin

STRATEGY_NAMES = ("LeastLoad", "PrefixHash", "PrefixLoad", "RoundRobin", "AdapterAffinity")


def make_strategy(name: str, *, load_factor: float = 1.25) -> Strategy:
    if name == "LeastLoad":
        return LeastLoad()
    if name == "PrefixHash":
        return PrefixHash(load_factor=load_factor)
    if name == "PrefixLoad":
        return PrefixLoad()
    if name == "RoundRobin":
        return RoundRobin()
    if name == "AdapterAffinity":
        return AdapterAffinity(load_factor=load_factor)
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGY_NAMES)}")


__all__ = [
    "STRATEGY_NAMES",
    "AdapterAffinity",
    "EndpointView",
    "LeastLoad",
    "Pick",
    "PickContext",
    "PrefixHash",
    "PrefixLoad",
    "RoundRobin",
    "Strategy",
    "make_strategy",
]
