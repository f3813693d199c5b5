"""The entry point's file: pools (InferenceServices) with their replicas, and weighted splits.

```yaml
pools:
  chat-v1: {upstreams: ["http://10.0.0.5:8000", "http://10.0.0.6:8000"]}
  chat-v2: {upstreams: ["http://10.0.0.7:8000"]}
splits:
  chat: {chat-v1: 90, chat-v2: 10}
```

Re-read whenever the file changes (mounted from a ConfigMap in a cluster, the kubelet refreshes it), so
weights and pools change without a restart. A file that does not parse is refused with a log line and the
previous configuration stays in force.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shoal_router.split import Split, SplitTable, parse_splits

log = logging.getLogger("shoal_router.multimodel")

MAX_POOLS = 256
MAX_UPSTREAMS = 1024


@dataclass(frozen=True)
class GatewayConfig:
    pools: dict[str, tuple[str, ...]] = field(default_factory=dict)
    splits: dict[str, Split] = field(default_factory=dict)


def _upstreams(name: str, doc: Any) -> tuple[str, ...]:
    ups = doc.get("upstreams") if isinstance(doc, Mapping) else None
    if not isinstance(ups, list) or len(ups) > MAX_UPSTREAMS:
        raise ValueError(f"pool {name!r}: `upstreams` must be a list of at most {MAX_UPSTREAMS} URLs")
    for url in ups:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"pool {name!r}: upstream {url!r} is not an http(s) URL")
    return tuple(u.rstrip("/") for u in ups)


def parse(doc: Any) -> GatewayConfig:
    if not isinstance(doc, Mapping):
        raise ValueError("the models config must be a mapping with `pools` (and optionally `splits`)")
    unknown = set(doc) - {"pools", "splits"}
    if unknown:
        raise ValueError(f"unknown keys in the models config: {', '.join(sorted(map(str, unknown)))}")
    pools_doc = doc.get("pools") or {}
    if not isinstance(pools_doc, Mapping) or len(pools_doc) > MAX_POOLS:
        raise ValueError(f"`pools` must be a mapping of at most {MAX_POOLS} pool names")
    pools = {str(name): _upstreams(str(name), spec) for name, spec in pools_doc.items()}
    return GatewayConfig(pools=pools, splits=parse_splits(doc.get("splits")))


def parse_text(text: str) -> GatewayConfig:
    try:
        doc = yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise ValueError(f"the models config is not valid YAML/JSON: {exc}") from None
    return parse(doc)


def dump(config: GatewayConfig) -> str:
    """The file text for `config` (tests and tools write it)."""
    doc = {
        "pools": {name: {"upstreams": list(ups)} for name, ups in config.pools.items()},
        "splits": {
            public: dict(zip(s.targets, s.weights, strict=True)) for public, s in config.splits.items()
        },
    }
    return json.dumps(doc, indent=2)


def reload_splits(table: SplitTable, path: Path, last: tuple[float, int] | None) -> tuple[float, int] | None:
    """Apply the file's `splits:` when the file changed; a bad file keeps the old ones (logged once)."""
    try:
        st = path.stat()
    except OSError as exc:
        log.warning("splits file unreadable", extra={"path": str(path), "error": str(exc)})
        return last
    stamp = (st.st_mtime, st.st_size)
    if stamp == last:
        return last
    try:
        table.replace(parse_text(path.read_text(encoding="utf-8")).splits)
    except (OSError, ValueError) as exc:
        log.error(
            "splits file refused; keeping the previous splits", extra={"path": str(path), "error": str(exc)}
        )
        return stamp
    log.info("splits applied", extra={"path": str(path), "splits": sorted(table.splits)})
    return stamp


async def watch_splits(table: SplitTable, path: str, interval_s: float = 1.0) -> None:
    """Forever: keep `table` equal to the file's splits (the endpoint picker's use: it fronts one pool, so
    a split there rewrites model names among what that pool serves)."""
    last: tuple[float, int] | None = None
    while True:
        last = reload_splits(table, Path(path), last)
        await asyncio.sleep(interval_s)
