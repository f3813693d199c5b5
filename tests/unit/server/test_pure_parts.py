"""Pure parts of the model-server: output sizing, token-id bounds, redaction, vLLM error mapping."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from shoal_server.completion import check_token_ids, effective_max_tokens
from shoal_server.config import ServerConfig
from shoal_server.engines.base import EngineInputError, Prompt, Sampling
from shoal_server.errors import APIError
from shoal_server.redact import REDACTED, redact_settings

pytestmark = pytest.mark.unit


def test_effective_max_tokens() -> None:
    assert effective_max_tokens(10, 256, 100, 20) == 10  # the request's own
    assert effective_max_tokens(None, 256, 100, 20) == 80  # the default, cut to the room left
    assert effective_max_tokens(None, 16, 100, 20) == 16
    assert effective_max_tokens(80, 16, 100, 20) == 80  # exactly fits
    with pytest.raises(APIError) as exc:
        effective_max_tokens(81, 16, 100, 20)
    assert exc.value.status == 400 and exc.value.code == "context_length_exceeded"
    with pytest.raises(APIError):
        effective_max_tokens(None, 16, 100, 100)  # the prompt alone fills the context


def test_check_token_ids() -> None:
    check_token_ids([0, 5, 9], 10)
    for bad in ([10], [-1], [3, 2**64]):
        with pytest.raises(APIError) as exc:
            check_token_ids(bad, 10)
        assert exc.value.param == "prompt" and "out of range" in exc.value.message


def test_redaction_of_secret_looking_settings() -> None:
    shown = redact_settings(
        {
            "hf_token": "hf_abcdefghijklmnopqrstuvwxyz",
            "api_key": "anything",
            "db-password": "pw",
            "model": "/models/smollm2",
            "download_dir": "s3://user:hunter2@bucket/models",
            "tokenizer": "sk-abcdefghijklmnop1234",
            "max_model_len": 2048,
            "enforce_eager": True,
            "revision": "main",
        }
    )
    assert shown["hf_token"] == REDACTED and shown["api_key"] == REDACTED and shown["db-password"] == REDACTED
    assert shown["tokenizer"] == REDACTED  # a secret by its shape, whatever the name
    assert shown["download_dir"] == f"s3://user:{REDACTED}@bucket/models"
    assert "hunter2" not in str(shown)
    assert shown["model"] == "/models/smollm2" and shown["max_model_len"] == "2048"
    assert shown["enforce_eager"] == "True" and shown["revision"] == "main"


class _RefusingLLM:
    """Stands in for vLLM's AsyncLLM at the one call used: its input checks raise ValueError."""

    def generate(self, engine_input: Any, params: Any, rid: str) -> AsyncIterator[Any]:
        async def gen() -> AsyncIterator[Any]:
            raise ValueError("Token id 99999 is out of vocabulary")
            yield  # pragma: no cover

        return gen()


def test_vllm_input_errors_become_engine_input_errors() -> None:
    from shoal_server.engines.vllm_engine import VllmEngine

    engine = VllmEngine(ServerConfig(engine="vllm", model="m", served_model_name="m"))
    engine._llm = _RefusingLLM()
    engine._sampling_cls = lambda **kw: kw

    async def run() -> None:
        stream = engine.generate("r", Prompt(text="", token_ids=(99999,)), Sampling(max_tokens=3))
        with pytest.raises(EngineInputError, match="out of vocabulary"):
            await anext(stream)

    asyncio.run(run())
