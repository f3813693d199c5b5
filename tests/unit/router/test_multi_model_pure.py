"""The multi-model entry point's pure parts: splits, the catalog, the config file, adapter affinity."""

from __future__ import annotations

import random

import pytest
from shoal_router.multimodel import catalog
from shoal_router.multimodel.config import GatewayConfig, dump, parse_text
from shoal_router.split import choose, parse_split, parse_splits, resolve
from shoal_router.strategies import EndpointView, PickContext, make_strategy

pytestmark = pytest.mark.unit


def test_split_choose_is_proportional_and_exact_at_edges() -> None:
    split = parse_split("chat", {"v1": 90, "v2": 10})
    assert choose(split, 0.0) == "v1" and choose(split, 0.8999) == "v1"
    assert choose(split, 0.9) == "v2" and choose(split, 0.99999) == "v2"
    draws = [choose(split, i / 10000) for i in range(10000)]
    assert draws.count("v2") == 1000
    assert resolve({"chat": split}, "other", 0.95) == "other"
    assert choose(parse_split("c", {"a": 0, "b": 5}), 0.0) == "b"  # a zero weight is never chosen


@pytest.mark.parametrize(
    "doc",
    [{}, {"a": -1}, {"a": 1.5}, {"a": True}, {"a": 0}, {"": 1}, "v1", {f"t{i}": 1 for i in range(17)}],
)
def test_split_rejects_bad_input(doc: object) -> None:
    with pytest.raises(ValueError):
        parse_split("chat", doc)


def test_catalog_routes_models_and_adapters() -> None:
    answers = {
        "chat-v1": {
            "http://a": {"data": [{"id": "chat-v1", "parent": None}, {"id": "sql", "parent": "chat-v1"}]},
            "http://b": {"data": [{"id": "chat-v1", "parent": None}]},  # adapter not (yet) loaded here
        },
        "chat-v2": {"http://c": {"data": [{"id": "chat-v2"}]}, "http://d": {"junk": 1}},
    }
    cat = catalog.build(answers)
    v1 = cat.route("chat-v1")
    assert (
        v1 is not None
        and v1.pool == "chat-v1"
        and v1.endpoints == {"http://a", "http://b"}
        and not v1.adapter
    )
    sql = cat.route("sql")
    assert sql is not None and sql.endpoints == {"http://a"} and sql.adapter
    assert cat.route("nope") is None
    splits = parse_splits({"chat": {"chat-v1": 9, "chat-v2": 1}, "ghost": {"missing": 1}})
    cards = {c["id"]: c for c in catalog.model_list(cat, splits)}
    assert cards["sql"]["owned_by"] == "chat-v1" and cards["sql"]["parent"] == "chat-v1"
    assert cards["chat"]["targets"] == [{"model": "chat-v1", "weight": 9}, {"model": "chat-v2", "weight": 1}]
    assert catalog.missing_targets(cat, splits) == ["missing"]

    # an InferenceService at zero replicas: its model is still routed (to its pool, which holds) and listed
    declared = catalog.build(answers, {"chat-v1": "chat-v1", "chat-v3": "chat-v3"})
    v3 = declared.route("chat-v3")
    assert v3 is not None and v3.pool == "chat-v3" and v3.endpoints is None and not v3.adapter
    assert declared.route("chat-v1") == v1  # replicas that list it win
    cards = {c["id"]: c for c in catalog.model_list(declared, {})}
    assert cards["chat-v3"]["replicas"] == 0 and cards["chat-v3"]["owned_by"] == "chat-v3"
    assert declared.route("nope") is None


def test_config_round_trip_and_refusals() -> None:
    cfg = GatewayConfig(pools={"p": ("http://127.0.0.1:1",)}, splits=parse_splits({"m": {"p": 1}}))
    assert parse_text(dump(cfg)) == cfg
    for bad in ("pools: [1]", "pools: {p: {upstreams: [ftp://x]}}", "extra: 1", "pools: {p: {}}", "[: bad"):
        with pytest.raises(ValueError):
            parse_text(bad)


def test_adapter_affinity_prefers_holders_within_bound_and_spreads_cold_adapters() -> None:
    strategy = make_strategy("AdapterAffinity")
    idle = [EndpointView(f"http://r{i}", 0) for i in range(2)]
    homes = {f"a{i}": strategy.pick(idle, PickContext(key=f"a{i}")).endpoint for i in range(8)}
    # cold adapters fill free slots on both replicas (4 each), not one replica cycling through all
    assert sorted(list(homes.values()).count(e.id) for e in idle) == [4, 4]
    for name, home in homes.items():  # resident: the same replica again
        pick = strategy.pick(idle, PickContext(key=name))
        assert pick.endpoint == home and pick.reason == "adapter resident"
    # its holder over the load bound: the adapter goes to the other replica (which then holds it too)
    home = homes["a0"]
    loaded = [EndpointView(e.id, 10 if e.id == home else 0) for e in idle]
    spill = strategy.pick(loaded, PickContext(key="a0"))
    assert spill.endpoint != home and spill.reason.startswith("adapter cold")
    assert strategy.pick(idle, PickContext(key="a0")).reason == "adapter resident"
    # the base model (no key): least load
    assert strategy.pick(loaded, PickContext(rng=random.Random(1))).endpoint != home


def test_group_pods_by_inference_service() -> None:
    from shoal_router.multimodel.kube_source import Selection, group_pods

    def pod(name: str, isvc: str | None, ip: str, ready: bool = True) -> dict[str, object]:
        labels = {"shoal.dev/inferenceservice": isvc} if isvc else {}
        cond = [{"type": "Ready", "status": "True" if ready else "False"}]
        return {"metadata": {"name": name, "labels": labels}, "status": {"podIP": ip, "conditions": cond}}

    pools = group_pods([pod("a", "chat-v1", "10.0.0.1"), pod("b", "chat-v1", "10.0.0.2", False),
                        pod("c", "chat-v2", "10.0.0.3"), pod("x", None, "10.0.0.9")])  # fmt: skip
    assert sorted(pools) == ["chat-v1", "chat-v2"]
    assert [(e.url, e.ready) for e in pools["chat-v1"]] == [
        ("http://10.0.0.1:8000", True),
        ("http://10.0.0.2:8000", False),
    ]
    # a selector narrows the pools by the InferenceServices' own labels (pods do not carry them)
    pods = [pod("a", "chat-v1", "10.0.0.1"), pod("c", "chat-v2", "10.0.0.3")]
    sel = Selection(match_labels={"team": "chat"}, pods=pods, services={})
    assert sel.pools() == {}  # no InferenceService listed yet: nothing is selected
    sel.services = {
        "chat-v1": {"team": "chat", "x": "y"},
        "chat-v2": {"team": "other"},
        "z": {"team": "chat"},
    }
    sel.models = {"chat-v1": "m1", "chat-v2": "m2", "z": "mz"}
    pools = sel.pools()
    assert sorted(pools) == ["chat-v1", "z"] and pools["z"] == []  # z: selected, no pod (an empty pool)
    assert sel.declared() == {"m1": "chat-v1", "mz": "z"}
    sel.match_labels = None  # every InferenceService of the namespace
    assert sorted(sel.pools()) == ["chat-v1", "chat-v2", "z"]
    assert sorted(Selection(pods=pods).pools()) == ["chat-v1", "chat-v2"]  # pods only: no services watched
    assert Selection(pods=pods).declared() == {}


def test_selector_and_gateway_settings() -> None:
    from shoal_router.multimodel.kube_source import gateway_settings, parse_match_labels

    assert parse_match_labels("team=chat, tier==gold") == {"team": "chat", "tier": "gold"}
    assert parse_match_labels("") == {}
    for bad in ("team", "team!=chat", "=x"):
        with pytest.raises(ValueError):
            parse_match_labels(bad)
    splits, match = gateway_settings(
        {"spec": {"selector": {"matchLabels": {"team": "chat"}}, "splits": {"chat": {"a": 9, "b": 1}}}}
    )
    assert match == {"team": "chat"} and splits["chat"].targets == ("a", "b")
    assert gateway_settings({"spec": {}}) == ({}, None)
    with pytest.raises(ValueError):
        gateway_settings({"spec": {"splits": {"chat": {"a": 0}}}})


def test_rewrite_model_keeps_the_rest_of_the_body() -> None:
    import json

    from shoal_router.split import rewrite_model

    doc = {"model": "chat", "messages": [{"role": "user", "content": "é"}], "max_tokens": 3}
    assert json.loads(rewrite_model(doc, "chat-v2")) == {**doc, "model": "chat-v2"}


async def test_router_never_forwards_the_lora_admin_routes() -> None:
    import httpx
    from unit.router.fakes import running_router, upstreams

    async with (
        upstreams(1) as (up,),
        running_router(upstream_urls=[up.url]) as r,
        httpx.AsyncClient(base_url=r.url) as c,
    ):
        for path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
            resp = await c.post(path, json={"lora_name": "x", "lora_path": "/x"})
            assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
        assert up.requests == []
        chat = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
        assert (await c.post("/v1/chat/completions", json=chat)).status_code == 200
