"""The model-server as a real process with the simulated engine: overload, drain, disconnects, binding."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from shoal_common.ports import free_port

from .conftest import ServerProc, eventually, metric

pytestmark = pytest.mark.integration

MODEL = "sim"


def sim_args(*extra: str) -> list[str]:
    return ["--engine", "sim", "--model", MODEL, *extra]


def chat(max_tokens: int, stream: bool = False) -> dict[str, object]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "tell me about fish"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


def load(server: ServerProc) -> tuple[float, float]:
    text = server.metrics()
    return metric(text, "shoal_server_inflight"), metric(text, "shoal_server_queue_depth")


def test_overload_returns_429_with_retry_after(server_factory: Callable[..., ServerProc]) -> None:
    server = server_factory(
        sim_args("--max-concurrency", "2", "--max-queue", "2", "--sim-decode-tokens-per-s", "20")
    )

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            busy = [asyncio.create_task(client.post("/v1/chat/completions", json=chat(40))) for _ in range(4)]
            await asyncio.to_thread(
                eventually, lambda: load(server) == (2.0, 2.0), 10, "2 in flight + 2 queued"
            )
            for _ in range(3):  # while the queue stays full, every newcomer is refused at once
                t0 = time.monotonic()
                r = await client.post("/v1/chat/completions", json=chat(4))
                assert r.status_code == 429, r.text
                assert time.monotonic() - t0 < 1.0  # never hangs
                assert int(r.headers["retry-after"]) >= 1
                assert r.json()["error"]["code"] == "queue_full"
            assert load(server) == (2.0, 2.0)
            done = await asyncio.wait_for(asyncio.gather(*busy), 30)
            assert [d.status_code for d in done] == [200] * 4
            assert (await client.post("/v1/chat/completions", json=chat(2))).status_code == 200

    asyncio.run(scenario())
    assert metric(server.metrics(), 'shoal_server_rejected_total{reason="queue_full"}') == 3


def test_sigterm_drains_20_inflight_requests_and_exits_0(server_factory: Callable[..., ServerProc]) -> None:
    server = server_factory(
        sim_args(
            "--max-concurrency",
            "16",
            "--max-queue",
            "16",
            "--sim-decode-tokens-per-s",
            "40",
            "--drain-timeout",
            "60",
        )
    )

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            tasks = [
                asyncio.create_task(client.post("/v1/chat/completions", json=chat(40, stream=i % 2 == 0)))
                for i in range(20)
            ]
            await asyncio.to_thread(
                eventually, lambda: sum(load(server)) == 20, 10, "20 requests in flight or queued"
            )
            server.terminate()
            await asyncio.to_thread(
                eventually, lambda: server.get("/readyz").status_code == 503, 5, "readiness to drop"
            )
            r = await client.post("/v1/chat/completions", json=chat(2))
            assert r.status_code == 503 and "draining" in r.json()["error"]["message"]
            results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
            assert [x.status_code for x in results] == [200] * 20
            for i, x in enumerate(results):
                if i % 2 == 0:
                    assert x.text.rstrip().endswith("data: [DONE]")
                else:
                    assert x.json()["usage"]["completion_tokens"] == 40

    asyncio.run(scenario())
    assert server.proc.wait(30) == 0, server.log()
    assert '"drain complete' in server.log()


def test_disconnecting_client_frees_its_slot(server_factory: Callable[..., ServerProc]) -> None:
    server = server_factory(
        sim_args("--max-concurrency", "1", "--max-queue", "0", "--sim-decode-tokens-per-s", "20")
    )
    # Streaming: read the first chunk, then hang up.
    with (
        httpx.Client(base_url=server.url, timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=chat(2000, stream=True)) as r,
    ):
        assert r.status_code == 200
        lines = r.iter_lines()  # keep a reference: a discarded iterator closes the stream
        next(lines)
        assert load(server)[0] == 1
        assert client.post("/v1/chat/completions", json=chat(2)).status_code == 429  # the slot is taken
    eventually(lambda: load(server)[0] == 0, 5, "slot freed after a streaming client left")
    eventually(
        lambda: metric(server.metrics(), "vllm:num_requests_running") == 0, 5, "engine request aborted"
    )
    assert httpx.post(server.url + "/v1/chat/completions", json=chat(2), timeout=10).status_code == 200

    # Non-streaming: the client gives up (timeout) while the engine is still generating.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/chat/completions", json=chat(2000), timeout=0.5)
    eventually(lambda: load(server)[0] == 0, 5, "slot freed after a non-streaming client left")
    eventually(
        lambda: metric(server.metrics(), "vllm:num_requests_running") == 0, 5, "engine request aborted"
    )
    assert httpx.post(server.url + "/v1/chat/completions", json=chat(2), timeout=10).status_code == 200
    assert metric(server.metrics(), 'shoal_server_requests_total{code="499"}') == 2


def test_binds_exactly_to_host(server_factory: Callable[..., ServerProc]) -> None:
    server = server_factory(sim_args(), host="127.0.0.2")
    assert server.get("/healthz").status_code == 200
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=2):
        pass


def test_alive_but_not_ready_while_loading(tmp_path: Path) -> None:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "shoal_cli",
        "model-server",
        "--port",
        str(port),
        *sim_args("--sim-startup-s", "3"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = ServerProc(proc, "127.0.0.1", port, tmp_path / "unused.log")
    try:

        def alive() -> bool:
            try:
                return server.get("/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        eventually(alive, 20, "liveness")
        assert server.get("/readyz").status_code == 503
        r = httpx.post(server.url + "/v1/chat/completions", json=chat(2), timeout=5)
        assert r.status_code == 503 and "retry-after" in r.headers
        eventually(server.ready, 20, "readiness after the simulated load")
    finally:
        server.stop()
    assert proc.returncode == 0


def test_bad_flags_fail_fast() -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "shoal_cli",
            "model-server",
            "--engine",
            "sim",
            "--model",
            "m",
            "--engine-arg",
            "nokey",
        ],
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 2 and b"KEY=VALUE" in r.stderr
