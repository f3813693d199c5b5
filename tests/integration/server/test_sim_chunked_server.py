"""Chunked prefill on real `shoal model-server --engine sim` processes (`--sim-max-batched-tokens`):
a better-priority request sent while long prompts are being prefilled gets its first token within a
budgeted step or two, where without a budget it waits out the whole step of long prefills."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import pytest

from .conftest import REPO, ServerProc, eventually, metric
from .test_sim_priority import body, stream

pytestmark = pytest.mark.integration

MODEL = "sim"
LONG = "fish " * 1500  # 1500 sim tokens: 0.75 s of prefill at 2000 tokens/s


def server_args(budget: int) -> list[str]:
    return ["--engine", "sim", "--model", MODEL, "--scheduling-policy", "priority", "--max-concurrency", "8",
            "--sim-max-batch", "2", "--sim-decode-tokens-per-s", "100", "--sim-prefill-tokens-per-s", "2000",
            "--sim-max-batched-tokens", str(budget)]  # fmt: skip


def urgent_ttft(server: ServerProc) -> float:
    """TTFT of a short priority -1 request sent while two long priority-5 prompts fill the batch."""

    async def scenario() -> float:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            flood = [
                asyncio.create_task(stream(client, body(8, priority=5, content=LONG + str(i))))
                for i in range(2)
            ]
            await asyncio.to_thread(
                eventually,
                lambda: metric(server.metrics(), "vllm:num_requests_running") == 2,
                10,
                "both long prompts to be in the batch",
            )
            t0 = time.monotonic()
            urgent = await stream(client, body(2, priority=-1, content="urgent"))
            for out in await asyncio.gather(*flood):
                assert len(out) == 8  # preempted or not, every long request got all its tokens
            return urgent[0][0] - t0

    ttft = asyncio.run(scenario())
    text = server.metrics()
    assert metric(text, "vllm:num_preemptions_total") >= 1  # the urgent one took a long one's slot
    assert metric(text, "vllm:time_to_first_token_seconds_count") == 3
    assert metric(text, "vllm:num_requests_running") == 0
    assert metric(text, "vllm:num_requests_waiting") == 0
    return ttft


def test_token_budget_bounds_a_better_requests_ttft_behind_long_prefills(
    server_factory: Callable[..., ServerProc],
) -> None:
    chunked = urgent_ttft(server_factory(server_args(64)))
    unchunked = urgent_ttft(server_factory(server_args(0)))
    # without a budget it waits for the step prefilling both long prompts (1.5 s); with a budget of 64
    # a step lasts about 0.04 s
    assert unchunked > 0.5
    assert chunked < unchunked / 3


def test_a_budget_below_the_batch_is_refused() -> None:
    cmd = [sys.executable, "-m", "shoal_cli", "model-server", "--engine", "sim", "--model", MODEL,
           "--sim-max-batch", "8", "--sim-max-batched-tokens", "4"]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "--sim-max-batched-tokens must be 0 (off) or at least --sim-max-batch" in done.stderr
