"""shoal batch client and open-loop load generator.

Import cost matters (`shoal --help` imports `shoal_batch.cli`), so the public API is loaded lazily:

    from shoal_batch import BatchConfig, run_batch, run_open_loop, Report
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shoal_batch.config import BatchConfig, LoadConfig
    from shoal_batch.report import Report
    from shoal_batch.runner import run_batch, run_batch_async, run_open_loop, run_open_loop_async

__all__ = [
    "BatchConfig",
    "LoadConfig",
    "Report",
    "run_batch",
    "run_batch_async",
    "run_open_loop",
    "run_open_loop_async",
]

_LAZY = {
    "BatchConfig": "shoal_batch.config",
    "LoadConfig": "shoal_batch.config",
    "Report": "shoal_batch.report",
    "run_batch": "shoal_batch.runner",
    "run_batch_async": "shoal_batch.runner",
    "run_open_loop": "shoal_batch.runner",
    "run_open_loop_async": "shoal_batch.runner",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'shoal_batch' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
