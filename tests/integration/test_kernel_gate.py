"""read_kernel_gate against fake kernel trees, and once against this machine's own kernel."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from temper.host.kernel import (
    BOOT_DIR,
    CMDLINE,
    MIN_KERNEL,
    OSRELEASE,
    PROC_CONFIG,
    GateResult,
    parse_kernel_version,
    read_kernel_gate,
)
from temper_testing.host.fakesys import write_fake_kernel


def _only_reason(result: GateResult) -> str:
    assert not result.passed
    assert len(result.reasons) == 1, result.reasons
    return result.reasons[0]


def test_a_good_kernel_passes(tmp_path: Path) -> None:
    result = read_kernel_gate(write_fake_kernel(tmp_path))
    assert result == GateResult(passed=True, kernel="7.3.4-amd64", reasons=())


@pytest.mark.parametrize(
    ("release", "passed"),
    [
        ("6.11.0", False),
        ("6.11.12-generic", False),
        ("5.15.0", False),
        ("6.12.0-rc1", True),
        ("6.12", True),
        ("7.3.4-amd64", True),
        ("10.0.0", True),
    ],
)
def test_release_must_be_at_least_6_12(tmp_path: Path, release: str, passed: bool) -> None:
    result = read_kernel_gate(write_fake_kernel(tmp_path, release=release))
    assert (result.passed, result.kernel) == (passed, release)
    if not passed:
        assert "older than 6.12" in _only_reason(result)


@pytest.mark.parametrize(
    ("release", "version"),
    [("6.12.0-rc1", (6, 12)), ("7.3.4-amd64", (7, 3)), ("6.9", (6, 9)), ("6.123x", (6, 123))],
)
def test_parse_kernel_version(release: str, version: tuple[int, int]) -> None:
    assert parse_kernel_version(release) == version
    assert MIN_KERNEL == (6, 12)


@pytest.mark.parametrize("release", ["garbage", "v6.12", "6", "", "6.x"])
def test_garbled_release_is_a_reason(tmp_path: Path, release: str) -> None:
    write_fake_kernel(tmp_path, release=release, config_in="proc")
    reason = _only_reason(read_kernel_gate(tmp_path))
    assert "does not start with a version X.Y" in reason
    assert str(tmp_path / OSRELEASE) in reason


def test_missing_release_is_a_reason_and_the_config_falls_back_to_proc(tmp_path: Path) -> None:
    write_fake_kernel(tmp_path, config_in="proc")
    (tmp_path / OSRELEASE).unlink()
    result = read_kernel_gate(tmp_path)
    assert result.kernel == ""
    assert "is missing" in _only_reason(result)


def test_config_is_read_from_proc_config_gz(tmp_path: Path) -> None:
    write_fake_kernel(tmp_path, config_in="proc")
    assert not (tmp_path / BOOT_DIR).exists()
    assert read_kernel_gate(tmp_path).passed


def test_config_not_set_in_proc_config_gz(tmp_path: Path) -> None:
    write_fake_kernel(tmp_path, config_in="proc", config_y=False)
    reason = _only_reason(read_kernel_gate(tmp_path))
    assert "CONFIG_SCHED_CLASS_EXT is not set to y" in reason
    assert str(tmp_path / PROC_CONFIG) in reason


def test_boot_config_wins_over_proc_config(tmp_path: Path) -> None:
    write_fake_kernel(tmp_path, config_y=False)
    (tmp_path / PROC_CONFIG).write_bytes(gzip.compress(b"CONFIG_SCHED_CLASS_EXT=y\n"))
    reason = _only_reason(read_kernel_gate(tmp_path))
    assert str(tmp_path / BOOT_DIR / "config-7.3.4-amd64") in reason


def test_config_for_another_release_does_not_count(tmp_path: Path) -> None:
    write_fake_kernel(tmp_path)
    (tmp_path / BOOT_DIR / "config-7.3.4-amd64").rename(tmp_path / BOOT_DIR / "config-6.1.0")
    assert "could not be found" in _only_reason(read_kernel_gate(tmp_path))


def test_corrupt_proc_config_gz_is_a_reason(tmp_path: Path) -> None:
    write_fake_kernel(tmp_path, config_in="proc")
    (tmp_path / PROC_CONFIG).write_bytes(b"not gzip at all")
    assert "cannot be read as gzip" in _only_reason(read_kernel_gate(tmp_path))


def test_unreadable_boot_config_is_a_reason(tmp_path: Path) -> None:
    write_fake_kernel(tmp_path)
    config = tmp_path / BOOT_DIR / "config-7.3.4-amd64"
    config.unlink()
    config.mkdir()  # readable by no one, root included
    assert "cannot be read" in _only_reason(read_kernel_gate(tmp_path))


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"config_y": False}, "CONFIG_SCHED_CLASS_EXT is not set to y"),
        ({"config_in": "none"}, "kernel config could not be found"),
        ({"btf": False}, "Kernel BTF is missing"),
        ({"sched_ext": False}, "sched_ext is not available"),
        ({"cmdline": "root=/dev/vda1 isolcpus=2-7 quiet"}, "isolcpus=2-7"),
        ({"release": "6.11.0"}, "older than 6.12"),
    ],
)
def test_each_check_fails_alone(tmp_path: Path, kwargs: dict[str, Any], expected: str) -> None:
    result = read_kernel_gate(write_fake_kernel(tmp_path, **kwargs))
    assert expected in _only_reason(result)


def test_every_failure_is_listed_together(tmp_path: Path) -> None:
    write_fake_kernel(
        tmp_path,
        release="6.6.0",
        sched_ext=False,
        btf=False,
        config_y=False,
        cmdline="root=/dev/sda isolcpus=domain,1-3",
    )
    result = read_kernel_gate(tmp_path)
    assert not result.passed
    assert result.kernel == "6.6.0"
    expected = ("older than 6.12", "not set to y", "BTF", "sched_ext is not", "isolcpus=")
    assert len(result.reasons) == len(expected)
    for reason, words in zip(result.reasons, expected, strict=True):
        assert words in reason
        assert reason.endswith(".")


def test_missing_config_and_cmdline_are_reasons_not_errors(tmp_path: Path) -> None:
    write_fake_kernel(tmp_path, config_in="none")
    (tmp_path / CMDLINE).unlink()
    result = read_kernel_gate(tmp_path)
    assert len(result.reasons) == 2
    assert "neither" in result.reasons[0]
    assert "cannot confirm that isolcpus= is not set" in result.reasons[1]


def test_isolcpus_after_the_init_separator_is_not_the_kernels(tmp_path: Path) -> None:
    write_fake_kernel(tmp_path, cmdline="root=/dev/vda1 -- isolcpus=1-3")
    assert read_kernel_gate(tmp_path).passed


def test_a_missing_host_root_is_one_reason(tmp_path: Path) -> None:
    result = read_kernel_gate(tmp_path / "absent")
    assert result.kernel == ""
    assert "--host-root" in _only_reason(result)


def test_this_machine_has_no_sched_ext() -> None:
    """This host's kernel is built without sched_ext; the gate must say so, not crash."""
    result = read_kernel_gate(Path("/"))
    assert not result.passed
    assert any("sched_ext" in reason for reason in result.reasons)
