"""The OCI image writer (`temper_release.oci`): normalised entries, one digest per tree, a
tampered archive refused. The real image, unpacked by umoci and run, is tests/release's."""

from __future__ import annotations

import json
import os
import tarfile
from io import BytesIO
from pathlib import Path

import pytest

from temper_release import oci
from temper_release.errors import ReleaseError

EPOCH = 1_700_000_000
CONFIG = oci.ImageConfig(architecture="amd64", entrypoint=["/bin/agent"], env=["A=1"])


def make_tree(root: Path, mtime: int) -> Path:
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/agent").write_text("#!/bin/true\n")
    (root / "usr/bin/agent").chmod(0o755)
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0::/:/nonexistent\n")
    os.link(root / "usr/bin/agent", root / "usr/bin/agent-again")
    (root / "bin").symlink_to("usr/bin")
    for path in [*root.rglob("*"), root]:
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    return root


def build(tmp_path: Path, name: str, mtime: int, umask: int = 0o022) -> tuple[oci.Image, Path]:
    tree = make_tree(tmp_path / f"{name}-root", mtime)
    (tree / "etc/passwd").chmod(0o666 & ~umask)
    layout = tmp_path / f"{name}-layout"
    image = oci.write_layout(tree, layout, CONFIG, "1.2.3", EPOCH)
    archive = tmp_path / f"{name}.oci.tar"
    oci.write_archive(layout, archive, EPOCH)
    return image, archive


def test_the_same_tree_built_at_other_times_and_umasks_gives_one_digest(tmp_path: Path) -> None:
    first, first_archive = build(tmp_path, "a", EPOCH + 100)
    second, second_archive = build(tmp_path, "b", EPOCH - 5_000, umask=0o077)
    assert first.manifest.digest == second.manifest.digest
    assert first_archive.read_bytes() == second_archive.read_bytes()


def test_a_changed_file_changes_the_digest(tmp_path: Path) -> None:
    first, _ = build(tmp_path, "a", EPOCH)
    tree = make_tree(tmp_path / "c-root", EPOCH)
    (tree / "etc/passwd").write_text("root:x:0:0::/:/bin/sh\n")
    changed = oci.write_layout(tree, tmp_path / "c-layout", CONFIG, "1.2.3", EPOCH)
    assert changed.manifest.digest != first.manifest.digest


def test_layer_entries_are_sorted_owned_by_root_and_stamped(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "root", EPOCH + 100)
    os.utime(tree / "etc/passwd", (EPOCH - 50, EPOCH - 50))
    (tree / "etc/passwd").chmod(0o600)  # a umask's doing: normalised
    (tree / "etc").chmod(0o1777)  # a sticky directory, as /tmp: kept
    entries = []
    for info, data in oci.tree_entries(tree, EPOCH):
        entries.append(info)
        if data is not None:
            data.close()
    names = [info.name for info in entries]
    assert names == [
        "bin",
        "etc",
        "etc/passwd",
        "usr",
        "usr/bin",
        "usr/bin/agent",
        "usr/bin/agent-again",
    ]
    by_name = {info.name: info for info in entries}
    assert {(i.uid, i.gid, i.uname, i.gname) for i in entries} == {(0, 0, "", "")}
    assert {i.mtime for i in entries} == {EPOCH}
    assert by_name["usr/bin/agent"].mode == 0o755
    assert by_name["etc/passwd"].mode == 0o644
    assert by_name["etc"].mode == 0o1755
    assert by_name["bin"].issym()
    assert by_name["bin"].linkname == "usr/bin"
    assert by_name["usr/bin/agent-again"].islnk()
    assert by_name["usr/bin/agent-again"].linkname == "usr/bin/agent"


def test_a_device_file_is_refused_with_its_path(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "root", EPOCH)
    os.mkfifo(tree / "etc/fifo")
    with pytest.raises(ReleaseError, match=r"etc/fifo.*only directories, regular files and links"):
        list(oci.tree_entries(tree, EPOCH))


def test_the_archive_reads_back_with_its_config_and_name(tmp_path: Path) -> None:
    image, archive = build(tmp_path, "a", EPOCH)
    view = oci.read_archive(archive)
    assert view.manifest_digest == image.manifest.digest
    assert view.ref_name == "1.2.3"
    assert view.config["config"]["Entrypoint"] == ["/bin/agent"]
    assert view.config["created"] == "2023-11-14T22:13:20Z"
    layer = view.manifest["layers"][0]
    assert layer["mediaType"] == oci.MEDIA_LAYER
    diff_id = view.config["rootfs"]["diff_ids"][0]
    assert diff_id.startswith("sha256:")
    assert diff_id != layer["digest"]
    assert json.loads(view.blobs[view.manifest_digest])["schemaVersion"] == 2


def test_a_tampered_layer_is_caught(tmp_path: Path) -> None:
    _, archive = build(tmp_path, "a", EPOCH)
    view = oci.read_archive(archive)
    layer_digest = view.manifest["layers"][0]["digest"].split(":")[1]
    tampered = tmp_path / "tampered.oci.tar"
    with tarfile.open(archive) as source, tarfile.open(tampered, "w") as out:
        for member in source.getmembers():
            data = source.extractfile(member) if member.isfile() else None
            if member.name.endswith(layer_digest):
                raw = bytearray(data.read() if data else b"")
                raw[len(raw) // 2] ^= 0x01
                out.addfile(member, BytesIO(bytes(raw)))
            else:
                out.addfile(member, data)
    with pytest.raises(ReleaseError, match=f"blob sha256:{layer_digest} does not match"):
        oci.read_archive(tampered)


@pytest.mark.parametrize(
    ("value", "message"),
    [(None, "is not set"), ("soon", "not a whole number"), ("-1", "before 1970")],
)
def test_source_date_epoch_must_be_set_and_sane(value: str | None, message: str) -> None:
    env = {} if value is None else {"SOURCE_DATE_EPOCH": value}
    with pytest.raises(ReleaseError, match=message):
        oci.source_date_epoch(env)
    assert oci.source_date_epoch({"SOURCE_DATE_EPOCH": "42"}) == 42
