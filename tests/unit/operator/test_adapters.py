"""spec.adapters / spec.lora: the CRD schema, the rendered model-server command, and the live-sync plan."""

from __future__ import annotations

import pydantic
import pytest
from shoal_operator import adapters as sync
from shoal_operator.builders import BuildOptions
from shoal_operator.builders.model_server import adapter_path, command, deployment

from .helpers import isvc

pytestmark = pytest.mark.unit

PVC_MODEL = {"model": {"name": "base", "uri": "pvc://models/smollm2"}}


def test_lora_args_only_when_enabled() -> None:
    assert "--enable-lora" not in command(isvc())
    cmd = command(isvc({"lora": {"maxLoras": 2, "maxLoraRank": 8}}))
    i = cmd.index("--enable-lora")
    assert cmd[i : i + 5] == ["--enable-lora", "--max-loras", "2", "--max-lora-rank", "8"]
    defaults = command(isvc({"adapters": [{"name": "sql", "uri": "hf://org/sql-lora"}]}))
    assert defaults[defaults.index("--max-loras") + 1] == "4"


def test_adapter_list_never_changes_the_pod_template() -> None:
    """Adding an adapter (same claim as the model or hf://) must not roll the pods."""
    opts = BuildOptions()
    base = isvc({**PVC_MODEL, "lora": {}})
    more = isvc(
        {
            **PVC_MODEL,
            "lora": {},
            "adapters": [{"name": "a", "uri": "pvc://models/loras/a"}, {"name": "b", "uri": "hf://o/b"}],
        }
    )
    assert deployment(base, opts)["spec"]["template"] == deployment(more, opts)["spec"]["template"]


def test_adapter_paths_and_extra_claims() -> None:
    svc = isvc(
        {
            **PVC_MODEL,
            "adapters": [
                {"name": "same", "uri": "pvc://models/loras/same"},
                {"name": "other", "uri": "pvc://adapters-claim/x"},
                {"name": "file", "uri": "file:///data/f"},
                {"name": "hub", "uri": "hf://org/repo"},
                {"name": "s3", "uri": "s3://bucket/p"},
            ],
        }
    )
    paths = {a.name: adapter_path(svc, a) for a in svc.spec.adapters}
    assert paths == {
        "same": "/mnt/models/loras/same",
        "other": "/mnt/adapters/adapters-claim/x",
        "file": "/data/f",
        "hub": "org/repo",
        "s3": "s3://bucket/p",
    }
    pod = deployment(svc, BuildOptions())["spec"]["template"]["spec"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["models", "adapters-claim"]


def test_adapter_spec_validation() -> None:
    with pytest.raises(pydantic.ValidationError):
        isvc({"adapters": [{"name": "bad name", "uri": "hf://o/r"}]})
    with pytest.raises(pydantic.ValidationError):
        isvc({"lora": {"maxLoras": 0}})


def test_plan_loads_missing_unloads_removed_and_moved() -> None:
    todo = sync.plan({"a": "/a", "b": "/b2", "c": "/c"}, {"b": "/b1", "c": "/c", "gone": "/g"})
    assert todo.unload == ["b", "gone"]
    assert todo.load == [("a", "/a"), ("b", "/b2")]
    assert sync.plan({}, {}) == sync.Plan([], [])


def test_models_doc_and_status() -> None:
    doc = {
        "data": [{"id": "base", "parent": None, "root": "/m"}, {"id": "sql", "parent": "base", "root": "/s"}]
    }
    assert sync.loaded_adapters(doc) == {"sql": "/s"}
    status = sync.adapter_status(["sql", "new"], [{"sql"}, {"sql", "new"}])
    assert status[0] == {"name": "sql", "readyReplicas": 2, "ready": True, "message": ""}
    assert status[1]["readyReplicas"] == 1 and not status[1]["ready"]
    assert not sync.adapter_status(["x"], [])[0]["ready"]  # no ready replica: not ready


def test_ready_pod_urls() -> None:
    def pod(ip: str, ready: str, deleting: bool = False) -> dict[str, object]:
        meta = {"deletionTimestamp": "x"} if deleting else {}
        return {"metadata": meta, "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": ready}]}}

    urls = sync.ready_pod_urls(
        [pod("10.0.0.1", "True"), pod("10.0.0.2", "False"), pod("10.0.0.3", "True", True)]
    )
    assert urls == ["http://10.0.0.1:8000"]
