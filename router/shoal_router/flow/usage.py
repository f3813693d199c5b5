"""Token usage of one answer, read from the bytes passing through (non-streamed JSON or an SSE stream).

The engine's own `usage` object is authoritative (a JSON answer always has it; a stream has it when the
client asked for `stream_options.include_usage`). A stream without it is counted on the fly: one token per
content event, plus the prompt estimated from the request body's size (4 bytes a token).
"""

from __future__ import annotations

import json
import re

_USAGE = re.compile(rb'"usage"\s*:\s*\{[^{}]*"total_tokens"\s*:\s*(\d+)')
_MAX_TAIL = 4096


class UsageCounter:
    def __init__(self, request_bytes: int = 0) -> None:
        self._reported: int | None = None
        self._events = 0
        self._prompt_estimate = request_bytes // 4
        self._tail = b""

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk
        found = _USAGE.findall(data)
        if found:
            self._reported = int(found[-1])
        # content events of a stream ("data: {...}"), minus the final [DONE]
        self._events += chunk.count(b"data: {")
        self._tail = data[-_MAX_TAIL:]

    def total(self) -> int:
        """Prompt plus completion tokens."""
        if self._reported is not None:
            return self._reported
        return self._prompt_estimate + self._events


def usage_of_json(body: bytes) -> int | None:
    """`usage.total_tokens` of a whole JSON answer, or None."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    usage = doc.get("usage") if isinstance(doc, dict) else None
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    return total if isinstance(total, int) and not isinstance(total, bool) else None
