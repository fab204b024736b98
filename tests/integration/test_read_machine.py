"""read_machine_shape against fake sysfs trees, and once against this machine's own /sys."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from temper.host.errors import HostReadError, HostRootMissing
from temper.host.machine import CPU_DIR, NODE_DIR, read_machine_shape
from temper.policy.errors import InputError
from temper.policy.machine import MachineShape, synthetic_shape
from temper_testing.host.fakesys import write_fake_sysfs


def _cpu_paths(root: Path) -> list[Path]:
    return sorted((root / CPU_DIR).glob("cpu[0-9]*"))


@pytest.mark.parametrize(
    "args", [(1, 4, 2, 1), (2, 48, 2, 2), (1, 2, 1, 1), (2, 3, 1, 1), (1, 6, 4, 3), (4, 2, 2, 2)]
)
def test_reads_back_synthetic_shapes(tmp_path: Path, args: tuple[int, int, int, int]) -> None:
    shape = synthetic_shape(*args)
    assert read_machine_shape(write_fake_sysfs(tmp_path, shape)) == shape


@st.composite
def _partitions(draw: st.DrawFn, cpus: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    labels = draw(st.lists(st.integers(0, 3), min_size=len(cpus), max_size=len(cpus)))
    groups: dict[int, list[int]] = {}
    for cpu, label in zip(cpus, labels, strict=True):
        groups.setdefault(label, []).append(cpu)
    return tuple(tuple(group) for group in groups.values())


@st.composite
def _shapes(draw: st.DrawFn) -> MachineShape:
    """Small machines with arbitrary CPU ids and arbitrary (not nested) groupings."""
    cpus = tuple(sorted(draw(st.sets(st.integers(0, 40), min_size=1, max_size=12))))
    cores, llcs, nodes = (draw(_partitions(cpus)) for _ in range(3))
    return MachineShape(cpus=cpus, cores=cores, llcs=llcs, nodes=nodes)


@settings(max_examples=40, deadline=None)
@given(_shapes())
def test_reads_back_any_small_shape(shape: MachineShape) -> None:
    with tempfile.TemporaryDirectory() as root:
        assert read_machine_shape(write_fake_sysfs(Path(root), shape)) == shape


def test_ignores_offline_cpus_in_sibling_and_cache_lists(tmp_path: Path) -> None:
    write_fake_sysfs(tmp_path, synthetic_shape(1, 4, 2, 1))
    (tmp_path / CPU_DIR / "online").write_text("0-2,4,6-7\n")
    online = (0, 1, 2, 4, 6, 7)
    expected = MachineShape(
        cpus=online, cores=((0, 4), (1,), (2, 6), (7,)), llcs=(online,), nodes=(online,)
    )
    assert read_machine_shape(tmp_path) == expected


def test_falls_back_to_core_cpus_list(tmp_path: Path) -> None:
    shape = synthetic_shape(1, 4, 2, 1)
    write_fake_sysfs(tmp_path, shape)
    for cpu_path in _cpu_paths(tmp_path):
        (cpu_path / "topology" / "thread_siblings_list").unlink()
    assert read_machine_shape(tmp_path) == shape


def test_without_cache_dirs_each_node_is_one_llc(tmp_path: Path) -> None:
    shape = synthetic_shape(2, 4, 2, 2)
    write_fake_sysfs(tmp_path, shape)
    for cpu_path in _cpu_paths(tmp_path):
        shutil.rmtree(cpu_path / "cache")
    assert read_machine_shape(tmp_path) == dataclasses.replace(shape, llcs=shape.nodes)


def test_without_a_level_3_cache_the_highest_level_is_the_llc(tmp_path: Path) -> None:
    shape = synthetic_shape(1, 4, 2, 1)
    write_fake_sysfs(tmp_path, shape)
    for cpu_path in _cpu_paths(tmp_path):
        shutil.rmtree(cpu_path / "cache" / "index3")
    assert read_machine_shape(tmp_path) == dataclasses.replace(shape, llcs=shape.cores)


def test_without_a_node_dir_the_machine_is_one_node(tmp_path: Path) -> None:
    shape = synthetic_shape(2, 4, 2, 1)
    write_fake_sysfs(tmp_path, shape)
    shutil.rmtree(tmp_path / NODE_DIR)
    assert read_machine_shape(tmp_path) == dataclasses.replace(shape, nodes=(shape.cpus,))


def test_memory_only_nodes_are_left_out(tmp_path: Path) -> None:
    shape = synthetic_shape(2, 2, 1, 1)
    write_fake_sysfs(tmp_path, shape)
    (tmp_path / NODE_DIR / "node10").mkdir()
    (tmp_path / NODE_DIR / "node10" / "cpulist").write_text("\n")
    assert read_machine_shape(tmp_path) == shape


def test_missing_root_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(HostRootMissing, match=re.escape(f"host root {root} does not exist")):
        read_machine_shape(root)


def test_missing_online_file_is_named(tmp_path: Path) -> None:
    write_fake_sysfs(tmp_path, synthetic_shape(1, 2, 1, 1))
    online = tmp_path / CPU_DIR / "online"
    online.unlink()
    with pytest.raises(HostReadError, match="is missing") as caught:
        read_machine_shape(tmp_path)
    assert caught.value.path == online
    assert str(online) in str(caught.value)
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def test_garbled_online_file_is_named(tmp_path: Path) -> None:
    write_fake_sysfs(tmp_path, synthetic_shape(1, 2, 1, 1))
    online = tmp_path / CPU_DIR / "online"
    online.write_text("zero-one\n")
    with pytest.raises(HostReadError, match="zero-one") as caught:
        read_machine_shape(tmp_path)
    assert str(online) in str(caught.value)
    assert isinstance(caught.value.__cause__, InputError)


@pytest.mark.parametrize(
    ("relative", "text", "message"),
    [
        ("cpu1/cache/index2/level", "two\n", "is not a cache level"),
        ("cpu1/topology/thread_siblings_list", "0\n", "does not list cpu1 itself"),
        ("cpu1/cache/index3/shared_cpu_list", "1-\n", "is not a CPU id"),
    ],
)
def test_garbled_cpu_files_are_named(
    tmp_path: Path, relative: str, text: str, message: str
) -> None:
    write_fake_sysfs(tmp_path, synthetic_shape(1, 2, 1, 1))
    path = tmp_path / CPU_DIR / relative
    path.write_text(text)
    with pytest.raises(HostReadError, match=message) as caught:
        read_machine_shape(tmp_path)
    assert caught.value.path == path


def test_inconsistent_topology_is_reported(tmp_path: Path) -> None:
    write_fake_sysfs(tmp_path, synthetic_shape(2, 2, 1, 1))
    (tmp_path / NODE_DIR / "node1" / "cpulist").write_text("1-3\n")
    with pytest.raises(HostReadError, match=r"inconsistent CPU topology.*more than one"):
        read_machine_shape(tmp_path)


def test_reads_this_machine() -> None:
    shape = read_machine_shape(Path("/"))
    assert shape.nr_cpus == os.cpu_count()
    assert shape.nr_cores * shape.threads_per_core >= shape.nr_cpus
