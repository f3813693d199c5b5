"""gRPC health (proposal 004): `liveness` always SERVING while the process answers; `readiness` and the
ext_proc service name SERVING once discovery has synced."""

from __future__ import annotations

from collections.abc import Callable

from grpc_health.v1 import health, health_pb2

LIVENESS = "liveness"
READINESS = "readiness"
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"


def serving_status(ready: bool) -> int:
    status: int = (
        health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    return status


class HealthState:
    """Owns the health servicer's statuses; `refresh` re-reads readiness (called on a timer)."""

    def __init__(self, ready: Callable[[], bool]) -> None:
        self.servicer = health.aio.HealthServicer()
        self._ready = ready

    async def refresh(self) -> None:
        status = serving_status(self._ready())
        await self.servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self.servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.servicer.set(READINESS, status)
        await self.servicer.set(EXT_PROC_SERVICE, status)
