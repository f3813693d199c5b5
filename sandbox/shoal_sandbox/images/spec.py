"""Which images shoal builds, and what goes into each: pure data and pure functions over Dockerfile text."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Files never sent to a build, whatever folder they are in (the Dockerfiles' .dockerignore says the same).
IGNORED_PARTS = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis"})
IGNORED_SUFFIXES = (".pyc", ".pyo")
IGNORED_DIR_SUFFIXES = (".egg-info",)


@dataclass(frozen=True)
class ImageSpec:
    """One image: its Dockerfile under docker/ and how it is built here."""

    name: str  # key in index.json, e.g. "operator"
    dockerfile: str  # path from the repository root
    repository: str  # published repository, e.g. ghcr.io/shoal-dev/shoal-operator
    build_here: bool = True  # False: linted only here (the CUDA image needs a GPU machine to be useful)
    wheels: bool = False  # mount $SHOAL_CACHE/wheels at /cache/wheels during the build
    build_space_gib: int = 3  # free disk a build needs (its peak use, measured, plus a margin)
    build_args: tuple[tuple[str, str], ...] = field(default=())


REGISTRY = "ghcr.io/shoal-dev"

IMAGES: tuple[ImageSpec, ...] = (
    ImageSpec("operator", "docker/operator.Dockerfile", f"{REGISTRY}/shoal-operator"),
    ImageSpec("router", "docker/router.Dockerfile", f"{REGISTRY}/shoal-router"),
    ImageSpec(
        "model-server-cpu",
        "docker/model-server-cpu.Dockerfile",
        f"{REGISTRY}/shoal-model-server-cpu",
        wheels=True,
        build_space_gib=22,  # its measured peak: 21.9 GiB (docs/images.md)
    ),
    ImageSpec(
        "model-server", "docker/model-server.Dockerfile", f"{REGISTRY}/shoal-model-server", build_here=False
    ),
)


def by_name(names: list[str] | None) -> list[ImageSpec]:
    """The images asked for (all buildable ones when none are named); unknown names are an error."""
    if not names:
        return [s for s in IMAGES if s.build_here]
    known = {s.name: s for s in IMAGES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown image(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in names]


def _logical_lines(dockerfile: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", dockerfile)
    return [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def copied_sources(dockerfile: str) -> list[str]:
    """Build-context paths that COPY/ADD instructions read (not those copied from another stage)."""
    out: list[str] = []
    for line in _logical_lines(dockerfile):
        word, _, rest = line.partition(" ")
        if word.upper() not in {"COPY", "ADD"}:
            continue
        args = rest.split()
        if any(a.startswith("--from") for a in args):
            continue
        paths = [a for a in args if not a.startswith("--")]
        out.extend(p.rstrip("/") or "." for p in paths[:-1])
    return sorted(set(out))


def is_ignored(relpath: str) -> bool:
    parts = relpath.split("/")
    if any(p in IGNORED_PARTS or p.endswith(IGNORED_DIR_SUFFIXES) for p in parts):
        return True
    return relpath.endswith(IGNORED_SUFFIXES)


def stale_images(present: list[str], wanted: list[str]) -> list[str]:
    """Older tags of the repositories in `wanted` (earlier builds of shoal's images), out of the refs a
    store lists: buildah's before a build, the node's containerd before an import."""
    repos = {ref.rsplit(":", 1)[0] for ref in wanted if ":" in ref}
    return [n for n in present if ":" in n and n.rsplit(":", 1)[0] in repos and n not in wanted]


def image_tag(version: str, digest: str) -> str:
    """The tag of a locally built image: the project version plus the short content hash."""
    return f"{version}-{digest[:12]}"
