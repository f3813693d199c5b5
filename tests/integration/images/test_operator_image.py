"""The operator image, run as a restricted pod would run it: prints its version, then reconciles an
InferenceService on the sandbox's real API server (so it connected, listed and wrote)."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from shoal_common.ports import free_port
from shoal_operator.builders.common import SHOAL_UID
from shoal_sandbox import Sandbox
from support.eventually import eventually
from support.kubectl import Kubectl, KubectlError

from .conftest import REPO, Containers, built_image

# The image fixtures build what changed first: minutes on 2 cores (model-server-cpu: about 17).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def operator_image() -> str:
    return built_image("operator")


@pytest.fixture(scope="module")
def own_kubectl() -> Iterator[Kubectl]:
    """A control plane of its own: in a whole-suite run the closed-loop stack's operator (cluster-wide,
    one per session) would reconcile this test's InferenceService too and race the image's operator."""
    sandbox = Sandbox(name="images-operator", log=print)
    sandbox.up(timeout=300)
    try:
        yield Kubectl(sandbox.kubeconfig_path)
    finally:
        sandbox.down()


def test_operator_image_prints_its_version(containers: Containers, operator_image: str) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert containers.run(operator_image, ["--version"]).strip() == f"shoal {version}"
    assert containers.image_user(operator_image) == f"{SHOAL_UID}:{SHOAL_UID}"
    # The root filesystem really is read-only for it, and /tmp is the writable emptyDir.
    out = containers.run(
        operator_image, ["-c", "id -u; touch /opt/shoal/x 2>&1; touch /tmp/x && echo tmp-ok"], entrypoint="sh"
    )
    assert out.splitlines()[0] == str(SHOAL_UID)
    assert "Read-only file system" in out and "tmp-ok" in out


def _readable_kubeconfig(kubectl: Kubectl, folder: Path) -> Path:
    """The admin kubeconfig with its certificates inlined, readable by the container's uid."""
    flat = kubectl.run("config", "view", "--raw", "--flatten", "--minify")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    path = folder / "config"
    path.write_text(flat)
    path.chmod(0o644)  # a throwaway copy of a test cluster's credentials, in a per-test folder
    return path


def test_operator_image_reconciles_on_the_sandbox(
    containers: Containers, operator_image: str, own_kubectl: Kubectl, tmp_path: Path
) -> None:
    kubectl, namespace = own_kubectl, "image-operator"
    kubectl.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl.run("wait", "--for=condition=Established", "--timeout=60s", "crd/inferenceservices.shoal.dev")
    kubeconfig = _readable_kubeconfig(kubectl, tmp_path / "kube")
    health = free_port()
    args = ["operator", "--kubeconfig", "/kube/config", "--namespace", namespace, "--standalone"]
    args += ["--health-port", str(health), "--metrics-port", "0", "--no-autoscaler", "--text-logs"]
    name = containers.start(
        operator_image,
        args,
        volumes=[(kubeconfig.parent, "/kube")],
        env={"SHOAL_MODEL_SERVER_IMAGE": "localhost/shoal-model-server-cpu:test"},
    )
    kube = kubectl.ns(namespace)
    kube.apply(
        {
            "apiVersion": "shoal.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": "img"},
            "spec": {
                "model": {"name": "img", "uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
                "engine": {"kind": "sim"},
                "routing": {"mode": "Service"},
            },
        }
    )

    def deployment() -> dict[str, object] | None:
        assert containers.running(name), containers.logs(name)[-3000:]
        try:
            return kube.json("get", "deployment", "img-model")  # type: ignore[no-any-return]
        except KubectlError:
            return None

    dep = eventually(deployment, timeout=90, interval=1, desc="the operator's model-server Deployment")
    pod = dep["spec"]["template"]["spec"]  # type: ignore[index]
    assert pod["containers"][0]["image"] == "localhost/shoal-model-server-cpu:test"
    assert pod["securityContext"]["runAsUser"] == SHOAL_UID
