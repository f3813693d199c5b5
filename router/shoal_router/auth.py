"""API keys: parsing, lookup by digest, and a log-safe id. Keys are never logged; `key_id` is a short
SHA-256 prefix that identifies a key in logs and rate limits without revealing it.

A key line may carry flow-control options after the key, separated by spaces (keys never contain spaces,
so older files and Secrets read the same): `sk-abc priority=high weight=2 tokens-per-minute=60000`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from shoal_router.flow.classify import TenantPolicy, parse_policy


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str  # sha256 prefix of the key: safe to log
    name: str  # the entry's name (Secret data key / file label), or the id
    policy: TenantPolicy = field(default_factory=TenantPolicy)


@dataclass(frozen=True, slots=True)
class KeyEntry:
    name: str
    policy: TenantPolicy = field(default_factory=TenantPolicy)


@dataclass(slots=True)
class ApiKeys:
    """The valid keys, stored by digest. `enabled` is False when no source is configured (open router)."""

    enabled: bool = False
    _by_digest: dict[bytes, KeyInfo] = field(default_factory=dict)

    def replace(self, keys: Mapping[str, str | KeyEntry]) -> None:
        """keys: key -> name, or key -> KeyEntry (name and flow-control policy)."""
        by_digest: dict[bytes, KeyInfo] = {}
        for k, v in keys.items():
            entry = v if isinstance(v, KeyEntry) else KeyEntry(v)
            by_digest[hashlib.sha256(k.encode()).digest()] = KeyInfo(
                key_id(k), entry.name or key_id(k), entry.policy
            )
        self._by_digest = by_digest

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, key: str) -> KeyInfo | None:
        return self._by_digest.get(hashlib.sha256(key.encode()).digest())


class KeyHolder(Protocol):
    """What a key source fills: the per-InferenceService router and the multi-model entry point alike."""

    keys: ApiKeys
    keys_loaded: bool


def bearer_token(authorization: str | None, api_key_header: str | None = None) -> str | None:
    """The key from `Authorization: Bearer K` (what OpenAI clients send) or `api-key: K`."""
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if api_key_header and api_key_header.strip():
        return api_key_header.strip()
    return None


def parse_key_line(line: str) -> tuple[str, TenantPolicy]:
    """`KEY [priority=P] [weight=W] [tokens-per-minute=N]` -> (key, policy). ValueError on a bad option."""
    key, *opts = line.split()
    return key, parse_policy(opts)


def parse_key_entries(text: str, default_name: str = "", named: bool = True) -> dict[str, KeyEntry]:
    """Lines of keys (blank lines and `#` comments ignored); `name:key ...` when `named`. A line with a
    bad option is skipped (and the rest still load), so one typo cannot lock every tenant out."""
    out: dict[str, KeyEntry] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name = default_name
        if named:
            label, sep, rest = line.partition(":")
            if sep and rest.strip() and " " not in label.strip():
                name, line = label.strip(), rest.strip()
        try:
            key, policy = parse_key_line(line)
        except ValueError:
            continue
        out[key] = KeyEntry(name, policy)
    return out


def parse_keys_file(text: str) -> dict[str, str]:
    """One key per line, optionally `name:key`; blank lines and `#` comments ignored. Returns key -> name."""
    return {k: e.name for k, e in parse_keys_file_entries(text).items()}


def parse_keys_file_entries(text: str) -> dict[str, KeyEntry]:
    return parse_key_entries(text)


def parse_secret_data(data: Mapping[str, str] | None) -> dict[str, str]:
    """A Kubernetes Secret's `data` (base64 values): every entry is one named key; a value may also hold
    several keys, one per line. Returns key -> entry name."""
    return {k: e.name for k, e in parse_secret_entries(data).items()}


def parse_secret_entries(data: Mapping[str, str] | None) -> dict[str, KeyEntry]:
    keys: dict[str, KeyEntry] = {}
    for name, b64 in (data or {}).items():
        try:
            value = base64.b64decode(b64).decode()
        except (ValueError, UnicodeDecodeError):
            continue
        keys.update(parse_key_entries(value, default_name=name, named=False))
    return keys
