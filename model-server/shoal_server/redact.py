"""Redaction of secret-looking settings before they are logged (engine args land in pod logs)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "<redacted>"

# Setting names that hold secrets: hf_token, api_key, api-key, password, secret, credentials, auth ...
_SECRET_NAME = re.compile(r"token|secret|passw|pwd|api[_-]?key|access[_-]?key|credential|auth|private", re.I)
# Values that are secrets whatever their name: known token prefixes, and long opaque strings.
_SECRET_VALUE = re.compile(
    r"^(hf_|sk-|ghp_|gho_|github_pat_|xox[abp]-|glpat-|AKIA)[A-Za-z0-9_\-]{8,}$|^eyJ[\w-]+\.[\w-]+\.[\w-]+$"
)
# user:password@ in URLs (s3://, https:// model locations).
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/:@\s]+:)[^@\s/]+@", re.I)


def redact_value(name: str, value: Any) -> str:
    text = str(value)
    if value is None or value is False or text == "":
        return text
    if _SECRET_NAME.search(name) or _SECRET_VALUE.match(text):
        return REDACTED
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{REDACTED}@", text)


def redact_settings(settings: Mapping[str, Any]) -> dict[str, str]:
    """Settings as strings for a log line, with secret-looking ones replaced by <redacted>."""
    return {k: redact_value(k, v) for k, v in settings.items()}
