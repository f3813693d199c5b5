"""Which pool and which replicas serve each model: built from the replicas' own `/v1/models` (pure).

A replica lists its base model (no `parent`) and its loaded LoRA adapters (`parent` = the base). The
catalog is rebuilt from the latest answers, so an adapter added or removed live shows up within one
poll, and a request for an adapter goes only to the replicas that list it.

`declared` (pools from Kubernetes) names each selected InferenceService's base model even while no
replica lists it (scaled to zero, restarting, rolling out): its requests then go to that pool, which
holds them until a replica is ready (bounded by `--pending-timeout`, then 503 with Retry-After), rather
than a 404 saying that a model which exists does not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shoal_router.split import Split


@dataclass(frozen=True)
class Route:
    pool: str
    endpoints: frozenset[str] | None  # None: any replica of the pool (none lists the model yet)
    adapter: bool  # a LoRA adapter (not a pool's base model)


@dataclass
class Catalog:
    # model -> pool -> endpoints listing it; model -> (parent, root)
    where: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    info: dict[str, tuple[str | None, str]] = field(default_factory=dict)
    declared: dict[str, str] = field(default_factory=dict)  # base model -> pool, from the specs

    def route(self, model: str) -> Route | None:
        pools = self.where.get(model)
        if not pools:
            pool_of = self.declared.get(model)
            return Route(pool_of, None, adapter=False) if pool_of is not None else None
        # One model in several pools (a migration): the pool with the most replicas serving it.
        pool = max(sorted(pools), key=lambda p: len(pools[p]))
        parent, _root = self.info[model]
        return Route(pool, frozenset(pools[pool]), adapter=parent is not None)


def _cards(doc: Any) -> Iterable[dict[str, Any]]:
    data = doc.get("data") if isinstance(doc, Mapping) else None
    for card in data if isinstance(data, list) else []:
        if isinstance(card, dict) and isinstance(card.get("id"), str) and card["id"]:
            yield card


def build(answers: Mapping[str, Mapping[str, Any]], declared: Mapping[str, str] | None = None) -> Catalog:
    """`answers`: pool -> endpoint -> that replica's `/v1/models` document; `declared`: base model ->
    pool for the pools' InferenceServices (their specs)."""
    cat = Catalog(declared=dict(declared or {}))
    for pool, by_endpoint in answers.items():
        for endpoint, doc in by_endpoint.items():
            for card in _cards(doc):
                model = card["id"]
                cat.where.setdefault(model, {}).setdefault(pool, set()).add(endpoint)
                parent = card.get("parent") if isinstance(card.get("parent"), str) else None
                cat.info.setdefault(model, (parent, str(card.get("root") or "")))
    return cat


def model_list(cat: Catalog, splits: Mapping[str, Split]) -> list[dict[str, Any]]:
    """The entry point's `/v1/models`: every model and adapter with its InferenceService, then the splits."""
    out: list[dict[str, Any]] = []
    for model in sorted(set(cat.where) | set(cat.declared)):
        route = cat.route(model)
        assert route is not None
        parent, _root = cat.info.get(model, (None, ""))
        out.append(
            {
                "id": model,
                "object": "model",
                "created": 0,
                "owned_by": route.pool,
                "parent": parent,
                "inference_service": route.pool,
                "replicas": len(route.endpoints or ()),
            }
        )
    for public, split in sorted(splits.items()):
        if public in cat.where or public in cat.declared:
            continue  # a split over a served name: the served card already lists it
        out.append(
            {
                "id": public,
                "object": "model",
                "created": 0,
                "owned_by": "shoal-split",
                "parent": None,
                "targets": [
                    {"model": t, "weight": w} for t, w in zip(split.targets, split.weights, strict=True)
                ],
            }
        )
    return out


def missing_targets(cat: Catalog, splits: Mapping[str, Split]) -> Sequence[str]:
    known = set(cat.where) | set(cat.declared)
    return sorted({t for s in splits.values() for t in s.targets if t not in known})
