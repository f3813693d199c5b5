"""The decisions that keep image builds' disk use bounded: which store entries are stale, which working
containers an interrupted build left, and when a build cannot fit."""

from __future__ import annotations

from pathlib import Path

import pytest
from shoal_sandbox.images.spec import IMAGES
from shoal_sandbox.images.store import GIB, StoreContainer, interrupted_builds, other_versions, space_error

pytestmark = pytest.mark.unit

REPO = "ghcr.io/shoal-dev/shoal-model-server-cpu"


def test_other_versions_are_the_same_repository_under_other_tags() -> None:
    listed = [
        f"{REPO}:0.1.0-aaaaaaaaaaaa",
        f"{REPO}:0.1.0-bbbbbbbbbbbb",
        "ghcr.io/shoal-dev/shoal-model-server-cpu-debug:0.1.0-aaaaaaaaaaaa",
        "ghcr.io/shoal-dev/shoal-router:0.1.0-aaaaaaaaaaaa",
        "localhost/shoal-base:bookworm-123",
        "localhost:5000/other:1",
    ]
    assert other_versions(listed, REPO, "0.1.0-bbbbbbbbbbbb") == [f"{REPO}:0.1.0-aaaaaaaaaaaa"]
    assert other_versions(listed, REPO, "0.2.0-cccccccccccc") == listed[:2]
    assert other_versions([], REPO, "x") == []


def test_interrupted_builds_are_containers_on_the_base_only() -> None:
    containers = [
        StoreContainer("c1", "localhost/shoal-base:bookworm-ea12b4159d5a"),
        StoreContainer("c2", "localhost/shoal-base:bookworm-000000000000"),
        StoreContainer("c3", ""),  # someone's scratch container
        StoreContainer("c4", "docker.io/library/debian:12"),
        StoreContainer("c5", "localhost/shoal-base-extra:1"),
    ]
    assert interrupted_builds(containers, "localhost/shoal-base") == ["c1", "c2"]


def test_space_error_names_the_need_the_free_space_and_what_to_free() -> None:
    assert space_error("model-server-cpu", Path("/var/lib/containers"), 30 * GIB, 20 * GIB) is None
    assert space_error("x", Path("/p"), 20 * GIB, 20 * GIB) is None
    error = space_error("model-server-cpu", Path("/var/lib/containers"), 5 * GIB, 20 * GIB)
    assert error is not None
    assert "model-server-cpu needs about 20 GiB" in error
    assert "5.0 GiB are free" in error
    assert "/var/lib/containers" in error and "buildah rmi --prune" in error


def test_the_large_image_asks_for_more_space_than_the_small_ones() -> None:
    space = {s.name: s.build_space_gib for s in IMAGES}
    assert space["model-server-cpu"] > 3 * space["operator"]
    assert space["operator"] == space["router"] >= 1
