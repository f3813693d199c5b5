"""The parts of one replica that its routes share (wired by the composition root, `shoal_server.server`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shoal_server.admission import Admission
from shoal_server.config import ServerConfig
from shoal_server.engines.base import Engine
from shoal_server.metrics import ServerMetrics


@dataclass
class ServerState:
    config: ServerConfig
    engine: Engine
    admission: Admission
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    loaded: bool = False
    draining: bool = False
    load_error: str | None = None

    @property
    def ready(self) -> bool:
        return self.loaded and not self.draining

    def set_loaded(self) -> None:
        self.loaded = True
        self.admission.ready = True
        self.metrics.ready.set(1 if self.ready else 0)

    def start_drain(self) -> None:
        self.draining = True
        self.admission.draining = True
        self.metrics.ready.set(0)
        self.metrics.draining.set(1)

    def update_gauges(self) -> None:
        self.metrics.queue_depth.set(self.admission.queued)
        self.metrics.inflight.set(self.admission.inflight)
