"""The node's import record: what `up` imports again when containerd's store lost an image."""

from __future__ import annotations

from pathlib import Path

from shoal_sandbox.node import images


def test_forget_imports_drops_only_those_archives(tmp_path: Path) -> None:
    kept, lost = tmp_path / "router.oci.tar", tmp_path / "pause.oci.tar"
    record = tmp_path / "imported"
    record.write_text(f"{kept.resolve()}:10:1\n{lost.resolve()}:20:2\n")
    images.forget_imports(record, [lost])
    assert record.read_text() == f"{kept.resolve()}:10:1\n"
    images.forget_imports(tmp_path / "absent", [lost])  # no record yet: nothing to forget
    assert not (tmp_path / "absent").exists()


def test_orphan_ids_are_the_id_names_no_named_image_has() -> None:
    named = {
        "ghcr.io/shoal-dev/shoal-router:0.1.0-new": "sha256:m-new",
        "sha256:id-new": "sha256:m-new",
        "sha256:id-old": "sha256:m-old",  # the ID alias of a build removed by name
    }
    configs = {"sha256:m-new": "sha256:id-new", "sha256:m-old": "sha256:id-old"}
    assert images.orphan_ids(named, configs.__getitem__) == ["sha256:id-old"]
    assert images.orphan_ids({"a:1": "sha256:m-new"}, configs.__getitem__) == []


def test_an_archive_whose_image_the_store_lost_is_imported_again(tmp_path: Path) -> None:
    """The kubelet's eviction manager reclaimed the node test image under disk pressure while the import
    record still listed it: the next import skipped it and every test pod failed with ErrImagePull."""
    from shoal_sandbox.node import oci

    binary = tmp_path / "server"
    binary.write_bytes(b"#!/bin/true\n")
    archive = oci.write_archive(
        "localhost/shoal/t:1", {"/server": binary}, ["/server"], tmp_path / "t.oci.tar"
    )
    assert images.archive_refs(archive) == ["localhost/shoal/t:1"]
    assert images.lost_archives([archive], {"localhost/shoal/pause:1.0"}) == [archive]
    assert images.lost_archives([archive], {"localhost/shoal/t:1"}) == []
    not_an_archive = tmp_path / "x.tar"
    not_an_archive.write_bytes(b"garbage")
    assert images.archive_refs(not_an_archive) == []  # nothing to check: the record decides
