"""Requests/s the batch client sustains against a trivial local endpoint, client pinned to one core.

    .venv/bin/python bench/batch_throughput.py [--requests 20000] [--concurrency 256] [--repeat 3]

Three processes: a raw asyncio HTTP responder (fixed completion, keep-alive) pinned to one core, and, in
turn on another core, (a) a bare aiohttp loop (baseline: the same requests with nothing else to do) and
(b) `shoal_batch.run_batch` (input parsing, request IDs, retries armed, balancing, JSONL output written
line by line, report). Each client runs in its own process under `taskset -c CORE`. Two rates: completed
requests over the client's wall time, and over the CPU time the client process used (user + system). On a
shared machine the second is the robust one: it is the rate one core sustains when the client has it to
itself, and it does not move when other processes steal the core. Prints a Markdown row per repetition
and the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMPLETION = json.dumps(
    {
        "id": "cmpl-1",
        "object": "text_completion",
        "model": "bench",
        "choices": [{"index": 0, "text": " hello there", "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
).encode()
MODELS = json.dumps({"object": "list", "data": [{"id": "bench", "object": "model"}]}).encode()


def _response(body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


class Responder(asyncio.Protocol):
    """Answers every request with a canned body; handles keep-alive and pipelining."""

    completion = _response(COMPLETION)
    models = _response(MODELS)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out = []
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self.buffer[:end]
            length = 0
            idx = head.lower().find(b"content-length:")
            if idx >= 0:
                stop = head.find(b"\r\n", idx)
                length = int(head[idx + 15 : stop if stop >= 0 else len(head)])
            total = end + 4 + length
            if len(self.buffer) < total:
                break
            out.append(self.models if head.startswith(b"GET /v1/models") else self.completion)
            self.buffer = self.buffer[total:]
        if out:
            self.transport.write(b"".join(out))


def serve(port_file: str) -> None:
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(Responder, "127.0.0.1", 0, backlog=4096))
    Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
    loop.run_forever()


async def baseline(url: str, n: int, concurrency: int) -> dict[str, float]:
    """A bare aiohttp loop: `concurrency` workers posting the same body and decoding the JSON answer."""
    import aiohttp

    body = json.dumps({"model": "bench", "prompt": "hi", "max_tokens": 8}).encode()
    headers = {"Content-Type": "application/json"}
    remaining = n
    done = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining, done
        while remaining > 0:
            remaining -= 1
            async with session.post(url + "/v1/completions", data=body, headers=headers) as resp:
                json.loads(await resp.read())
            done += 1

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        started, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    return {"completed": done, "wall_s": wall, "cpu_s": cpu, "rps": done / wall, "rps_cpu": done / cpu}


def client(url: str, n: int, concurrency: int, workdir: str, use_uvloop: bool) -> dict[str, float]:
    from shoal_batch import BatchConfig, run_batch

    inp = Path(workdir) / "in.jsonl"
    out = Path(workdir) / f"out-{os.getpid()}.jsonl"
    inp.write_text(
        "".join(json.dumps({"id": i, "prompt": f"prompt {i}", "max_tokens": 8}) + "\n" for i in range(n))
    )
    config = BatchConfig(endpoints=[url], input=inp, out=out, concurrency=concurrency, model="bench")
    started, cpu0 = time.perf_counter(), time.process_time()
    report = run_batch(config, use_uvloop=use_uvloop)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    lines = out.read_bytes().count(b"\n")
    assert report.ok == n == lines, (report.ok, n, lines)
    return {
        "completed": report.ok,
        "wall_s": wall,
        "cpu_s": cpu,
        "rps": report.ok / wall,
        "rps_cpu": report.ok / cpu,
    }


def _child(
    kind: str, loop: str, core: int, url: str, n: int, concurrency: int, workdir: str
) -> dict[str, float]:
    cmd = [
        "taskset",
        "-c",
        str(core),
        sys.executable,
        __file__,
        "--child",
        kind,
        "--loop",
        loop,
        "--url",
        url,
        "--requests",
        str(n),
        "--concurrency",
        str(concurrency),
        "--workdir",
        workdir,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
    data: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


LOOPS = ("asyncio", "uvloop")


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--client-core", type=int, default=0)
    parser.add_argument("--server-core", type=int, default=1)
    parser.add_argument("--child", choices=("server", "baseline", "client"))
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    parser.add_argument("--url")
    parser.add_argument("--workdir")
    parser.add_argument("--port-file")
    args = parser.parse_args()

    if args.child == "server":
        serve(args.port_file)
        return 0
    if args.child == "baseline":
        coro = baseline(args.url, args.requests, args.concurrency)
        if args.loop == "uvloop":
            import uvloop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                print(json.dumps(runner.run(coro)))
        else:
            print(json.dumps(asyncio.run(coro)))
        return 0
    if args.child == "client":
        print(
            json.dumps(client(args.url, args.requests, args.concurrency, args.workdir, args.loop == "uvloop"))
        )
        return 0

    if shutil.which("taskset") is None:
        print("taskset is required", file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="shoal-batch-bench-")
    port_file = os.path.join(workdir, "port")
    server = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(args.server_core),
            sys.executable,
            __file__,
            "--child",
            "server",
            "--port-file",
            port_file,
        ]
    )
    try:
        deadline = time.monotonic() + 20
        while not (os.path.exists(port_file) and Path(port_file).read_text()):
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("responder did not start")
            time.sleep(0.05)
        url = f"http://127.0.0.1:{Path(port_file).read_text()}"
        loops = [lp for lp in LOOPS if lp == "asyncio" or _has_uvloop()]
        rps: dict[tuple[str, str, str], list[float]] = {
            (k, lp, m): [] for k in ("baseline", "client") for lp in loops for m in ("rps", "rps_cpu")
        }
        print(
            f"{args.requests} requests, {args.concurrency} in flight, client on core {args.client_core}, "
            f"responder on core {args.server_core}"
        )
        print(
            "| rep | loop | bare aiohttp req/s (wall / per CPU-s) | shoal batch req/s (wall / per CPU-s) | ratio (CPU) |"
        )
        print("|---|---|---|---|---|")
        for rep in range(1, args.repeat + 1):
            for lp in loops:
                b = _child("baseline", lp, args.client_core, url, args.requests, args.concurrency, workdir)
                c = _child("client", lp, args.client_core, url, args.requests, args.concurrency, workdir)
                for m in ("rps", "rps_cpu"):
                    rps["baseline", lp, m].append(b[m])
                    rps["client", lp, m].append(c[m])
                print(
                    f"| {rep} | {lp} | {b['rps']:,.0f} / {b['rps_cpu']:,.0f} | {c['rps']:,.0f} / {c['rps_cpu']:,.0f} "
                    f"| {c['rps_cpu'] / b['rps_cpu']:.2f} |",
                    flush=True,
                )
        for lp in loops:
            med = {key: statistics.median(v) for key, v in rps.items() if key[1] == lp}
            b_w, b_c = med["baseline", lp, "rps"], med["baseline", lp, "rps_cpu"]
            c_w, c_c = med["client", lp, "rps"], med["client", lp, "rps_cpu"]
            print(f"| median | {lp} | {b_w:,.0f} / {b_c:,.0f} | {c_w:,.0f} / {c_c:,.0f} | {c_c / b_c:.2f} |")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
