"""The shared entry point on the real node: the chart's operator turns an InferenceGateway into an
entry-point router pod, and two InferenceServices into sim model-server pods, all from shoal's images
under the kubelet with their service accounts' own RBAC, in a `restricted` namespace. Requests through
the entry point reach the pool of their `model` (read from the model-servers' own metrics)."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
from typing import Any

import httpx
import pytest
from integration.operator.conftest import Kubectl, condition, consistently, eventually
from shoal_common import names
from shoal_operator.autoscaler import wake
from shoal_sandbox.cluster import ClusterStack

pytestmark = [pytest.mark.timeout(420)]

KEY = "sk-entry-test"
AUTH = {"Authorization": f"Bearer {KEY}"}


def _isvc(name: str, labels: dict[str, str], **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": {"name": name, "uri": "hf://org/tiny"},
        "engine": {"kind": "sim", "sim": {"startupSeconds": 0.2, "decodeTokensPerSecond": 2000}},
        "resources": {"gpus": 1, "cpu": "100m", "memory": "512Mi"},
        "routing": {"mode": "Service"},
        "serving": {"drainSeconds": 1},
        **spec,
    }
    meta = {"name": name, "labels": labels}
    return {"apiVersion": names.API_VERSION, "kind": names.KIND, "metadata": meta, "spec": base}


def _gateway() -> dict[str, Any]:
    spec = {
        "selector": {"matchLabels": {"team": "chat"}},
        "splits": {"chat": {"chat-v1": 90, "chat-v2": 10}},
        "apiKeysSecret": "entry-keys",
    }
    meta = {"name": "models"}
    return {"apiVersion": names.API_VERSION, "kind": names.GATEWAY_KIND, "metadata": meta, "spec": spec}


def _ready_pod_ip(kubectl: Kubectl, selector: str) -> str | None:
    for pod in kubectl.list("pods", selector):
        ready = condition(pod, "Ready")
        if ready and ready["status"] == "True" and pod["status"].get("podIP"):
            return str(pod["status"]["podIP"])
    return None


def _served(ip: str, model: str) -> float:
    text = httpx.get(f"http://{ip}:{names.MODEL_SERVER_PORT}/metrics", timeout=5).text
    needle = f'shoal_server_model_requests_total{{model="{model}"}} '
    return sum(float(ln.split(" ")[1]) for ln in text.splitlines() if ln.startswith(needle))


def _answered(ip: str) -> float:
    text = httpx.get(f"http://{ip}:{names.MODEL_SERVER_PORT}/metrics", timeout=5).text
    return sum(
        float(ln.rsplit(" ", 1)[1])
        for ln in text.splitlines()
        if ln.startswith("shoal_server_requests_total{")
    )


def _chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture
def kubectl(stack: ClusterStack, ns: str) -> Kubectl:
    return Kubectl(stack.kubeconfig, ns)


def test_entry_point_routes_by_model(stack: ClusterStack, kubectl: Kubectl) -> None:
    assert kubectl.namespace is not None
    stack.allow_api_keys(kubectl.namespace, ["entry-keys"])  # the chart's rbac.apiKeySecrets
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "entry-keys"},
              "data": {"team-a": base64.b64encode(KEY.encode()).decode()}}  # fmt: skip
    kubectl.apply(secret)
    lora = {"adapters": [{"name": "sql", "uri": "file:///adapters/sql"}], "lora": {"maxLoras": 2}}
    kubectl.apply(_isvc("chat-v1", {"team": "chat"}, **lora))
    kubectl.apply(_isvc("chat-v2", {"team": "chat"}))
    kubectl.apply(_gateway())

    gw = eventually(
        lambda: (
            (g := kubectl.get(names.GATEWAY_PLURAL, "models"))
            and (condition(g, "Ready") or {}).get("status") == "True"
            and g
        ),
        timeout=180,
        what="InferenceGateway Ready",
    )
    assert gw["status"]["url"] == f"http://models.{kubectl.namespace}.svc.cluster.local"
    dep = kubectl.get("deployment", "models-entry")
    assert dep is not None and dep["metadata"]["ownerReferences"][0]["kind"] == names.GATEWAY_KIND
    assert kubectl.get("service", "models") is not None

    entry_ip = eventually(
        lambda: _ready_pod_ip(kubectl, f"{names.LABEL_GATEWAY}=models"), timeout=60, what="entry pod"
    )
    v1 = eventually(lambda: _ready_pod_ip(kubectl, f"{names.LABEL_ISVC}=chat-v1"), timeout=120, what="v1 pod")
    v2 = eventually(lambda: _ready_pod_ip(kubectl, f"{names.LABEL_ISVC}=chat-v2"), timeout=120, what="v2 pod")
    url = f"http://{entry_ip}:{names.ROUTER_PORT}"

    def listed() -> dict[str, dict[str, Any]] | None:
        resp = httpx.get(url + "/v1/models", headers=AUTH, timeout=5)
        cards = {c["id"]: c for c in resp.json()["data"]} if resp.status_code == 200 else {}
        return cards if {"chat-v1", "chat-v2", "sql", "chat"} <= set(cards) else None

    # the pools come from the API server (the InferenceServices selected, their pods), the adapter
    # from the replica itself once the operator has loaded it
    cards = eventually(listed, timeout=90, what="/v1/models listing both services and the adapter")
    assert cards["chat-v1"]["owned_by"] == "chat-v1" and cards["chat-v2"]["inference_service"] == "chat-v2"
    assert cards["sql"]["parent"] == "chat-v1" and cards["chat"]["owned_by"] == "shoal-split"
    assert cards["chat"]["targets"] == [
        {"model": "chat-v1", "weight": 90},
        {"model": "chat-v2", "weight": 10},
    ]

    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as http:
        for model, n in (("chat-v1", 4), ("chat-v2", 3), ("sql", 2)):
            for _ in range(n):
                resp = http.post("/v1/chat/completions", json=_chat(model))
                assert resp.status_code == 200, resp.text
                assert resp.json()["model"] == model
        assert (_served(v1, "chat-v1"), _served(v2, "chat-v2"), _served(v1, "sql")) == (4, 3, 2)
        assert _served(v2, "chat-v1") == 0 and _served(v1, "chat-v2") == 0

        # unknown model: an OpenAI-style 404 from the entry point; no replica sees it
        before = (_answered(v1), _answered(v2))
        missing = http.post("/v1/chat/completions", json=_chat("no-such-model"))
        assert missing.status_code == 404
        err = missing.json()["error"]
        assert err["code"] == "model_not_found" and err["param"] == "model" and err["type"]
        assert (_answered(v1), _answered(v2)) == before

        # the 90/10 split: 10% +- 3% of 2,000 requests reach the canary's pod
        assert asyncio.run(_send(url, "chat", 2000)) == [200] * 2000
        canary, stable = _served(v2, "chat-v2") - 3, _served(v1, "chat-v1") - 4
        assert canary + stable == 2000 and 140 <= canary <= 260, canary

    # the keys come from the Secret named in the InferenceGateway (the router's own key code)
    anonymous = httpx.post(url + "/v1/chat/completions", json=_chat("chat-v1"), timeout=5)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"

    _held_while_at_zero(kubectl, url)

    # an InferenceService that loses the label leaves the entry point, without a restart
    restarts = dep["status"].get("observedGeneration")
    kubectl.run("label", names.KIND.lower() + "/chat-v2", "team-")
    eventually(lambda: (listed() is None) and "chat-v2" not in _models(url), timeout=30, what="chat-v2 gone")
    assert kubectl.get("deployment", "models-entry")["status"].get("observedGeneration") == restarts  # type: ignore[index]

    # drift repair: a deleted child of the gateway comes back
    kubectl.run("delete", "service", "models", "--wait=true")
    eventually(lambda: kubectl.get("service", "models"), timeout=30, what="the Service re-created")
    stack.check_children()  # the chart's operator pod stayed ready throughout


def _held_while_at_zero(kubectl: Kubectl, url: str) -> None:
    """An InferenceService scaled to zero stays listed, and its requests wait for a replica (bounded by
    the entry point's --pending-timeout) instead of a 404 saying that the model does not exist; the
    entry point reports the held request under the service's name, for the autoscaler's wake poll."""
    kubectl.run("scale", "inferenceservice/chat-v2", "--replicas=0")
    selector = f"{names.LABEL_ISVC}=chat-v2"
    eventually(lambda: not kubectl.list("pods", selector), timeout=60, what="chat-v2 at zero")
    eventually(
        lambda: (c := listed_cards(url).get("chat-v2")) is not None and c["replicas"] == 0,
        timeout=20,
        what="chat-v2 listed with no replica",
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(
            httpx.post, url + "/v1/chat/completions", json=_chat("chat-v2"), headers=AUTH, timeout=120
        )
        consistently(lambda: not held.done(), duration=2, what="the request held at zero")
        # what the autoscaler's wake poll reads to wake chat-v2 (its own probe, against the real pod)
        readyz = url + wake.HELD_ENDPOINTS[names.COMPONENT_ENTRY_POINT][1]
        eventually(
            lambda: _held(readyz) == {"chat-v2": 1}, timeout=10, what="chat-v2 held at the entry point"
        )
        key = (kubectl.namespace, "chat-v2")
        assert _probe({key: [wake.HeldSource(readyz, pool="chat-v2")]}) == {key: 1.0}
        kubectl.run("scale", "inferenceservice/chat-v2", "--replicas=1")
        answer = held.result(timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "chat-v2"


def _held(readyz: str) -> object:
    body = httpx.get(readyz, timeout=5).json()
    assert body.get("held") == {"chat-v2": 1}, body  # the whole answer when it is not there yet
    return body["held"]


def _probe(targets: dict[tuple[str, str], list[wake.HeldSource]]) -> dict[tuple[str, str], float]:
    async def ask() -> dict[tuple[str, str], float]:
        async with wake.probe_session() as session:
            return await wake.FrontEndProbe(session).held(targets)

    return asyncio.run(ask())


def listed_cards(url: str) -> dict[str, dict[str, Any]]:
    resp = httpx.get(url + "/v1/models", headers=AUTH, timeout=5)
    return {c["id"]: c for c in resp.json()["data"]} if resp.status_code == 200 else {}


async def _send(url: str, model: str, n: int, concurrency: int = 32) -> list[int]:
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60, limits=limits) as client:

        async def one() -> int:
            async with sem:
                return (await client.post("/v1/chat/completions", json=_chat(model))).status_code

        return list(await asyncio.gather(*(one() for _ in range(n))))


def _models(url: str) -> set[str]:
    resp = httpx.get(url + "/v1/models", headers=AUTH, timeout=5)
    return {c["id"] for c in resp.json()["data"]} if resp.status_code == 200 else {"?"}


def test_api_server_rejects_bad_gateways(kubectl: Kubectl) -> None:
    """The CRD's schema and CEL rules, enforced by the real API server (`kubectl apply` fails readably)."""
    for spec, needle in (
        ({"splits": {"chat": {"a": 0, "b": 0}}}, "at least one weight > 0"),
        ({"splits": {"chat": {"a": -1}}}, "should be greater than or equal to 0"),
        ({"strategy": "Nope"}, "Unsupported value"),
        ({"replicas": 0}, "should be greater than or equal to 1"),
    ):
        doc = _gateway()
        doc["metadata"]["name"] = "bad"
        doc["spec"] = spec
        res = kubectl.apply(doc, check=False)
        assert res.returncode != 0 and needle in res.stderr, (spec, res.stderr)
    long = _gateway()
    long["metadata"]["name"] = "x" * 57
    res = kubectl.apply(long, check=False)
    assert res.returncode != 0 and "at most 56 characters" in res.stderr
