"""Picks per second per EPP core: gRPC clients open ext_proc streams straight to a `shoal epp` process
(request headers + a chat body, FULL_DUPLEX_STREAMED as Envoy sends them) and read the pick and the body
echo; the EPP's own CPU seconds (from /proc) divide the picks. Goal: >= 1,000 picks/s per core.

    .venv/bin/python bench/epp_picks.py [--streams 4000] [--concurrency 32] [--replicas 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from router_common import cpu_seconds, free_port, process, wait_ready

BODY = json.dumps(
    {
        "model": "sim",
        "messages": [{"role": "system", "content": "be brief " * 40}, {"role": "user", "content": "hi"}],
    }
).encode()
HEADERS = base_pb2.HeaderMap(
    headers=[
        base_pb2.HeaderValue(key=":method", raw_value=b"POST"),
        base_pb2.HeaderValue(key=":path", raw_value=b"/v1/chat/completions"),
        base_pb2.HeaderValue(key="content-type", raw_value=b"application/json"),
    ]
)


async def one_stream(stub: pb_grpc.ExternalProcessorStub) -> str:
    call = stub.Process()
    await call.write(pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=HEADERS)))
    await call.write(pb.ProcessingRequest(request_body=pb.HttpBody(body=BODY, end_of_stream=True)))
    first = await call.read()
    await call.read()  # the body echo
    await call.done_writing()
    while await call.read() is not grpc.aio.EOF:  # the EPP ends the stream when Envoy closes its side
        pass
    muts = first.request_headers.response.header_mutation.set_headers
    return muts[0].header.raw_value.decode()


async def drive(target: str, streams: int, concurrency: int) -> tuple[int, float]:
    done = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.ExternalProcessorStub(channel)
        await one_stream(stub)
        left = streams

        async def worker() -> None:
            nonlocal done, left
            while left > 0:
                left -= 1
                if await one_stream(stub):
                    done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done, time.perf_counter() - t0


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    grpc_port, health, metrics = free_port(), free_port(), free_port()
    cmd = [sys.executable, "-m", "shoal_cli", "epp", "--host", "127.0.0.1", "--plaintext", "--grpc-port",
           str(grpc_port), "--health-port", str(health), "--metrics-port", str(metrics), "--no-access-log",
           "--log-level", "WARNING", "--load-poll-interval", "0", "--strategy", args.strategy]  # fmt: skip
    for i in range(args.replicas):  # never contacted: the picks are the measure
        cmd += ["--upstream", f"127.0.0.1:{20000 + i}"]
    with process(cmd, "epp-picks") as epp:
        await wait_ready(f"http://127.0.0.1:{metrics}/healthz")
        before = cpu_seconds(epp.pid)
        picks, wall = await drive(f"127.0.0.1:{grpc_port}", args.streams, args.concurrency)
        cpu = cpu_seconds(epp.pid) - before
    return {
        "strategy": args.strategy,
        "picks": picks,
        "wall_s": round(wall, 2),
        "picks_per_s_wall": round(picks / wall),
        "epp_cpu_s": round(cpu, 2),
        "picks_per_cpu_s": round(picks / cpu) if cpu else None,
        "epp_cpu_us_per_pick": round(cpu / picks * 1e6) if picks else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=4000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--replicas", type=int, default=8)
    p.add_argument("--strategy", default="LeastLoad")
    args = p.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
