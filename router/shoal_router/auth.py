"""API keys: parsing, lookup by digest, and a log-safe id. Keys are never logged; `key_id` is a short
SHA-256 prefix that identifies a key in logs and rate limits without revealing it."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str  # sha256 prefix of the key: safe to log
    name: str  # the entry's name (Secret data key / file label), or the id


@dataclass(slots=True)
class ApiKeys:
    """The valid keys, stored by digest. `enabled` is False when no source is configured (open router)."""

    enabled: bool = False
    _by_digest: dict[bytes, KeyInfo] = field(default_factory=dict)

    def replace(self, keys: Mapping[str, str]) -> None:
        """keys: key -> name."""
        self._by_digest = {
            hashlib.sha256(k.encode()).digest(): KeyInfo(key_id(k), name or key_id(k))
            for k, name in keys.items()
        }

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, key: str) -> KeyInfo | None:
        return self._by_digest.get(hashlib.sha256(key.encode()).digest())


def bearer_token(authorization: str | None, api_key_header: str | None = None) -> str | None:
    """The key from `Authorization: Bearer K` (what OpenAI clients send) or `api-key: K`."""
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if api_key_header and api_key_header.strip():
        return api_key_header.strip()
    return None


def parse_keys_file(text: str) -> dict[str, str]:
    """One key per line, optionally `name:key`; blank lines and `#` comments ignored. Returns key -> name."""
    keys: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, key = line.partition(":")
        if sep and key.strip():
            keys[key.strip()] = name.strip()
        else:
            keys[line] = ""
    return keys


def parse_secret_data(data: Mapping[str, str] | None) -> dict[str, str]:
    """A Kubernetes Secret's `data` (base64 values): every entry is one named key; a value may also hold
    several keys, one per line. Returns key -> entry name."""
    keys: dict[str, str] = {}
    for name, b64 in (data or {}).items():
        try:
            value = base64.b64decode(b64).decode()
        except (ValueError, UnicodeDecodeError):
            continue
        for line in value.splitlines():
            if line.strip():
                keys[line.strip()] = name
    return keys
