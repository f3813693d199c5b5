"""Thin wrappers around the programs that build and move images: debootstrap, buildah and skopeo."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

Log = Callable[[str], None]

# Bounds: no single step may hang a build forever (the CPU model-server image takes minutes on 2 cores).
STEP_TIMEOUT_S = 3600


class ImageBuildError(RuntimeError):
    pass


def require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise ImageBuildError(
            f"{program} is not installed (apt-get install --no-install-recommends buildah skopeo debootstrap)"
        )
    return path


def run(argv: Sequence[str], log: Log, timeout: float = STEP_TIMEOUT_S, quiet: bool = False) -> str:
    """Runs a command at low priority; its output is streamed to `log` (unless quiet) and returned."""
    cmd = ["nice", "-n", "10", *argv]
    log(f"$ {' '.join(argv)}")
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as proc:
        assert proc.stdout is not None
        lines: list[str] = []
        try:
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                if not quiet:
                    log("  " + line.rstrip("\n"))
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            raise ImageBuildError(f"{argv[0]} took longer than {timeout:.0f}s") from exc
    if rc != 0:
        tail = "\n".join(lines[-30:])
        raise ImageBuildError(f"{' '.join(argv[:3])} ... failed with exit code {rc}:\n{tail}")
    return "\n".join(lines)


def image_exists(ref: str) -> bool:
    proc = subprocess.run(
        [require("buildah"), "inspect", "--type", "image", "--format", "{{.FromImageID}}", ref],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return proc.returncode == 0


def remove_image(ref: str) -> None:
    """Removes `ref` from the local store if it is there (its layers go when no other image uses them)."""
    subprocess.run([require("buildah"), "rmi", ref], capture_output=True, timeout=300, check=False)


def load_archive(archive: Path, ref: str, log: Log) -> None:
    """Puts an OCI archive into the local image store under `ref` (layers already there are reused)."""
    run([require("skopeo"), "copy", "--quiet", f"oci-archive:{archive}", f"containers-storage:{ref}"], log)


def save_archive(ref: str, archive: Path, log: Log) -> None:
    """Writes `ref` from the local store to an OCI archive, atomically (a partial file never looks built)."""
    partial = archive.with_name(archive.name + ".partial")
    partial.unlink(missing_ok=True)
    run([require("buildah"), "push", "--quiet", ref, f"oci-archive:{partial}:{ref}"], log)
    partial.replace(archive)


def runtime_args() -> list[str]:
    """`--runtime runc` when runc is installed: crun (buildah's default on Debian) refuses hosts whose
    cgroups are in hybrid mode (v1 controllers plus a v2 mount), as on this project's CI machines."""
    path = shutil.which("runc")
    return ["--runtime", path] if path else []


HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def host_trust_volumes(scratch: Path) -> list[str]:
    """Build-time mounts that make RUN steps trust what the host trusts: its CA bundle, and a pip.conf
    pointing pip at it (pip ignores the system store otherwise). Needed behind a TLS-inspecting proxy;
    harmless elsewhere. Mounts are never committed, so the image keeps its own CA store."""
    if not HOST_CA_BUNDLE.is_file():
        return []
    pip_conf = scratch / "pip.conf"
    pip_conf.write_text(f"[global]\ncert = {HOST_CA_BUNDLE}\n")
    return ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro", "--volume", f"{pip_conf}:/etc/pip.conf:ro"]
