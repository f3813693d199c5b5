"""The error catalogue: every refusal the model-server answers, in OpenAI's JSON shape, in one place.

Each function names one situation and returns the `APIError` for it, so a status, a type, a code and
the `shoal_server_rejected_total{reason}` label never drift apart between the code paths that raise it.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An error answered in OpenAI's JSON shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}
        self.reason = reason  # label for shoal_server_rejected_total, when refused before the engine

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """The request is well-formed HTTP but its content is not acceptable (400)."""
    return APIError(400, message, param=param, code=code, reason="invalid")


def unsupported(param: str) -> APIError:
    return invalid(
        f"`{param}` is not supported by this server; leave it unset (see docs/model-server.md)",
        param=param,
        code="unsupported_parameter",
    )


def body_too_large(limit: int) -> APIError:
    return APIError(
        413,
        f"request body larger than {limit} bytes",
        param=None,
        code="request_too_large",
        reason="too_large",
    )


def model_not_found(requested: str, served: str) -> APIError:
    return APIError(
        404,
        f"the model `{requested}` does not exist; this server serves `{served}`",
        param="model",
        code="model_not_found",
        reason="invalid",
    )


def context_length_exceeded(limit: int, prompt_tokens: int, requested: int, param: str) -> APIError:
    return invalid(
        f"this model's maximum context length is {limit} tokens; the prompt has {prompt_tokens} "
        f"tokens and {requested} more were requested",
        param=param,
        code="context_length_exceeded",
    )


def draining() -> APIError:
    return APIError(
        503, "server is draining; retry on another replica", "service_unavailable", reason="draining"
    )


def not_loaded() -> APIError:
    return APIError(
        503,
        "model is still loading",
        "service_unavailable",
        headers={"Retry-After": "5"},
        reason="not_ready",
    )


def queue_full(inflight: int, queued: int, retry_after: int) -> APIError:
    return APIError(
        429,
        f"server overloaded: {inflight} requests in flight and {queued} queued; retry later",
        "rate_limit_error",
        code="queue_full",
        headers={"Retry-After": str(retry_after)},
        reason="queue_full",
    )


def queue_timeout() -> APIError:
    return APIError(
        504, "request timed out waiting for a free slot", "timeout_error", code="timeout", reason="timeout"
    )


def deadline_exceeded(timeout_s: float) -> APIError:
    return APIError(
        504,
        f"request exceeded the server's deadline of {timeout_s:g}s",
        type_="timeout_error",
        code="timeout",
        reason="timeout",
    )


def priority_not_enabled(priority: int) -> APIError:
    return invalid(
        f"priority {priority} needs priority scheduling, and this server runs --scheduling-policy fcfs; "
        "omit `priority` or send 0",
        param="priority",
        code="priority_not_enabled",
    )
