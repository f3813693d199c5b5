"""What the composition root hands to the handlers and to leader-only loops (the autoscaler)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from shoal_common import names
from shoal_common.timestamps import rfc3339

from shoal_operator.kube import ApiError, Kube, path_for
from shoal_operator.metrics import OperatorMetrics
from shoal_operator.settings import OperatorSettings

log = logging.getLogger("shoal.operator")


@dataclass
class OperatorContext:
    """Shared by every part of one operator process; built once in `runner.py`.

    `settings` (read once), `kube` (the API client), `metrics` (served on the operator's /metrics),
    `stop` (set at shutdown), `background` (leader-only tasks awaited at cleanup) and `emit_event`.
    """

    settings: OperatorSettings
    kube: Kube
    metrics: OperatorMetrics
    identity: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    background: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    async def emit_event(
        self,
        body: dict[str, Any],
        type_: str,
        reason: str,
        message: str,
        *,
        component: str = names.FIELD_MANAGER_OPERATOR,
    ) -> None:
        """Post a core/v1 Event about `body` (an InferenceService); failures are logged, not raised."""
        meta = body.get("metadata", {})
        now = rfc3339()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace")},
            "involvedObject": {
                "apiVersion": body.get("apiVersion", names.API_VERSION),
                "kind": body.get("kind", names.KIND),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": self.identity[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.kube.create(path_for("Event", str(meta.get("namespace"))), event)
        except ApiError as exc:
            log.warning("could not post event %s: %s", reason, exc)
