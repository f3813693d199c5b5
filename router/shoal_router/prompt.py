"""What the router reads from a request body: the affinity key for PrefixHash (the first characters of its
prompt) and the requested `model`."""

from __future__ import annotations

import json
from typing import Any


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # chat content parts: [{"type": "text", "text": ...}, ...]
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def prompt_prefix(body: bytes, limit: int) -> str | None:
    """First `limit` characters of the prompt (completions) or of the concatenated messages (chat), or None
    when the body has no prompt we understand (the strategy then hashes the empty key). Never raises: a
    hostile body (nested too deeply, integers over 4,300 digits) is forwarded, and the model-server
    answers it with a 400."""
    if not body:
        return None
    try:
        return _prefix_of(json.loads(body), limit)
    except (ValueError, RecursionError):  # ValueError covers JSONDecodeError and UnicodeDecodeError
        return None


def prefix_of(doc: Any, limit: int) -> str | None:
    """`prompt_prefix` of an already parsed body (a front end that parses the body once)."""
    return _prefix_of(doc, limit)


def _prefix_of(doc: Any, limit: int) -> str | None:
    if not isinstance(doc, dict):
        return None
    messages = doc.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        size = 0
        for m in messages:
            if not isinstance(m, dict):
                continue
            text = f"{m.get('role', '')}:{_text_of(m.get('content'))}\n"
            parts.append(text)
            size += len(text)
            if size >= limit:
                break
        return "".join(parts)[:limit]
    prompt = doc.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of prompts: the first one decides
    if isinstance(prompt, str):
        return prompt[:limit]
    if isinstance(prompt, list):  # token ids
        return ",".join(str(t) for t in prompt[:limit] if isinstance(t, int))
    return None


def request_model(body: bytes) -> str | None:
    """The body's `model` when it is a non-empty string; never raises (the replica judges bad bodies)."""
    if not body:
        return None
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return None
    model = doc.get("model") if isinstance(doc, dict) else None
    return model if isinstance(model, str) and model else None
