"""The floor of a Python ext_proc endpoint picker: a servicer that does nothing but what the protocol needs
(route every request to the one upstream, echo the bodies, pass the response through), on the same grpcio
aio server, uvloop and TLS as `shoal epp`. `bench/epp_overhead.py --floor` runs it beside the real EPP on
the same replica, so the EPP's cost splits into what any Python gRPC servicer pays and what shoal adds.

    .venv/bin/python bench/epp_floor.py --grpc-port 9002 --upstream 127.0.0.1:8000 [--plaintext]
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from typing import Any

import grpc
import uvloop
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from shoal_router.epp import responses as r
from shoal_router.epp.tls import server_credentials


class FloorProcessor(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream

    async def Process(
        self, requests: AsyncIterator[pb.ProcessingRequest], context: Any
    ) -> AsyncIterator[pb.ProcessingResponse]:
        body = bytearray()
        async for req in requests:
            kind = req.WhichOneof("request")
            if kind == "request_headers" and req.request_headers.end_of_stream:
                yield r.route_to([self.upstream])
            elif kind == "request_body":
                body += req.request_body.body
                if req.request_body.end_of_stream:
                    yield r.route_to([self.upstream])
                    yield r.request_body_chunk(bytes(body), True)
            elif kind == "response_headers":
                yield r.continue_response_headers(None)
            elif kind == "response_body":
                yield r.response_body_chunk(req.response_body.body, req.response_body.end_of_stream)


async def serve(args: argparse.Namespace) -> None:
    server = grpc.aio.server()
    pb_grpc.add_ExternalProcessorServicer_to_server(FloorProcessor(args.upstream), server)
    address = f"127.0.0.1:{args.grpc_port}"
    if args.plaintext:
        server.add_insecure_port(address)
    else:
        server.add_secure_port(address, server_credentials(None, None))
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grpc-port", type=int, required=True)
    p.add_argument("--upstream", required=True, help="host:port every request goes to")
    p.add_argument("--plaintext", action="store_true")
    uvloop.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
