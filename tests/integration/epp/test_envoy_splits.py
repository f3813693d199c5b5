"""A weighted split through real Envoy and the endpoint picker (`--splits`): the EPP rewrites `model` to the
drawn target (a LoRA adapter of the pool), Envoy forwards the rewritten body, the replica serves the target.
With a BUFFERED body the rewritten body replaces Envoy's buffered copy."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration


def served(url: str, model: str) -> float:
    needle = f'shoal_server_model_requests_total{{model="{model}"}} '
    for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(needle):
            return float(line.split(" ")[1])
    return 0.0


@pytest.mark.parametrize("request_body", ["FULL_DUPLEX_STREAMED", "BUFFERED"])
def test_split_between_adapters_through_envoy(started, tmp_path: Path, request_body: str) -> None:  # type: ignore[no-untyped-def]
    splits = tmp_path / "splits.yaml"
    splits.write_text("splits:\n  sql: {sql-v1: 3, sql-v2: 1}\n")
    rep = started.replica(
        "--lora", "sql-v1=/a/v1", "--lora", "sql-v2=/a/v2", "--sim-decode-tokens-per-s", "2000"
    )
    epp = started.epp([rep.hostport], "--splits", str(splits))
    envoy = started.envoy(
        pool=[rep.hostport], mode="original_dst", epp_port=epp.port, request_body=request_body
    )
    body = {"model": "sql", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with httpx.Client(base_url=envoy.url, timeout=30) as client:
        answers = [client.post("/v1/chat/completions", json=body) for _ in range(40)]
    assert all(a.status_code == 200 for a in answers), answers[0].text
    assert {a.json()["model"] for a in answers} == {"sql-v1", "sql-v2"}
    v1, v2 = served(rep.url, "sql-v1"), served(rep.url, "sql-v2")
    assert v1 + v2 == 40 and v1 > v2 > 0 and served(rep.url, "sql") == 0
