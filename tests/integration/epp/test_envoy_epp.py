"""shoal's EPP behind a real Envoy (ext_proc FULL_DUPLEX_STREAMED, TLS to the EPP) with real sim
model-server replicas: plain and streamed answers, the official openai client, failure modes, and a
replica killed under load."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from integration.epp.procs import wait_for

pytestmark = pytest.mark.integration

SIM = ("--sim-decode-tokens-per-s", "400", "--sim-prefill-tokens-per-s", "100000")


def chat(content: str, max_tokens: int = 8, stream: bool = False) -> dict[str, object]:
    return {
        "model": "sim",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


def _two_replicas_behind_envoy(started, **envoy_options):
    """Two sim replicas, an EPP over them, and Envoy routing to the EPP's pick (ORIGINAL_DST)."""
    reps = [started.replica(*SIM) for _ in range(2)]
    epp = started.epp([r.hostport for r in reps])
    pool = [r.hostport for r in reps]
    return reps, epp, started.envoy(pool=pool, mode="original_dst", epp_port=epp.port, **envoy_options)


@pytest.mark.parametrize("request_body", ["FULL_DUPLEX_STREAMED", "BUFFERED"])
def test_plain_and_streamed_answers_through_envoy(started, request_body):
    reps, epp, envoy = _two_replicas_behind_envoy(started, request_body=request_body)
    with httpx.Client(base_url=envoy.url, timeout=30) as client:
        for i in range(6):
            r = client.post("/v1/chat/completions", json=chat(f"hello {i}"))
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"]
        body = chat("x" * 200_000)  # several 62 KB echo chunks, reassembled intact upstream
        assert client.post("/v1/chat/completions", json=body).json()["usage"]["prompt_tokens"] > 10
        with client.stream("POST", "/v1/chat/completions", json=chat("stream me", 12, stream=True)) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and len(events) >= 12
        bad = client.post(
            "/v1/chat/completions", content=b"{oops", headers={"content-type": "application/json"}
        )
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request_body"
        models = client.get("/v1/models")
        assert models.status_code == 200 and models.json()["data"][0]["id"] == "sim"
    assert epp.metric("shoal_epp_picks_total") == 9
    served = [float(line.rsplit(" ", 1)[1]) for line in epp.metrics().splitlines() if "shoal_server" in line]
    assert served == []  # the EPP exports its own series, not the replicas'
    # both replicas took part (LeastLoad with ties broken at random over 9 picks; each was counted)
    counts = [
        httpx.get(r.url + "/metrics").text.count('shoal_server_requests_total{code="200"}') for r in reps
    ]
    assert all(c == 1 for c in counts)
    wait_for(lambda: epp.metric("shoal_router_endpoint_inflight") == 0, 5, "every lease released")


def test_response_headers_only_mode(started):
    # the leaner gateway config (docs/gateway.md): the EPP gets the response headers, not the body
    _reps, epp, envoy = _two_replicas_behind_envoy(started, response_headers_only=True)
    with httpx.Client(base_url=envoy.url, timeout=30) as client:
        for i in range(4):
            r = client.post("/v1/chat/completions", json=chat(f"hello {i}"))
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
        with client.stream("POST", "/v1/chat/completions", json=chat("stream me", 12, stream=True)) as r:
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert r.status_code == 200 and events[-1] == "data: [DONE]" and len(events) >= 12
    assert epp.metric("shoal_epp_picks_total") == 5
    wait_for(lambda: epp.metric("shoal_router_endpoint_inflight") == 0, 5, "every lease released")


def test_openai_client_through_envoy(started):
    rep = started.replica(*SIM)
    epp = started.epp([rep.hostport])
    envoy = started.envoy(pool=[rep.hostport], mode="original_dst", epp_port=epp.port)
    client = openai.OpenAI(base_url=envoy.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    out = client.chat.completions.create(
        model="sim", messages=[{"role": "user", "content": "hi"}], max_tokens=6
    )
    assert out.choices[0].message.content and out.usage is not None and out.usage.completion_tokens == 6
    chunks = list(
        client.chat.completions.create(
            model="sim", messages=[{"role": "user", "content": "hi"}], max_tokens=6, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() and chunks[-1].choices[0].finish_reason == "length"
    with pytest.raises(openai.BadRequestError) as info:  # the EPP's own 400, OpenAI-shaped
        client.post("/chat/completions", cast_to=object, content=b"{oops")
    assert "not valid JSON" in str(info.value)


def test_fail_close_gives_5xx_when_the_epp_is_gone(started):
    rep = started.replica(*SIM)
    epp = started.epp([rep.hostport])
    envoy = started.envoy(pool=[rep.hostport], mode="original_dst", epp_port=epp.port, fail_open=False)
    assert httpx.post(envoy.url + "/v1/chat/completions", json=chat("a"), timeout=30).status_code == 200
    epp.kill()
    r = httpx.post(envoy.url + "/v1/chat/completions", json=chat("b"), timeout=30)
    assert 500 <= r.status_code < 600, r.text


def test_fail_open_falls_back_to_the_pool_when_the_epp_is_gone(started):
    reps = [started.replica(*SIM) for _ in range(2)]
    epp = started.epp([r.hostport for r in reps])
    envoy = started.envoy(pool=[r.hostport for r in reps], mode="pool", epp_port=epp.port, fail_open=True)
    assert httpx.post(envoy.url + "/v1/chat/completions", json=chat("a"), timeout=30).status_code == 200
    epp.kill()
    # FailOpen covers an unreachable EPP: wait for the gateway's health check to mark it down (a request
    # whose body already streamed to the EPP when it died cannot be replayed in FULL_DUPLEX_STREAMED).
    wait_for(lambda: envoy.stat("cluster.epp.membership_healthy") == 0, 10, "Envoy marked the EPP down")
    for i in range(4):
        r = httpx.post(envoy.url + "/v1/chat/completions", json=chat(f"b{i}"), timeout=30)
        assert r.status_code == 200, r.text


def _served(reps) -> list[float]:
    out = []
    for r in reps:
        text = httpx.get(r.url + "/metrics").text
        out.append(
            sum(
                float(x.rsplit(" ", 1)[1])
                for x in text.splitlines()
                if x.startswith("shoal_server_requests_total")
            )
        )
    return out


def test_picks_follow_the_epp_header(started):
    """`pool` mode: the EPP's header decides the host (override_host), not Envoy's own balancing."""
    reps = [started.replica(*SIM) for _ in range(2)]
    epp = started.epp([r.hostport for r in reps], "--strategy", "RoundRobin")
    envoy = started.envoy(pool=[r.hostport for r in reps], mode="pool", epp_port=epp.port)
    for i in range(6):
        r = httpx.post(envoy.url + "/v1/chat/completions", json=chat(f"rr {i}"), timeout=30)
        assert r.status_code == 200
    assert _served(reps) == [3.0, 3.0]  # round-robin as the EPP decided


def test_the_gateways_subset_hint_is_honoured(started):
    reps = [started.replica(*SIM) for _ in range(3)]
    epp = started.epp([r.hostport for r in reps], "--strategy", "RoundRobin")
    subset = [reps[2].hostport]
    envoy = started.envoy(pool=[r.hostport for r in reps], mode="pool", epp_port=epp.port, subset=subset)
    for i in range(6):
        r = httpx.post(envoy.url + "/v1/chat/completions", json=chat(f"subset {i}"), timeout=30)
        assert r.status_code == 200, r.text
    assert _served(reps) == [0.0, 0.0, 6.0]
    empty = started.envoy(pool=[r.hostport for r in reps], mode="pool", epp_port=epp.port, subset=[])
    r = httpx.post(empty.url + "/v1/chat/completions", json=chat("none"), timeout=30)
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_endpoint"


async def test_replica_killed_under_load_loses_no_plain_request(started):
    reps = [started.replica("--sim-decode-tokens-per-s", "40") for _ in range(2)]
    epp = started.epp([r.hostport for r in reps], "--fallbacks", "1")
    envoy = started.envoy(pool=[r.hostport for r in reps], mode="pool", epp_port=epp.port, retries=3)
    async with httpx.AsyncClient(base_url=envoy.url, timeout=60) as client:

        async def one(i: int) -> int:
            await asyncio.sleep(i * 0.01)
            r = await client.post("/v1/chat/completions", json=chat(f"load {i}", max_tokens=16))
            return r.status_code

        tasks = [asyncio.create_task(one(i)) for i in range(60)]
        await asyncio.sleep(0.3)
        reps[1].kill()
        codes = await asyncio.gather(*tasks)
    assert codes.count(200) == 60, codes
    assert epp.metric("shoal_router_ejections_total") >= 1
    wait_for(lambda: epp.metric("shoal_router_endpoint_inflight") == 0, 5, "every lease released")


def test_grpc_health_and_metrics(started):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    rep = started.replica(*SIM)
    epp = started.epp([rep.hostport])
    with grpc.insecure_channel(f"127.0.0.1:{epp.health_port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)

        def serving(name: str) -> bool:
            return stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=2).status == 1

        wait_for(lambda: serving("readiness"), 10, "readiness SERVING")
        assert serving("liveness") and serving("envoy.service.ext_proc.v3.ExternalProcessor")
    text = epp.metrics()
    assert "shoal_router_pending_requests 0.0" in text and "shoal_epp_picks_total" in text
