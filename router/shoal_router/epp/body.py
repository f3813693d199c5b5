"""The request body as the EPP sees it: buffered from streamed chunks, parsed once for the fields that
drive picking, and echoed back to the gateway in chunks (pure functions, no I/O)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from shoal_router.prompt import prefix_of

# Envoy caps one ext_proc body mutation; GAIE's EPP echoes at most 62 KB per message to stay under it.
ECHO_CHUNK_BYTES = 62 * 1024


class BodyError(ValueError):
    """The body cannot be an OpenAI request: answered 400 with an OpenAI-style error."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    """What picking needs from one request body."""

    model: str = ""
    stream: bool = False
    key: str | None = None  # prompt prefix (affinity key), None when there is no prompt or none is needed


def parse_body(body: bytes, prefix_chars: int, with_key: bool = True) -> InferenceRequest:
    """Parse an OpenAI request body once. An empty body (GET /v1/models) is a request without a prompt.
    `with_key`: extract the prompt prefix (only prompt-hashing strategies use it)."""
    if not body:
        return InferenceRequest()
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BodyError(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BodyError("The request body must be a JSON object.")
    model = doc.get("model", "")
    if not isinstance(model, str):
        raise BodyError("'model' must be a string.", "model")
    stream = doc.get("stream", False)
    if not isinstance(stream, bool):
        raise BodyError("'stream' must be a boolean.", "stream")
    return InferenceRequest(
        model=model, stream=stream, key=prefix_of(doc, prefix_chars) if with_key else None
    )


def echo_chunks(body: bytes, size: int = ECHO_CHUNK_BYTES) -> list[bytes]:
    """Split `body` for echoing back; an empty body still yields one (empty) chunk to end the stream."""
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    if not body:
        return [b""]
    return [body[i : i + size] for i in range(0, len(body), size)]
