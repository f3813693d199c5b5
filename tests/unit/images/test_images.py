"""The pure parts of `shoal images build`: what a Dockerfile copies, the content hash, tags, the index."""

from __future__ import annotations

from pathlib import Path

import pytest
from shoal_sandbox.images.base import BaseRecipe
from shoal_sandbox.images.hashing import context_files, file_input, inputs_digest
from shoal_sandbox.images.index import IndexEntry, merged, read_index, write_index
from shoal_sandbox.images.spec import IMAGES, by_name, copied_sources, image_tag, is_ignored

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]

DOCKERFILE = """\
ARG BASE_IMAGE=python:3.12.8-slim-bookworm
FROM ${BASE_IMAGE} AS build
COPY pyproject.toml README.md ./
# COPY ignored/ ignored/
COPY --chown=1:1 cli/ \\
     cli/
RUN true
FROM ${BASE_IMAGE}
COPY --from=build /opt/shoal /opt/shoal
"""


def test_copied_sources_reads_context_copies_only() -> None:
    assert copied_sources(DOCKERFILE) == ["README.md", "cli", "pyproject.toml"]


def test_every_buildable_image_copies_existing_sources() -> None:
    for spec in IMAGES:
        sources = copied_sources((REPO / spec.dockerfile).read_text())
        assert "pyproject.toml" in sources
        assert all((REPO / s).exists() for s in sources), (spec.name, sources)


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("cli/shoal_cli/main.py", False),
        ("cli/shoal_cli/__pycache__/main.cpython-311.pyc", True),
        ("cli/x.pyc", True),
        ("shoal.egg-info/PKG-INFO", True),
        (".mypy_cache/x", True),
    ],
)
def test_ignored_files(path: str, ignored: bool) -> None:
    assert is_ignored(path) is ignored


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def _digest(root: Path, base: str = "b") -> str:
    files = [file_input(root, p) for p in context_files(root, copied_sources(DOCKERFILE))]
    return inputs_digest(DOCKERFILE, files, {}, base)


def test_digest_is_content_addressed(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    layout = {"pyproject.toml": "x", "README.md": "r", "cli/m.py": "1", "cli/__pycache__/m.pyc": "junk"}
    _tree(a, layout)
    _tree(b, {**layout, "cli/__pycache__/m.pyc": "other junk", "unrelated.txt": "u"})
    assert _digest(a) == _digest(b)  # same inputs elsewhere, ignored and uncopied files left out
    (b / "cli" / "m.py").write_text("2")
    assert _digest(a) != _digest(b)  # a source changed
    assert _digest(a) != _digest(a, base="other")  # the base changed
    before = _digest(a)
    (a / "cli" / "m.py").chmod(0o755)
    assert _digest(a) != before  # the executable bit is an input


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="copies 'cli'"):
        context_files(tmp_path, ["cli"])


def test_tag_and_names() -> None:
    assert image_tag("0.1.0", "abcdef0123456789") == "0.1.0-abcdef012345"
    assert [s.name for s in by_name(None)] == ["operator", "router", "model-server-cpu"]
    with pytest.raises(ValueError, match="unknown image"):
        by_name(["nope"])


def test_base_key_follows_the_recipe() -> None:
    assert BaseRecipe().key() == BaseRecipe().key()
    assert BaseRecipe().key() != BaseRecipe(packages=("python3",)).key()
    assert BaseRecipe().ref().startswith("localhost/shoal-base:bookworm-")


def test_index_round_trip_and_merge(tmp_path: Path) -> None:
    old = {
        "router": IndexEntry("/a/r.tar", "0.1.0-1", "r:0.1.0-1", "1"),
        "operator": IndexEntry("o", "t", "r", "h"),
    }
    new = {"router": IndexEntry("/a/r2.tar", "0.1.0-2", "r:0.1.0-2", "2")}
    write_index(tmp_path, merged(old, new))
    got = read_index(tmp_path)
    assert got["router"].tag == "0.1.0-2" and got["operator"] == old["operator"]


def test_cli_skips_components_an_image_does_not_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """An image installs one component; `shoal` must still start there (and say its version)."""
    from shoal_cli import main

    monkeypatch.setattr(main, "COMPONENT_CLIS", ("shoal_not_installed.cli", "shoal_sandbox.images.cli"))
    parser = main.build_parser()
    assert parser.parse_args(["images", "build", "router"]).names == ["router"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--version"])
    # A missing dependency *inside* an installed component is a real error, not skipped.
    monkeypatch.setattr(main, "COMPONENT_CLIS", ("shoal_sandbox.images.not_a_module",))
    with pytest.raises(ModuleNotFoundError):
        main.build_parser()
