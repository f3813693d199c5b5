"""Builds shoal's images with buildah from the Dockerfiles in docker/, into content-addressed OCI archives.

An image whose archive for the current inputs hash exists is not built again. The build context is a
staged copy of exactly the hashed files, so the hash covers everything the build can read.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shoal_sandbox.images.base import BaseImage, ensure_base
from shoal_sandbox.images.hashing import context_files, file_input, inputs_digest
from shoal_sandbox.images.index import IndexEntry, merged, read_index, write_index
from shoal_sandbox.images.spec import ImageSpec, copied_sources, image_tag
from shoal_sandbox.images.store import (
    GIB,
    clear_interrupted_builds,
    remove_other_versions,
    require_space,
    store_root,
)
from shoal_sandbox.images.tools import (
    Log,
    host_trust_volumes,
    image_exists,
    load_archive,
    remove_image,
    require,
    run,
    runtime_args,
    save_archive,
)


@dataclass(frozen=True)
class BuildResult:
    name: str
    entry: IndexEntry
    built: bool  # False: the archive for these inputs already existed
    seconds: float


def project_version(root: Path) -> str:
    return str(tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"])


def planned_entry(spec: ImageSpec, root: Path, base: BaseImage, images_dir: Path, version: str) -> IndexEntry:
    """Where the image for the current inputs lives and what it is called (reads files, builds nothing)."""
    dockerfile = (root / spec.dockerfile).read_text()
    files = [file_input(root, p) for p in context_files(root, copied_sources(dockerfile))]
    digest = inputs_digest(dockerfile, files, dict(spec.build_args), base.key)
    tag = image_tag(version, digest)
    archive = images_dir / f"{spec.name}-{tag}.oci.tar"
    return IndexEntry(archive=str(archive), tag=tag, ref=f"{spec.repository}:{tag}", inputs=digest)


@contextmanager
def _lock(images_dir: Path) -> Iterator[None]:
    """One build at a time per cache (two would race on the same archives and on buildah's store)."""
    with (images_dir / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_images(
    specs: list[ImageSpec], root: Path, cache: Path, log: Log, force: bool = False
) -> list[BuildResult]:
    images_dir = cache / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    require("buildah")
    with _lock(images_dir):
        base = ensure_base(images_dir, log)
        clear_interrupted_builds(base.ref.rsplit(":", 1)[0], log)
        version = project_version(root)
        results = [_build_one(s, root, cache, base, version, log, force) for s in specs]
        write_index(images_dir, merged(read_index(images_dir), {r.name: r.entry for r in results}))
    return results


def _build_one(
    spec: ImageSpec, root: Path, cache: Path, base: BaseImage, version: str, log: Log, force: bool
) -> BuildResult:
    t0 = time.monotonic()
    images_dir = cache / "images"
    entry = planned_entry(spec, root, base, images_dir, version)
    archive = Path(entry.archive)
    if archive.is_file() and not force:
        log(f"{spec.name} {entry.ref}: up to date")
        return BuildResult(spec.name, entry, False, time.monotonic() - t0)
    log(f"{spec.name} {entry.ref}: building")
    remove_image(entry.ref)  # a forced rebuild would otherwise leave the old image untagged in the store
    _remove_older_archives(images_dir, spec, archive)
    remove_other_versions(spec.repository, entry.tag, log)
    require_space(spec.name, [store_root(), images_dir], spec.build_space_gib * GIB)
    with tempfile.TemporaryDirectory(prefix=f".ctx-{spec.name}-", dir=images_dir) as ctx:
        _stage_context(root, Path(ctx) / "src", spec)
        argv = [
            require("buildah"),
            "bud",
            "--pull=never",
            "--network=host",
            "--layers=false",
            "--force-rm",  # a failed build's containers would otherwise stay, gigabytes each
            *runtime_args(),
        ]
        argv += ["--build-arg", f"BASE_IMAGE={base.ref}"]
        for key, value in spec.build_args:
            argv += ["--build-arg", f"{key}={value}"]
        if spec.wheels:
            wheels = cache / "wheels"
            wheels.mkdir(parents=True, exist_ok=True)
            argv += ["--volume", f"{wheels}:/cache/wheels:rw"]
        argv += host_trust_volumes(Path(ctx))
        argv += ["-f", str(Path(ctx) / "src" / spec.dockerfile), "-t", entry.ref, f"{ctx}/src"]
        run(argv, log)
    save_archive(entry.ref, archive, log)
    log(f"{spec.name} {entry.ref}: built in {time.monotonic() - t0:.0f}s")
    return BuildResult(spec.name, entry, True, time.monotonic() - t0)


def _stage_context(root: Path, ctx: Path, spec: ImageSpec) -> None:
    dockerfile = (root / spec.dockerfile).read_text()
    for path in [root / spec.dockerfile, *context_files(root, copied_sources(dockerfile))]:
        dest = ctx / path.relative_to(root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)


def _remove_older_archives(images_dir: Path, spec: ImageSpec, keep: Path) -> None:
    """Older archives of the same image go before the build, so that the cache never holds two (plus
    the base): a model-server archive is several GB. They are stale: their inputs are not the tree's."""
    for old in images_dir.glob(f"{spec.name}-*.oci.tar*"):
        tag = old.name.removeprefix(f"{spec.name}-").split(".oci.tar")[0]
        if old != keep and tag[:1].isdigit():
            old.unlink()


def ensure_loaded(entry: IndexEntry, log: Log) -> str:
    """The image of an index entry in the local store (from its archive when missing); returns its ref."""
    if not image_exists(entry.ref):
        load_archive(Path(entry.archive), entry.ref, log)
    return entry.ref
