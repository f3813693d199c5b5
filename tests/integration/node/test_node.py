"""The real node runs pods as a cluster would: GPUs, pod IPs, EndpointSlices, kube-proxy, CoreDNS, SIGTERM."""

from __future__ import annotations

import ipaddress
import subprocess
import time

import httpx
import pytest
from integration.node.pods import pod, running_ip
from shoal_sandbox import Sandbox
from shoal_sandbox.node.config import NODE_IP, NODE_NAME, PAUSE_IMAGE, POD_CIDR
from support.eventually import eventually
from support.kubectl import Kubectl, KubectlError

GPU = "nvidia.com/gpu"


def test_node_is_ready_with_fake_gpus(kubectl: Kubectl) -> None:
    node = kubectl.json("get", "node", NODE_NAME)
    conditions = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    assert node["status"]["allocatable"][GPU] == "8"
    assert {"type": "InternalIP", "address": NODE_IP} in node["status"]["addresses"]
    assert node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"


def test_pod_requesting_a_gpu_runs(kube: Kubectl, test_image: str) -> None:
    gpu = {"requests": {"cpu": "10m", GPU: "1"}, "limits": {GPU: "1"}}
    kube.apply(pod("gpu", test_image, resources=gpu))
    ip = running_ip(kube, "gpu")
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(POD_CIDR)
    assert kube.json("get", "pod", "gpu")["spec"]["nodeName"] == NODE_NAME
    # The host reaches the pod on its own IP.
    assert httpx.get(f"http://{ip}:8080/", timeout=5).text.strip() == f"hello from {ip}"
    # `kubectl exec` reaches the container: a second server in it cannot bind the port the first holds.
    with pytest.raises(KubectlError) as failed:
        kube.run("exec", "gpu", "--", "/server")
    assert "address already in use" in failed.value.stderr


def test_service_answers_through_kube_proxy_and_coredns(kube: Kubectl, test_image: str) -> None:
    kube.apply(pod("web", test_image), pod("client", test_image))
    web_ip = running_ip(kube, "web")
    client_ip = running_ip(kube, "client")
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        }
    )

    def endpoint_ready() -> bool:
        slices = kube.json("get", "endpointslices", "-l", "kubernetes.io/service-name=web")["items"]
        endpoints = [e for s in slices for e in s.get("endpoints") or []]
        return any(web_ip in e["addresses"] and e["conditions"].get("ready") for e in endpoints)

    eventually(endpoint_ready, timeout=30, interval=0.5, desc="web's EndpointSlice lists its pod ready")
    cluster_ip = kube.json("get", "service", "web")["spec"]["clusterIP"]

    def from_host() -> str:
        return httpx.get(f"http://{cluster_ip}/", timeout=3).text

    text = eventually(from_host, timeout=30, interval=0.5, retry_on=(httpx.HTTPError,), desc="ClusterIP")
    assert text.strip() == f"hello from {web_ip}"

    # From another pod: the Service name resolves through CoreDNS, and the ClusterIP answers.
    namespace = kube.namespace
    resolved = httpx.get(
        f"http://{client_ip}:8080/resolve", params={"name": f"web.{namespace}.svc.cluster.local"}, timeout=10
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.text.split() == [cluster_ip]
    fetched = httpx.get(f"http://{client_ip}:8080/fetch", params={"url": "http://web/"}, timeout=10)
    assert fetched.status_code == 200, fetched.text
    assert fetched.text.strip() == f"hello from {web_ip}"
    # Names outside the cluster zone are not forwarded anywhere.
    outside = httpx.get(f"http://{client_ip}:8080/resolve", params={"name": "example.com"}, timeout=10)
    assert outside.status_code == 502


def test_deleted_pod_gets_sigterm_and_its_grace_period(kube: Kubectl, test_image: str) -> None:
    drain = 4
    drainer = pod("drain", test_image, env=[{"name": "DRAIN_SECONDS", "value": str(drain)}])
    drainer["spec"]["terminationGracePeriodSeconds"] = 30
    kube.apply(drainer)
    ip = running_ip(kube, "drain")
    assert httpx.get(f"http://{ip}:8080/state", timeout=5).text.strip() == "serving"

    t0 = time.monotonic()
    kube.run("delete", "pod", "drain", "--wait=false")

    def draining() -> bool:
        return httpx.get(f"http://{ip}:8080/state", timeout=2).text.strip() == "draining"

    # SIGTERM arrived and the process keeps serving during its grace period.
    eventually(draining, timeout=15, interval=0.2, retry_on=(httpx.HTTPError,), desc="pod drains on SIGTERM")
    # `kubectl logs` goes API server -> kubelet on the node's InternalIP; the server logged the signal.
    assert "SIGTERM: draining" in kube.run("logs", "drain")

    def gone() -> bool:
        return kube.run("get", "pod", "drain", "--ignore-not-found", "-o", "name").strip() == ""

    eventually(gone, timeout=60, interval=0.3, desc="pod deleted")
    took = time.monotonic() - t0
    # It exited on its own after draining: not killed at once, and well before the 30 s grace period.
    assert drain - 0.5 <= took < 25, took


def test_up_imports_again_what_containerd_lost(real_sandbox: Sandbox) -> None:
    """The import record alone does not decide: an image removed from containerd's store (its folder
    deleted to free disk, say) is imported again by the next `up`, or pod sandboxes could not start."""
    from shoal_sandbox.node import images

    socket = real_sandbox.real_node().paths.containerd_socket
    subprocess.run(
        ["ctr", "--address", str(socket), "--namespace", "k8s.io", "images", "rm", PAUSE_IMAGE],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert PAUSE_IMAGE not in images.list_images(socket)
    real_sandbox.up(timeout=300)
    assert PAUSE_IMAGE in images.list_images(socket)
