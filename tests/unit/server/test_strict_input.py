"""Hostile and sloppy input: every case a clear 4xx in OpenAI's error shape, never a 500."""

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from shoal_server.engines.sim import SIM_VOCAB_SIZE

from .conftest import MODEL, running_app

pytestmark = pytest.mark.unit

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 3}
COMPLETION = {"model": MODEL, "prompt": "Say hello", "max_tokens": 3}
DEEP = 100_000


async def post(path: str, body: bytes, **cfg: Any) -> tuple[int, dict[str, Any]]:
    async with running_app(**cfg) as (client, _):
        r = await client.post(path, content=body, headers={"content-type": "application/json"})
        return r.status_code, r.json()


def assert_openai_error(doc: dict[str, Any]) -> dict[str, Any]:
    err = doc["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "body",
    [
        b"[" * DEEP + b"]" * DEEP,
        b'{"a":' * DEEP + b"1" + b"}" * DEEP,
        # Nested just under json's own limit: the validator walks it (a list where a string belongs).
        json.dumps({**CHAT, "messages": [{"role": "user", "content": [[[[[[[["x"]]]]]]]]}]}).encode(),
        json.dumps({**CHAT, "max_tokens": 0})
        .replace('"max_tokens": 0', '"max_tokens": ' + "9" * 5000)
        .encode(),
    ],
    ids=["deep-array", "deep-object", "nested-content", "int-over-4300-digits"],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_hostile_json_is_400(path: str, body: bytes) -> None:
    status, doc = await post(path, body)
    assert status == 400, doc
    assert_openai_error(doc)


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": "3"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": 3.0}, "max_tokens"),
        ({"stream": "yes"}, "stream"),
        ({"stream": 1}, "stream"),
        ({"temperature": "0.5"}, "temperature"),
        ({"n": True}, "n"),
        ({"seed": "7"}, "seed"),
        ({"seed": 2**70}, "seed"),
        ({"stream_options": {"include_usage": "true"}, "stream": True}, "stream_options"),
        ({"stop": 5}, "stop"),
        ({"model": 7}, "model"),
    ],
)
async def test_strict_types_name_the_param(change: dict[str, Any], param: str) -> None:
    status, doc = await post("/v1/chat/completions", json.dumps({**CHAT, **change}).encode())
    assert status == 400, doc
    err = assert_openai_error(doc)
    assert err["param"] == param and param in err["message"]


async def test_floats_accept_integers_as_json_does() -> None:
    status, doc = await post(
        "/v1/chat/completions", json.dumps({**CHAT, "temperature": 1, "top_p": 1}).encode()
    )
    assert status == 200, doc


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logit_bias": {"50": 10}}, "logit_bias"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"functions": [{"name": "f"}]}, "functions"),
    ],
)
async def test_unsupported_parameters_are_refused_clearly(change: dict[str, Any], param: str) -> None:
    status, doc = await post("/v1/chat/completions", json.dumps({**CHAT, **change}).encode())
    assert status == 400, doc
    err = assert_openai_error(doc)
    assert err["param"] == param and err["code"] == "unsupported_parameter"
    assert "not supported" in err["message"]


async def test_default_values_of_unsupported_parameters_and_unknown_keys_pass() -> None:
    harmless = {
        "tools": [],
        "tool_choice": "none",
        "response_format": {"type": "text"},
        "logit_bias": {},
        "metadata": {"team": "a"},
        "store": False,
        "user": "u1",
        "some_future_field": {"x": 1},
    }
    status, doc = await post("/v1/chat/completions", json.dumps({**CHAT, **harmless}).encode())
    assert status == 200, doc


@pytest.mark.parametrize(
    ("prompt", "needle"),
    [([-1], "token id -1"), ([5, SIM_VOCAB_SIZE], "token id 50000"), ([10**30], "out of range")],
)
async def test_token_id_prompts_are_bounded(prompt: list[int], needle: str) -> None:
    status, doc = await post("/v1/completions", json.dumps({**COMPLETION, "prompt": prompt}).encode())
    assert status == 400, doc
    err = assert_openai_error(doc)
    assert needle in err["message"] and err["param"] == "prompt" and err["code"] == "invalid_token_id"


async def test_token_ids_in_vocabulary_are_served() -> None:
    body = {**COMPLETION, "prompt": [0, 17, SIM_VOCAB_SIZE - 1]}
    status, doc = await post("/v1/completions", json.dumps(body).encode())
    assert status == 200, doc
    assert doc["usage"]["prompt_tokens"] == 3


async def test_body_over_the_limit_is_413() -> None:
    big = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    async with running_app(max_body_bytes=4096) as (client, state):
        r = await client.post("/v1/chat/completions", content=big)
        assert r.status_code == 413
        err = assert_openai_error(r.json())
        assert err["code"] == "request_too_large" and "4096" in err["message"]

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
            for i in range(0, len(big), 1000):
                yield big[i : i + 1000]

        r = await client.post("/v1/chat/completions", content=chunked())
        assert r.status_code == 413
        metrics = (await client.get("/metrics")).text
        assert 'shoal_server_rejected_total{reason="too_large"} 2.0' in metrics
        assert state.admission.inflight == 0
        ok = await client.post("/v1/chat/completions", json=CHAT)
        assert ok.status_code == 200


async def test_long_request_id_is_cut_to_128() -> None:
    async with running_app() as (client, _):
        r = await client.post("/v1/chat/completions", json=CHAT, headers={"X-Request-ID": "r" * 5000})
        assert r.headers["x-request-id"] == "r" * 128


async def test_openapi_document_describes_the_openai_routes() -> None:
    async with running_app() as (client, _):
        doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    assert {"/v1/completions", "/v1/chat/completions", "/v1/models"} <= set(doc["paths"])
    chat = doc["components"]["schemas"]["ChatCompletionRequest"]
    assert {"model", "messages"} <= set(chat["required"])
    max_tokens = chat["properties"]["max_tokens"]["anyOf"]
    assert {"type": "integer", "minimum": 1} in max_tokens
    assert chat["properties"]["stream"]["type"] == "boolean"
