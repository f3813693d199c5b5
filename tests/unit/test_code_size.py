"""Small pieces, enforced: no function over 60 lines and no module over 400 lines in the production
packages (docs/architecture.md, "Rules"). Line counts include docstrings and comments; a decorator
does not count.

Tests and benchmarks are not production code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = (
    "cli/shoal_cli",
    "common/shoal_common",
    "operator/shoal_operator",
    "model-server/shoal_server",
    "router/shoal_router",
    "batch/shoal_batch",
    "sandbox/shoal_sandbox",
)
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def _long_functions(path: Path) -> list[str]:
    """`LINE NAME (N lines)` for each function or method longer than MAX_FUNCTION_LINES."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                out.append(f"{node.lineno} {node.name} ({lines} lines)")
    return out


def test_the_packages_are_found() -> None:
    # a moved package must not make the checks below pass vacuously
    for pkg in PACKAGES:
        assert (REPO / pkg / "__init__.py").is_file(), pkg
    assert len(_modules()) > 50


def test_no_function_over_60_lines() -> None:
    long = [f"{path.relative_to(REPO)}:{f}" for path in _modules() for f in _long_functions(path)]
    assert not long, "split these into smaller functions:\n" + "\n".join(long)


def test_no_module_over_400_lines() -> None:
    big = [
        f"{p.relative_to(REPO)} ({n} lines)"
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not big, "split these modules:\n" + "\n".join(big)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f():\n" + "    x = 1\n" * 60, ["1 f (61 lines)"]),
        ("def f():\n" + "    x = 1\n" * 59, []),
        ("class C:\n    async def g(self):\n" + "        x = 1\n" * 61, ["2 g (62 lines)"]),
    ],
)
def test_the_function_check_counts_lines(tmp_path: Path, source: str, expected: list[str]) -> None:
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert _long_functions(path) == expected
