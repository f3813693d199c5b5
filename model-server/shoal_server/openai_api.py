"""OpenAI request validation: strict types as in OpenAI's API, clear refusals of what we do not serve.

Types are strict (pydantic strict mode): `"max_tokens": "3"`, `"max_tokens": true` and `"stream": "yes"`
are refused with a 400 naming the parameter, as OpenAI does; floats accept integers (JSON has one number
type). Parameters that would change the output but that this server cannot honour (`tools`,
`response_format` other than text, `logit_bias`, ...) are refused when set to anything but their
default (`UNSUPPORTED`); unknown keys and the purely informational ones (`user`, `metadata`, `store`)
are ignored. docs/model-server.md lists both.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator

from shoal_server.errors import APIError, invalid, unsupported

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_STRICT = ConfigDict(extra="ignore", strict=True)


def _unset(value: Any) -> bool:
    return value is None


def _empty(value: Any) -> bool:
    return value is None or value == [] or value == {}


# Parameter -> "is this value the default (harmless) one?". Anything else is refused with a 400.
UNSUPPORTED: dict[str, Callable[[Any], bool]] = {
    "tools": _empty,
    "tool_choice": lambda v: v is None or v == "none",
    "functions": _empty,
    "function_call": lambda v: v is None or v == "none",
    "response_format": lambda v: v is None or v == {"type": "text"},
    "logit_bias": _empty,
    "top_logprobs": lambda v: v is None or v == 0,
    "best_of": lambda v: v is None or v == 1,
    "suffix": lambda v: v is None or v == "",
    "audio": _unset,
    "prediction": _unset,
    "modalities": lambda v: v is None or v == ["text"],
}


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


class _Common(BaseModel):
    model_config = _STRICT

    model: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    n: Annotated[int, Field(ge=1, le=1)] = 1
    stop: str | list[str] | None = None
    seed: Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    ignore_eos: bool = False  # vLLM extension, useful for benchmarks
    # vLLM extension: lower is served first; anything but 0 needs --scheduling-policy priority
    priority: Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)] = 0

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop must be up to 4 non-empty strings")
        return v

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


# The range is checked against the engine's vocabulary (`completion.check_token_ids`), with a message that
# names the bad id; pydantic's own error for a union member would only say "should be a valid string".
TokenId = Annotated[int, WithJsonSchema({"type": "integer", "minimum": 0})]


class CompletionRequest(_Common):
    prompt: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=1)]
        | Annotated[list[TokenId], Field(min_length=1)]
    )
    echo: Literal[False] = False
    logprobs: None = None


class TextPart(BaseModel):
    model_config = _STRICT
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = _STRICT
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatCompletionRequest(_Common):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: Literal[False] | None = None

    def requested_max_tokens(self) -> int | None:
        # OpenAI's newer name wins when both are given, as in OpenAI's API.
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def messages_as_dicts(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for m in self.messages:
            # "developer" is OpenAI's newer name for "system"; chat templates know only "system".
            role = "system" if m.role == "developer" else m.role
            out.append({"role": role, "content": m.text()})
        return out


M = TypeVar("M", bound=BaseModel)


def decode_json(raw: bytes) -> dict[str, Any]:
    """Bytes -> a JSON object, or APIError(400) for anything else (bad UTF-8, bad JSON, too deep)."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise invalid("request body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, integers over 4300 digits
        raise invalid(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid("request body must be a JSON object")
    return data


def check_supported(data: dict[str, Any]) -> None:
    for param, is_default in UNSUPPORTED.items():
        if param in data and not is_default(data[param]):
            raise unsupported(param)


def parse_request(raw: bytes, model: type[M]) -> M:
    """Bytes -> validated request, or an APIError(400) with a message naming the bad field."""
    data = decode_json(raw)
    check_supported(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int) or len(err["loc"]) > 1)
        # Union members add their type names to loc; keep only the request's own field path.
        param = str(err["loc"][0]) if err["loc"] else None
        raise APIError(400, f"{loc or 'body'}: {err['msg']}", param=param, reason="invalid") from None
    except RecursionError:  # nesting just under json's limit can still exhaust the validator's
        raise invalid("request body is nested too deeply") from None
