"""Simulated continuous-batching replicas for the router benchmarks (several replicas, one process).

Timing follows the model-server's simulated engine: every step each running sequence produces one token;
a step with b sequences takes (1 + overhead*(b-1)) / decode_tps seconds plus prompt_tokens / prefill_tps
for sequences joining in that step; at most max_batch sequences run and the rest wait (FIFO).

To keep the benchmark's own CPU use small on a 2-core machine, a streamed response sends only two SSE
events: the first token when it is produced (TTFT is exact) and the remaining text plus [DONE] at the end.

    python bench/router_upstream.py --replicas 4 --base-port 18200
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Seq:
    prompt_tokens: int
    max_tokens: int
    generated: int = 0
    first: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Replica:
    decode_tps: float = 30.0
    prefill_tps: float = 2000.0
    max_batch: int = 8
    overhead: float = 0.1
    waiting: collections.deque[Seq] = field(default_factory=collections.deque)
    running: list[Seq] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while True:
            if not self.waiting and not self.running:
                self.wake.clear()
                await self.wake.wait()
            joined = 0
            while self.waiting and len(self.running) < self.max_batch:
                seq = self.waiting.popleft()
                self.running.append(seq)
                joined += seq.prompt_tokens
            b = len(self.running)
            await asyncio.sleep((1 + self.overhead * (b - 1)) / self.decode_tps + joined / self.prefill_tps)
            for seq in list(self.running):
                seq.generated += 1
                if seq.generated == 1:
                    seq.first.set()
                if seq.generated >= seq.max_tokens:
                    self.running.remove(seq)
                    seq.done.set()

    def submit(self, prompt_tokens: int, max_tokens: int) -> Seq:
        seq = Seq(prompt_tokens, max(1, max_tokens))
        self.waiting.append(seq)
        self.wake.set()
        return seq

    def abort(self, seq: Seq) -> None:
        if seq in self.waiting:
            self.waiting.remove(seq)
        if seq in self.running:
            self.running.remove(seq)


def _chunk(text: str) -> bytes:
    doc = {"id": "x", "object": "text_completion", "model": "sim", "choices": [{"index": 0, "text": text}]}
    return f"data: {json.dumps(doc)}\n\n".encode()


def make_app(replica: Replica) -> web.Application:
    async def complete(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt = body.get("prompt") or "".join(str(m.get("content", "")) for m in body.get("messages", []))
        seq = replica.submit(max(1, len(str(prompt)) // 4), int(body.get("max_tokens") or 16))
        try:
            if body.get("stream"):
                resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await resp.prepare(request)
                await seq.first.wait()
                await resp.write(_chunk(" tok"))
                await seq.done.wait()
                await resp.write(_chunk(" tok" * (seq.generated - 1)) + b"data: [DONE]\n\n")
                await resp.write_eof()
                return resp
            await seq.done.wait()
            return web.json_response(
                {
                    "id": "x",
                    "object": "text_completion",
                    "created": int(time.time()),
                    "model": "sim",
                    "choices": [{"index": 0, "text": " tok" * seq.generated, "finish_reason": "length"}],
                    "usage": {"completion_tokens": seq.generated},
                }
            )
        finally:
            replica.abort(seq)

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app = web.Application()
    app.router.add_post("/v1/completions", complete)
    app.router.add_post("/v1/chat/completions", complete)
    app.router.add_get("/readyz", ready)
    return app


async def serve(args: argparse.Namespace) -> None:
    runners = []
    tasks = []
    for i in range(args.replicas):
        replica = Replica(args.decode_tps, args.prefill_tps, args.max_batch, args.overhead)
        tasks.append(asyncio.create_task(replica.run()))
        runner = web.AppRunner(make_app(replica), access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.base_port + i).start()
        runners.append(runner)
    print(f"ready {args.replicas} replicas on {args.host}:{args.base_port}..", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--base-port", type=int, default=18200)
    p.add_argument("--decode-tps", type=float, default=30.0)
    p.add_argument("--prefill-tps", type=float, default=2000.0)
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--overhead", type=float, default=0.1)
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
