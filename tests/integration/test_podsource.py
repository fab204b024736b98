"""read_pod_dir and watch_pod_dir against real directories: formats, bad files, changes."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from contextlib import aclosing, suppress
from pathlib import Path
from typing import Any

import yaml

from temper.host.podsource import read_pod_dir, watch_pod_dir
from temper.policy.pods import PodSnapshot
from waiting import until

PodMaker = Callable[..., dict[str, Any]]

WAIT_S = 5.0  # the longest any step may take before a test fails instead of hanging
INTERVAL_S = 0.05


def pod_list(*pods: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(pods)})


def keys(snapshot: PodSnapshot) -> list[str]:
    return [pod.key for pod in snapshot.pods]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- read_pod_dir --------------------------------------------------------------------------------


def test_reads_every_format_in_file_name_order(tmp_path: Path, pod_manifest: PodMaker) -> None:
    write(tmp_path / "b-list.json", pod_list(pod_manifest("api", "shop"), pod_manifest("db")))
    write(tmp_path / "a-single.yml", yaml.safe_dump(pod_manifest("lone", "web")))
    many = [pod_manifest("one", "batch"), {"kind": "List", "items": [pod_manifest("two")]}]
    write(tmp_path / "c-multi.yaml", yaml.safe_dump_all(many))
    snapshot = read_pod_dir(tmp_path)
    assert snapshot.errors == ()
    assert keys(snapshot) == ["web/lone", "shop/api", "default/db", "batch/one", "default/two"]
    assert snapshot.pods[0].uid == "uid-web-lone"


def test_a_malformed_file_is_reported_and_the_others_still_load(
    tmp_path: Path, pod_manifest: PodMaker
) -> None:
    write(tmp_path / "a.json", pod_list(pod_manifest("api")))
    bad = write(tmp_path / "b.yaml", "items: [unclosed\n")
    no_uid = pod_manifest("nameless")
    del no_uid["metadata"]["uid"]
    invalid = write(tmp_path / "c.json", pod_list(no_uid))
    write(tmp_path / "d.json", pod_list(pod_manifest("db")))
    snapshot = read_pod_dir(tmp_path)
    assert keys(snapshot) == ["default/api", "default/db"]
    assert len(snapshot.errors) == 2
    assert snapshot.errors[0].startswith(f"{bad}: invalid YAML")
    assert snapshot.errors[1].startswith(f"{invalid}: ")
    assert "metadata.uid: missing" in snapshot.errors[1]


def test_hidden_temp_and_other_files_are_ignored(tmp_path: Path, pod_manifest: PodMaker) -> None:
    write(tmp_path / "pods.json", pod_list(pod_manifest("api")))
    for name in (".hidden.json", ".pods.json.swp", "pods.json~", "pods.yaml.swp", "notes.txt"):
        write(tmp_path / name, "not a pod list")
    (tmp_path / "old.yaml").mkdir()
    snapshot = read_pod_dir(tmp_path)
    assert (keys(snapshot), snapshot.errors) == (["default/api"], ())


def test_follows_links_as_a_configmap_volume_lays_them_out(
    tmp_path: Path, pod_manifest: PodMaker
) -> None:
    version = tmp_path / "..2024_01_01"
    version.mkdir()
    write(version / "pods.json", pod_list(pod_manifest("api")))
    (tmp_path / "..data").symlink_to(version.name)
    (tmp_path / "pods.json").symlink_to("..data/pods.json")
    (tmp_path / "gone.json").symlink_to("..data/gone.json")
    snapshot = read_pod_dir(tmp_path)
    assert keys(snapshot) == ["default/api"]
    assert len(snapshot.errors) == 1
    assert snapshot.errors[0].startswith(f"{tmp_path / 'gone.json'}: cannot read")


def test_fingerprint_is_stable_until_a_file_changes(tmp_path: Path, pod_manifest: PodMaker) -> None:
    path = write(tmp_path / "pods.json", pod_list(pod_manifest("api")))
    first = read_pod_dir(tmp_path)
    assert read_pod_dir(tmp_path) == first
    write(path, pod_list(pod_manifest("api"), pod_manifest("db")))
    edited = read_pod_dir(tmp_path)
    assert edited.fingerprint != first.fingerprint
    assert keys(edited) == ["default/api", "default/db"]


def test_fingerprint_sees_a_same_size_edit_by_its_mtime(
    tmp_path: Path, pod_manifest: PodMaker
) -> None:
    path = write(tmp_path / "pods.json", pod_list(pod_manifest("aaa")))
    stat = path.stat()
    first = read_pod_dir(tmp_path)
    write(path, pod_list(pod_manifest("bbb")))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert path.stat().st_size == stat.st_size
    assert read_pod_dir(tmp_path).fingerprint != first.fingerprint


def test_fingerprint_ignores_the_files_it_does_not_read(
    tmp_path: Path, pod_manifest: PodMaker
) -> None:
    write(tmp_path / "pods.json", pod_list(pod_manifest("api")))
    first = read_pod_dir(tmp_path).fingerprint
    write(tmp_path / ".pods.json.swp", "editor state")
    assert read_pod_dir(tmp_path).fingerprint == first
    write(tmp_path / "more.yaml", yaml.safe_dump(pod_manifest("db")))
    assert read_pod_dir(tmp_path).fingerprint != first


def test_a_missing_directory_is_one_error_and_may_appear_later(
    tmp_path: Path, pod_manifest: PodMaker
) -> None:
    directory = tmp_path / "pods"
    missing = read_pod_dir(directory)
    assert missing.pods == ()
    assert missing.errors == (f"{directory}: pod directory does not exist",)
    directory.mkdir()
    empty = read_pod_dir(directory)
    assert (empty.pods, empty.errors) == ((), ())
    assert empty.fingerprint != missing.fingerprint


def test_a_file_given_as_the_directory_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "pods.json", "{}")
    assert read_pod_dir(path).errors == (f"{path}: is not a directory",)


def test_a_duplicate_uid_keeps_the_first_and_names_both_files(
    tmp_path: Path, pod_manifest: PodMaker
) -> None:
    first = write(tmp_path / "a.json", pod_list(pod_manifest("api", uid="uid-1")))
    second = write(
        tmp_path / "b.yaml",
        yaml.safe_dump_all([pod_manifest("copy", uid="uid-1"), pod_manifest("db")]),
    )
    snapshot = read_pod_dir(tmp_path)
    assert keys(snapshot) == ["default/api", "default/db"]
    (error,) = snapshot.errors
    assert error.startswith(f"{second}: pod default/copy has uid uid-1")
    assert f"{first}" in error


# -- watch_pod_dir -------------------------------------------------------------------------------


async def first_snapshot(directory: Path) -> PodSnapshot:
    async with aclosing(watch_pod_dir(directory, interval_s=INTERVAL_S)) as snapshots:
        return await asyncio.wait_for(anext(snapshots), WAIT_S)


def test_watch_yields_the_first_snapshot_immediately(
    tmp_path: Path, pod_manifest: PodMaker
) -> None:
    write(tmp_path / "pods.json", pod_list(pod_manifest("api")))
    snapshot = asyncio.run(first_snapshot(tmp_path))
    assert snapshot == read_pod_dir(tmp_path)
    assert keys(snapshot) == ["default/api"]


def test_watch_yields_again_only_after_a_change(tmp_path: Path, pod_manifest: PodMaker) -> None:
    write(tmp_path / "pods.json", pod_list(pod_manifest("api")))
    seen: list[PodSnapshot] = []

    async def consume() -> None:
        async with aclosing(watch_pod_dir(tmp_path, interval_s=INTERVAL_S)) as snapshots:
            async for snapshot in snapshots:
                seen.append(snapshot)

    async def scenario() -> None:
        task = asyncio.create_task(consume())
        try:
            await until(lambda: len(seen) == 1)
            await asyncio.sleep(INTERVAL_S * 6)  # several polls of an unchanged directory
            assert len(seen) == 1
            write(tmp_path / "more.yaml", yaml.safe_dump(pod_manifest("db")))
            await until(lambda: len(seen) == 2)
            await asyncio.sleep(INTERVAL_S * 6)
            assert len(seen) == 2
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    asyncio.run(scenario())
    assert keys(seen[0]) == ["default/api"]
    assert keys(seen[1]) == ["default/db", "default/api"]
    assert seen[1].fingerprint != seen[0].fingerprint


def test_watch_waits_for_a_missing_directory(tmp_path: Path, pod_manifest: PodMaker) -> None:
    directory = tmp_path / "pods"

    async def scenario() -> tuple[PodSnapshot, PodSnapshot]:
        async with aclosing(watch_pod_dir(directory, interval_s=INTERVAL_S)) as snapshots:
            missing = await asyncio.wait_for(anext(snapshots), WAIT_S)
            staging = tmp_path / "staging"
            staging.mkdir()
            write(staging / "pods.json", pod_list(pod_manifest("api")))
            staging.rename(directory)
            return missing, await asyncio.wait_for(anext(snapshots), WAIT_S)

    missing, appeared = asyncio.run(scenario())
    assert (missing.pods, len(missing.errors)) == ((), 1)
    assert (keys(appeared), appeared.errors) == (["default/api"], ())
