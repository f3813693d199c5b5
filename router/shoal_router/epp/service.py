"""The gRPC servicer: one `ExtProcStream` per `Process` call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from shoal_router.epp.metrics import EppMetrics
from shoal_router.epp.picking import Picker
from shoal_router.epp.stream import ExtProcStream, StreamLimits
from shoal_router.split import SplitTable


class ExternalProcessor(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(
        self, picker: Picker, metrics: EppMetrics, limits: StreamLimits, splits: SplitTable | None = None
    ) -> None:
        self.metrics = metrics
        # what every stream shares; each `Process` call gets a stream of its own
        self._stream_args = (picker, metrics, limits, splits)

    async def Process(
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: Any
    ) -> AsyncIterator[pb.ProcessingResponse]:
        self.metrics.streams.inc()
        async for resp in ExtProcStream(*self._stream_args).run(request_iterator):
            yield resp
