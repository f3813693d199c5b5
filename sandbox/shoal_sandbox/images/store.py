"""Keeps the disk use of image builds bounded: one version of each image in buildah's store and in the
cache, no working containers or unnamed images left by an interrupted build, and a clear error before a
build that cannot fit on the disk (a model-server image is several GB; CI machines keep their cache).

Decisions are pure functions over what `buildah` lists; the calls to buildah are thin wrappers.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from shoal_sandbox.images.spec import stale_images
from shoal_sandbox.images.tools import ImageBuildError, Log, require

GIB = 1024**3


@dataclass(frozen=True)
class StoreContainer:
    container_id: str
    image: str  # the image it was made from, as buildah names it ("" for a scratch container)


def other_versions(listed: list[str], repository: str, keep_tag: str) -> list[str]:
    """The refs in `listed` that are `repository` under a tag other than `keep_tag` (pure)."""
    return stale_images(listed, [f"{repository}:{keep_tag}"])


def interrupted_builds(containers: list[StoreContainer], base_repository: str) -> list[str]:
    """Working containers of builds on shoal's base: a finished build removes its own, so those left
    are from builds that were killed or failed (pure)."""
    return [c.container_id for c in containers if c.image.rsplit(":", 1)[0] == base_repository]


def space_error(what: str, path: Path, free_bytes: int, need_bytes: int) -> str | None:
    """Why a build of `what` cannot start for lack of disk, or None when it fits (pure)."""
    if free_bytes >= need_bytes:
        return None
    return (
        f"building {what} needs about {need_bytes / GIB:.0f} GiB free on the filesystem of {path}; "
        f"{free_bytes / GIB:.1f} GiB are free. Free some space (older builds in $SHOAL_CACHE/images, "
        "`buildah rmi --prune`, a stopped sandbox's state with `shoal sandbox down --purge`) and retry"
    )


def store_root() -> Path:
    """Where buildah keeps images and working containers (its graph root)."""
    out = _buildah("info", "--format", "{{.store.GraphRoot}}").strip()
    return Path(out or "/var/lib/containers/storage")


def require_space(what: str, paths: list[Path], need_bytes: int) -> None:
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        error = space_error(what, path, shutil.disk_usage(path).free, need_bytes)
        if error:
            raise ImageBuildError(error)


def listed_images() -> list[str]:
    out = _buildah("images", "--format", "{{.Name}}:{{.Tag}}")
    return [line for line in out.splitlines() if line and "<none>" not in line]


def listed_containers() -> list[StoreContainer]:
    out = _buildah("containers", "--format", "{{.ContainerID}} {{.ImageName}}")
    rows = (line.split(maxsplit=1) for line in out.splitlines() if line.strip())
    return [StoreContainer(row[0], row[1] if len(row) > 1 else "") for row in rows]


def remove_other_versions(repository: str, keep_tag: str, log: Log) -> None:
    """Earlier builds of `repository` leave the store before a new one is built, not after: the build's
    peak disk use then never holds two versions."""
    for ref in other_versions(listed_images(), repository, keep_tag):
        _buildah("rmi", ref, check=False)
        log(f"removed {ref} (an earlier build) from buildah's store")


def clear_interrupted_builds(base_repository: str, log: Log) -> None:
    """Removes what a killed or failed build left: its working containers (gigabytes each for the
    model-server) and the store's unnamed images (intermediate stages nothing can refer to by name).
    Builds are serialized per cache; two caches on one machine share buildah's store, so builds from both
    at once would remove each other's working containers."""
    for container_id in interrupted_builds(listed_containers(), base_repository):
        _buildah("rm", container_id, check=False)
        log(f"removed working container {container_id[:12]} of an interrupted build")
    _buildah("rmi", "--prune", check=False)


def _buildah(*args: str, check: bool = True) -> str:
    proc = subprocess.run(
        [require("buildah"), *args], capture_output=True, text=True, timeout=300, check=False
    )
    if check and proc.returncode != 0:
        raise ImageBuildError(f"buildah {' '.join(args)} failed: {proc.stderr.strip()[-800:]}")
    return proc.stdout
