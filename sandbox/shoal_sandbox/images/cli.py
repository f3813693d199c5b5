"""`shoal images build`: cheap to import; the work is imported in the handler."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "images",
        help="build shoal's container images locally (buildah, no Docker engine)",
        description="Build shoal's images from docker/*.Dockerfile with buildah on a local Debian base, "
        "into OCI archives in $SHOAL_CACHE/images (listed in index.json). See docs/images.md.",
    )
    sub = p.add_subparsers(dest="images_command", metavar="{build}")
    sub.required = True
    b = sub.add_parser("build", help="build the images whose inputs changed (all CPU images by default)")
    b.add_argument("names", nargs="*", help="images to build (operator, router, model-server-cpu)")
    b.add_argument("--force", action="store_true", help="rebuild even when the archive exists")
    b.add_argument(
        "--source", default=None, help="repository root (default: the checkout this command runs from)"
    )
    b.set_defaults(handler=_build)


def _source_root(arg: str | None) -> Path:
    if arg:
        return Path(arg).resolve()
    here = Path(__file__).resolve().parents[3]
    return here if (here / "docker").is_dir() else Path.cwd()


def _build(args: argparse.Namespace) -> int:
    from shoal_sandbox.images.build import build_images
    from shoal_sandbox.images.spec import by_name
    from shoal_sandbox.images.tools import ImageBuildError
    from shoal_sandbox.paths import cache_dir

    try:
        specs = by_name(args.names)
        if not all(s.build_here for s in specs):
            raise ValueError("the CUDA model-server image is built by the release workflow, not here")
        results = build_images(specs, _source_root(args.source), cache_dir(), _log, force=args.force)
    except (ImageBuildError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for r in results:
        state = "built" if r.built else "cached"
        print(f"{r.name:<18} {state:<7} {r.seconds:7.1f}s  {r.entry.ref}  {r.entry.archive}")
    return 0


def _log(line: str) -> None:
    print(line, flush=True)
