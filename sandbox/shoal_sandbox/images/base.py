"""The local base image: a minimal Debian bookworm with Debian's python3, made with debootstrap, because
no base image can be pulled here. The Dockerfiles take it through their BASE_IMAGE argument; published
builds use the public python image instead (the Dockerfiles' default).

The base is keyed by its recipe (suite, variant, packages, mirror), not by its bytes: debootstrap's output
differs in timestamps on every run, and Debian's point releases change the packages behind the same
recipe. So two machines get the same key (and the same image hashes) for the same commit; the base's
packages are whatever the mirror served when that machine made it (docs/images.md).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from shoal_sandbox.images.tools import Log, image_exists, load_archive, require, run, save_archive

# Left out of the image: package lists and caches, docs and man pages (like the slim Python images).
_PRUNE = (
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/cache/debconf/templates.dat-old",
    "var/log",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
)
_SOURCES = (
    "deb http://deb.debian.org/debian bookworm main\n"
    "deb http://deb.debian.org/debian bookworm-updates main\n"
    "deb http://deb.debian.org/debian-security bookworm-security main\n"
)


@dataclass(frozen=True)
class BaseRecipe:
    suite: str = "bookworm"
    variant: str = "minbase"
    packages: tuple[str, ...] = ("python3", "python3-venv", "ca-certificates")
    mirror: str = "http://deb.debian.org/debian"

    def key(self) -> str:
        canonical = json.dumps({"recipe": "1", **asdict(self)}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def ref(self) -> str:
        return f"localhost/shoal-base:{self.suite}-{self.key()[:12]}"


@dataclass(frozen=True)
class BaseImage:
    ref: str
    key: str
    archive: Path


def ensure_base(images_dir: Path, log: Log, recipe: BaseRecipe | None = None) -> BaseImage:
    """The base image in the local store and as an OCI archive; made only when its archive is missing."""
    recipe = recipe or BaseRecipe()
    ref, key = recipe.ref(), recipe.key()
    archive = images_dir / f"base-{recipe.suite}-{key[:12]}.oci.tar"
    if archive.is_file():
        if not image_exists(ref):
            load_archive(archive, ref, log)
        log(f"base {ref}: up to date")
        return BaseImage(ref, key, archive)
    with tempfile.TemporaryDirectory(prefix=".base-", dir=images_dir) as tmp:
        rootfs = Path(tmp) / "rootfs"
        _debootstrap(recipe, rootfs, images_dir / "debootstrap-debs", log)
        _commit_rootfs(rootfs, ref, log)
    save_archive(ref, archive, log)
    log(f"base {ref}: built")
    return BaseImage(ref, key, archive)


def _debootstrap(recipe: BaseRecipe, rootfs: Path, debs: Path, log: Log) -> None:
    debs.mkdir(parents=True, exist_ok=True)  # downloaded .debs are kept: a second base is offline-fast
    run(
        [
            require("debootstrap"),
            f"--variant={recipe.variant}",
            f"--include={','.join(recipe.packages)}",
            f"--cache-dir={debs}",
            recipe.suite,
            str(rootfs),
            recipe.mirror,
        ],
        log,
        quiet=True,
    )
    for rel in _PRUNE:
        target = rootfs / rel
        if target.is_dir():
            shutil.rmtree(target)
            target.mkdir(parents=True)
    # The runtime provides these; the builder's own must not leak into the image.
    for rel in ("etc/resolv.conf", "etc/hostname"):
        (rootfs / rel).unlink(missing_ok=True)
    (rootfs / "etc/apt/sources.list").write_text(_SOURCES)


def _commit_rootfs(rootfs: Path, ref: str, log: Log) -> None:
    buildah = require("buildah")
    ctr = run([buildah, "from", "scratch"], log, quiet=True).strip().splitlines()[-1]
    try:
        mnt = run([buildah, "mount", ctr], log, quiet=True).strip().splitlines()[-1]
        run(["cp", "-a", f"{rootfs}/.", mnt], log)
        run([buildah, "umount", ctr], log, quiet=True)
        run(
            [
                buildah,
                "config",
                "--env",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env",
                "LANG=C.UTF-8",
                "--cmd",
                "python3",
                "--label",
                "org.opencontainers.image.title=shoal-base",
                ctr,
            ],
            log,
        )
        run([buildah, "commit", "--quiet", ctr, ref], log, quiet=True)
    finally:
        subprocess.run([buildah, "rm", ctr], capture_output=True, timeout=120, check=False)
