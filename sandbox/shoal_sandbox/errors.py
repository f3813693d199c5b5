"""The sandbox's error: what did not come up or could not be done, with the reason (a log tail)."""

from __future__ import annotations


class SandboxError(RuntimeError):
    """A component did not come up; the message names it and carries its log tail."""
