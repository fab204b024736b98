"""The machine shape value, the kernel cpulist format and the synthetic machines."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from temper.policy.errors import InputError
from temper.policy.machine import (
    MAX_CPU_ID,
    MachineShape,
    format_cpu_list,
    parse_cpu_list,
    synthetic_shape,
)

cpu_ids = st.integers(min_value=0, max_value=300)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("0-3,8,10-11\n", (0, 1, 2, 3, 8, 10, 11)),
        ("", ()),
        ("\n", ()),
        ("5", (5,)),
        ("0-1", (0, 1)),
        ("7,2,2-3", (2, 3, 7)),
        (f"{MAX_CPU_ID}", (MAX_CPU_ID,)),
    ],
)
def test_parse_cpu_list(text: str, cpus: tuple[int, ...]) -> None:
    assert parse_cpu_list(text) == cpus


@pytest.mark.parametrize(
    "text",
    [
        "a",
        "1-",
        "-1",
        "3-1",
        "1,,2",
        ",1",
        "1 2",
        "0x1",
        "+1",
        "1-2-3",
        "\u0661",
        f"0-{MAX_CPU_ID + 1}",
    ],
)
def test_parse_cpu_list_rejects_garbage_naming_the_text(text: str) -> None:
    with pytest.raises(InputError, match="CPU list") as caught:
        parse_cpu_list(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize(
    ("cpus", "text"),
    [
        ((0, 1, 2, 3, 8), "0-3,8"),
        ((), ""),
        ((5,), "5"),
        ((0, 1), "0-1"),
        ((3, 1, 2, 2, 9, 10), "1-3,9-10"),
        ((0, 2, 4), "0,2,4"),
    ],
)
def test_format_cpu_list(cpus: tuple[int, ...], text: str) -> None:
    assert format_cpu_list(cpus) == text


def test_format_cpu_list_rejects_negative_ids() -> None:
    with pytest.raises(InputError, match="negative"):
        format_cpu_list([3, -1])


@given(st.sets(cpu_ids))
def test_cpu_list_round_trips(cpus: set[int]) -> None:
    text = format_cpu_list(cpus)
    assert parse_cpu_list(text) == tuple(sorted(cpus))
    assert format_cpu_list(parse_cpu_list(text + "\n")) == text


@given(st.sets(cpu_ids, min_size=1))
def test_format_cpu_list_is_compact(cpus: set[int]) -> None:
    runs = sum(1 for cpu in cpus if cpu - 1 not in cpus)
    assert len(format_cpu_list(cpus).split(",")) == runs


@given(st.lists(st.tuples(cpu_ids, st.integers(0, 20)), min_size=1))
def test_parse_cpu_list_reads_any_ranges(ranges: list[tuple[int, int]]) -> None:
    text = ",".join(f"{first}-{first + length}" for first, length in ranges)
    expected = {cpu for first, length in ranges for cpu in range(first, first + length + 1)}
    assert parse_cpu_list(text) == tuple(sorted(expected))


def test_synthetic_shape_one_socket_with_smt() -> None:
    shape = synthetic_shape(1, 4, 2, 1)
    assert shape.cpus == tuple(range(8))
    assert shape.cores == ((0, 4), (1, 5), (2, 6), (3, 7))
    assert shape.llcs == (tuple(range(8)),)
    assert shape.nodes == (tuple(range(8)),)
    assert (shape.nr_cpus, shape.nr_cores, shape.nr_llcs, shape.nr_nodes) == (8, 4, 1, 1)
    assert shape.threads_per_core == 2


def test_synthetic_shape_two_sockets_two_llcs_each() -> None:
    shape = synthetic_shape(2, 48, 2, 2)
    assert (shape.nr_cpus, shape.nr_cores, shape.nr_llcs, shape.nr_nodes) == (192, 96, 4, 2)
    assert shape.threads_per_core == 2
    assert shape.cores[0] == (0, 96)
    assert shape.cores[95] == (95, 191)
    assert shape.nodes[0] == (*range(48), *range(96, 144))
    assert shape.nodes[1] == (*range(48, 96), *range(144, 192))
    assert shape.llcs[0] == (*range(24), *range(96, 120))
    assert shape.llcs[3] == (*range(72, 96), *range(168, 192))


def test_synthetic_shape_without_smt() -> None:
    shape = synthetic_shape(1, 2, 1, 1)
    assert shape.cpus == (0, 1)
    assert shape.cores == ((0,), (1,))
    assert shape.llcs == shape.nodes == ((0, 1),)
    assert shape.threads_per_core == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1, 4, 2, 3), "split evenly"),
        ((0, 4, 2, 1), "sockets"),
        ((1, 0, 2, 1), "cores_per_socket"),
        ((1, 4, 0, 1), "threads_per_core"),
        ((1, 4, 2, 0), "llcs_per_socket"),
    ],
)
def test_synthetic_shape_rejects_bad_counts(args: tuple[int, int, int, int], message: str) -> None:
    with pytest.raises(InputError, match=message):
        synthetic_shape(*args)


def _shape(**groups: tuple[tuple[int, ...], ...]) -> MachineShape:
    """A 4-CPU machine, with some of its groupings replaced."""
    fields = {"cores": ((0, 1), (2, 3)), "llcs": ((0, 1, 2, 3),), "nodes": ((0, 1, 2, 3),)}
    return MachineShape(cpus=(0, 1, 2, 3), **(fields | groups))


def test_machine_shape_accepts_partitions_and_orders_them() -> None:
    shape = _shape(cores=((3, 2), (1, 0)), nodes=((2, 3), (0, 1)))
    assert shape.cores == ((0, 1), (2, 3))
    assert shape.nodes == ((0, 1), (2, 3))
    assert shape == _shape(nodes=((0, 1), (2, 3)))


@pytest.mark.parametrize("field", ["cores", "llcs", "nodes"])
@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (((0, 1), (2,)), "3 are in none of the"),
        (((0, 1, 2), (2, 3)), "2 are in more than one of the"),
        (((0, 1), (2, 3, 4)), "4 are not machine CPUs"),
        (((0, 1), (2, 3), ()), "empty group"),
        (((0, 0, 1), (2, 3)), "0 are in more than one of the"),
    ],
)
def test_machine_shape_rejects_non_partitions(
    field: str, groups: tuple[tuple[int, ...], ...], message: str
) -> None:
    with pytest.raises(InputError, match=message) as caught:
        _shape(**{field: groups})
    assert field in str(caught.value)


@pytest.mark.parametrize(
    ("cpus", "message"), [((), "no CPUs"), ((0, 1, 1, 2, 3), "listed twice"), ((-1, 0), "negative")]
)
def test_machine_shape_rejects_bad_cpus(cpus: tuple[int, ...], message: str) -> None:
    with pytest.raises(InputError, match=message):
        MachineShape(cpus=cpus, cores=(), llcs=(), nodes=())


@pytest.mark.parametrize(
    ("shape", "text"),
    [
        (synthetic_shape(1, 8, 2, 2), "16 CPUs, 8 cores x 2 threads, 2 LLCs, 1 NUMA node"),
        (synthetic_shape(1, 1, 1, 1), "1 CPU, 1 core x 1 thread, 1 LLC, 1 NUMA node"),
        (synthetic_shape(2, 48, 2, 2), "192 CPUs, 96 cores x 2 threads, 4 LLCs, 2 NUMA nodes"),
        (
            _shape(cores=((0, 1), (2,), (3,))),
            "4 CPUs, 3 cores x up to 2 threads, 1 LLC, 1 NUMA node",
        ),
    ],
)
def test_describe(shape: MachineShape, text: str) -> None:
    assert shape.describe() == text
