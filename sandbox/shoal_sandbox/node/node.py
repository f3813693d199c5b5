"""RealNode: starts and stops the node's processes and owns its host changes (one node per host)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal_sandbox import procs
from shoal_sandbox.images.spec import stale_images
from shoal_sandbox.kube import ApiError
from shoal_sandbox.node import hostnet, hoststate, images, oci, pki, prereq, restore
from shoal_sandbox.node.components import NODE_COMPONENTS, NodeFiles, health_url
from shoal_sandbox.node.config import (
    GPU_LABELS,
    NODE_IP,
    NODE_NAME,
    PAUSE_IMAGE,
    RUN_DIR,
    NodePaths,
    coredns_rbac,
)

Log = Callable[[str], None]
GPU_RESOURCE = "nvidia.com/gpu"


class NodeError(RuntimeError):
    """The node could not start or stop; the message says why and what to do."""


@dataclass
class RealNode:
    state_dir: Path  # the sandbox's state folder
    service_cidr: str
    service_ip: str
    gpus: int = 8
    log: Log = print

    @property
    def paths(self) -> NodePaths:
        return NodePaths(self.state_dir / "node")

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    def files(self, api_port: int) -> NodeFiles:
        return NodeFiles(self.paths, self.pki_dir, f"https://{NODE_IP}:{api_port}", self.service_cidr)

    def _proc_file(self, component: str) -> Path:
        return self.state_dir / "procs" / f"node-{component}.json"

    def _log_file(self, component: str) -> Path:
        return self.state_dir / "logs" / f"{component}.log"

    # ---- ownership: the bridge and 198.18.0.1 are host-wide --------------------------------------------
    def owner(self) -> str | None:
        try:
            return self.paths.owner_file.read_text().strip() or None
        except OSError:
            return None

    def owns_host(self) -> bool:
        return self.owner() == str(self.state_dir)

    # ---- up ----------------------------------------------------------------------------------------------
    def prepare_host(self) -> bool:
        """Checks prerequisites, records the host, then adds the bridge (the API server binds to it).

        Returns True when this call recorded the host (a fresh node), so a failed `up` can undo it."""
        owner = self.owner()
        if owner is not None and owner != str(self.state_dir):
            raise NodeError(
                f"the real node already belongs to the sandbox in {owner}; "
                f"run `shoal sandbox down --name {Path(owner).name}` first (one real node per host)"
            )
        addresses = hostnet.run(["ip", "-o", "-4", "addr", "show"]).stdout.splitlines()
        found = prereq.check_host([" ".join(line.split()[1:4:2]) for line in addresses])
        if found:
            raise NodeError("the real node cannot start:\n  - " + "\n  - ".join(found))
        fresh = not self.paths.host_record.is_file()
        if fresh:
            RUN_DIR.mkdir(parents=True, exist_ok=True)
            record = hoststate.snapshot().dump()  # before the first change
            self.paths.host_record.write_text(record)
            self.paths.owner_file.write_text(str(self.state_dir))
            self.log("recorded the host's state (sysctls, iptables, mounts, netns, cgroups) for `down`")
        hostnet.ensure_bridge(self.service_cidr)
        hostnet.ensure_forward_guard()
        pki.ensure_node_clients(self.pki_dir)
        if pki.ensure_apiserver_ip(self.pki_dir, ["127.0.0.1", self.service_ip, NODE_IP]):
            self.log(f"  reissued the API server's certificate for {NODE_IP}")
        return fresh

    def up(self, api_port: int, api: Callable[[], Any], deadline: float) -> None:
        """Starts containerd, imports images, starts the kubelet, kube-proxy and CoreDNS; waits for Ready."""
        files = self.files(api_port)
        files.write()
        self._ensure_started("containerd", files, deadline)
        self._wait_socket(deadline)
        t0 = time.monotonic()
        self.import_images([oci.pause_archive(PAUSE_IMAGE)])
        self._prune_stale_images()  # first: the disk then never holds an old and a new model-server
        self._import_indexed()
        deadline += time.monotonic() - t0  # the wait budget is for starting, not for copying images
        with api() as client:
            for obj in coredns_rbac(pki.NODE_CLIENTS["node-coredns"][0]):
                _apply(client, obj)
        for component in NODE_COMPONENTS[1:]:
            self._ensure_started(component, files, deadline)
        self._wait_node_ready(api, deadline)
        hostnet.ensure_forward_guard()  # kube-proxy put its FORWARD jump first; ours goes back on top
        self.log(f"  node {NODE_NAME} Ready ({self.gpus} x {GPU_RESOURCE}); pods get 198.18.x.y")

    def import_images(self, archives: Iterable[Path]) -> list[Path]:
        archives = list(archives)
        try:
            present = set(images.list_images(self.paths.containerd_socket))
            # The import record is not the store: an image it lists may be gone since.
            images.forget_imports(self.imports_record, images.lost_archives(archives, present))
            done = images.import_images(archives, self.paths.containerd_socket, self.imports_record)
        except images.ImageImportError as exc:
            raise NodeError(str(exc)) from exc
        for archive in done:
            self.log(f"  imported {archive.name} into the node's containerd")
        return done

    @property
    def imports_record(self) -> Path:
        return self.paths.root / "imported"

    def _import_indexed(self) -> None:
        """shoal's images from the image builds' index. They may be mid-rebuild (an archive listed but
        replaced): the node starts without such an image and says so; pods using it fail to start."""
        try:
            archives = images.indexed_archives()
        except images.ImageImportError as exc:
            self.log(f"  warning: {exc}")
            return
        for archive in archives:
            try:
                self.import_images([archive])
            except NodeError as exc:
                self.log(f"  warning: not imported: {exc}")

    def _prune_stale_images(self) -> None:
        """Older builds of shoal's images go, and with them the image-ID names CRI made for them (named
        `sha256:<config digest>`; left behind, they pin the old layers: gigabytes per model-server build)."""
        socket = self.paths.containerd_socket
        try:
            stale = stale_images(images.list_images(socket), images.indexed_refs())
            if stale:
                images.remove_images(socket, stale)
                self.log(f"  removed {len(stale)} older build(s) of shoal's images from containerd")
            orphans = images.orphan_ids(images.manifests(socket), lambda m: images.config_digest(socket, m))
        except (images.ImageImportError, ValueError, OSError) as exc:
            self.log(f"  warning: could not prune older images: {exc}")
            return
        if orphans:
            images.remove_images(socket, orphans)
            self.log(f"  removed {len(orphans)} image ID(s) no named image uses")

    def _ensure_started(self, component: str, files: NodeFiles, deadline: float) -> None:
        argv = files.argv(component)
        rec = procs.load(self._proc_file(component))
        if rec is not None and procs.is_alive(rec):
            if rec.argv == argv:
                self._wait_healthy(component, deadline)
                return
            self.log(f"restarting {component}: its command line changed")
            procs.stop(rec)
        self.log(f"starting {component} ...")
        rec = procs.spawn(argv, self._log_file(component), env=files.env(component))
        procs.save(rec, self._proc_file(component))
        self._wait_healthy(component, deadline)

    def _wait_healthy(self, component: str, deadline: float) -> None:
        url = health_url(component)
        if url is None:
            return
        import httpx

        detail = ""
        while time.monotonic() < deadline:
            self._check_alive(component)
            try:
                resp = httpx.get(url, timeout=2.0)
                if resp.status_code == 200:
                    return
                detail = f"{resp.status_code}"
            except httpx.HTTPError as exc:
                detail = type(exc).__name__
            time.sleep(0.3)
        raise self._failure(component, f"not healthy in time ({url}: {detail})")

    def _check_alive(self, component: str) -> None:
        rec = procs.load(self._proc_file(component))
        if rec is None or not procs.is_alive(rec):
            raise self._failure(component, "exited")

    def _failure(self, component: str, what: str) -> NodeError:
        log = self._log_file(component)
        return NodeError(f"{component} {what}; last lines of {log}:\n{procs.log_tail(log)}")

    def _wait_socket(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_alive("containerd")
            proc = hostnet.run(
                ["ctr", "--address", str(self.paths.containerd_socket), "version"], check=False
            )
            if proc.returncode == 0:
                return
            time.sleep(0.3)
        raise self._failure("containerd", "did not serve its socket in time")

    def _wait_node_ready(self, api: Callable[[], Any], deadline: float) -> None:
        labels = {**GPU_LABELS, "nvidia.com/gpu.count": str(self.gpus)}
        status_patch = {"status": {"capacity": {GPU_RESOURCE: str(self.gpus)}}}
        with api() as client:
            while time.monotonic() < deadline:
                self._check_alive("kubelet")
                node = client.get("Node", None, NODE_NAME)
                if node is not None and _ready(node):
                    break
                time.sleep(0.5)
            else:
                raise self._failure("kubelet", f"did not register {NODE_NAME} as Ready in time")
            # Fake GPUs: capacity on the node's status; the kubelet copies it into allocatable and keeps it.
            client.patch_merge("Node", None, NODE_NAME, {"metadata": {"labels": labels}})
            while time.monotonic() < deadline:
                node = client.get("Node", None, NODE_NAME) or {"status": {}}
                if node["status"].get("allocatable", {}).get(GPU_RESOURCE) == str(self.gpus):
                    return
                if node["status"].get("capacity", {}).get(GPU_RESOURCE) != str(self.gpus):
                    try:
                        client.patch_merge("Node", None, NODE_NAME, status_patch, subresource="status")
                    except ApiError as exc:
                        raise NodeError(f"adding {GPU_RESOURCE} to {NODE_NAME} failed: {exc}") from exc
                time.sleep(0.5)
        raise self._failure("kubelet", f"did not make {GPU_RESOURCE} allocatable in time")

    # ---- down --------------------------------------------------------------------------------------------
    def stop_processes(self) -> None:
        """Stops the node's components and every pod process (pods restart on the next `up`)."""
        for component in reversed(NODE_COMPONENTS[1:]):
            self._stop(component)
        killed = restore.kill_cgroup_processes()
        shims = restore.kill_processes_mentioning(str(self.paths.containerd_socket))
        if killed or shims:
            self.log(f"  stopped {killed} pod processes and {shims} containerd shims")
        self._stop("containerd")

    def _stop(self, component: str) -> None:
        path = self._proc_file(component)
        rec = procs.load(path)
        if rec is not None and procs.is_alive(rec):
            self.log(f"stopping {component} (pid {rec.pid}) ...")
            procs.stop(rec)
        path.unlink(missing_ok=True)

    def restore_host(self) -> None:
        """Puts back what `prepare_host` recorded and forgets the record; raises if something stayed."""
        record = self.paths.host_record
        if not record.is_file():
            return
        before = hoststate.HostState.load(record.read_text())
        prefixes = [str(self.paths.root), str(RUN_DIR)]
        problems = restore.restore(before, prefixes, self.paths.pod_logs, self.log)
        if problems:
            raise NodeError("the host could not be fully restored:\n  - " + "\n  - ".join(problems))
        shutil.rmtree(RUN_DIR, ignore_errors=True)
        self.log("  host restored (sysctls, iptables, mounts, netns, cgroups, bridge)")

    def status(self) -> list[tuple[str, int | None, bool, bool, str]]:
        rows = []
        for component in NODE_COMPONENTS:
            rec = procs.load(self._proc_file(component))
            running = rec is not None and procs.is_alive(rec)
            healthy, detail = running, "not running" if not running else "alive"
            url = health_url(component)
            if running and url is not None:
                healthy, detail = _probe(url)
            rows.append((component, rec.pid if rec else None, running, healthy, detail))
        return rows


def _probe(url: str) -> tuple[bool, str]:
    import httpx

    try:
        resp = httpx.get(url, timeout=2.0)
    except httpx.HTTPError as exc:
        return False, f"{url}: {type(exc).__name__}"
    return resp.status_code == 200, f"{url}: {resp.status_code}"


def _ready(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _apply(client: Any, obj: dict[str, Any]) -> None:
    """Server-side apply (the sandbox client, `Sandbox.api()`) of cluster-scoped RBAC objects."""
    try:
        client.apply(obj)
    except ApiError as exc:
        raise NodeError(f"applying {obj['kind']} {obj['metadata']['name']} failed: {exc}") from exc
