"""read_sched_ext and trigger_sysrq_reset against fake sched_ext trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from temper.host.errors import HostError, HostReadError, HostRootMissing
from temper.host.sched_ext import (
    SCHED_EXT_DIR,
    SYSRQ_TRIGGER,
    SchedExtStatus,
    SchedState,
    read_sched_ext,
    trigger_sysrq_reset,
)
from temper_testing.host.fakesys import write_fake_kernel, write_fake_sched_ext

LAYERED = "layered_1.1.2_x86_64-unknown-linux-gnu"


@pytest.mark.parametrize("state", ["disabled", "enabling", "enabled", "disabling"])
def test_reads_each_kernel_state(tmp_path: Path, state: str) -> None:
    write_fake_sched_ext(tmp_path, state=state, ops=LAYERED, enable_seq=3)
    assert read_sched_ext(tmp_path) == SchedExtStatus(
        state=SchedState(state), ops=LAYERED, enable_seq=3
    )


def test_disabled_with_no_scheduler_loaded(tmp_path: Path) -> None:
    write_fake_sched_ext(tmp_path)
    assert read_sched_ext(tmp_path) == SchedExtStatus(SchedState.DISABLED, None, 0)


def test_no_sched_ext_directory_is_absent(tmp_path: Path) -> None:
    write_fake_kernel(tmp_path, sched_ext=False)
    status = read_sched_ext(tmp_path)
    assert status == SchedExtStatus(state=SchedState.ABSENT, ops=None, enable_seq=None)
    assert not status.is_ours()


def test_ops_vanishing_mid_read_is_none_not_an_error(tmp_path: Path) -> None:
    """The scheduler unloaded between the read of `state` and the read of `root/ops`."""
    write_fake_sched_ext(tmp_path, state="enabled", ops=None, enable_seq=5)
    status = read_sched_ext(tmp_path)
    assert status == SchedExtStatus(state=SchedState.ENABLED, ops=None, enable_seq=5)
    assert not status.is_ours()


def test_root_dir_left_without_ops_file_is_none(tmp_path: Path) -> None:
    write_fake_sched_ext(tmp_path, state="enabled", ops=LAYERED)
    (tmp_path / SCHED_EXT_DIR / "root" / "ops").unlink()
    assert read_sched_ext(tmp_path).ops is None


def test_unloading_removes_root_dir(tmp_path: Path) -> None:
    write_fake_sched_ext(tmp_path, state="enabled", ops=LAYERED, enable_seq=1)
    write_fake_sched_ext(tmp_path, state="disabled", ops=None, enable_seq=1)
    assert not (tmp_path / SCHED_EXT_DIR / "root").exists()
    assert read_sched_ext(tmp_path) == SchedExtStatus(SchedState.DISABLED, None, 1)


def test_ops_is_stripped(tmp_path: Path) -> None:
    write_fake_sched_ext(tmp_path, state="enabled", ops=LAYERED)
    (tmp_path / SCHED_EXT_DIR / "root" / "ops").write_text(f"  {LAYERED}\n\n", encoding="ascii")
    assert read_sched_ext(tmp_path).ops == LAYERED


def test_missing_enable_seq_is_none(tmp_path: Path) -> None:
    """Older kernels have no enable_seq."""
    write_fake_sched_ext(tmp_path, state="enabled", ops=LAYERED)
    (tmp_path / SCHED_EXT_DIR / "enable_seq").unlink()
    assert read_sched_ext(tmp_path) == SchedExtStatus(SchedState.ENABLED, LAYERED, None)


@pytest.mark.parametrize("text", ["prepping", "ENABLED", "absent", "", "enabled disabled"])
def test_unknown_state_is_a_read_error_naming_the_file(tmp_path: Path, text: str) -> None:
    write_fake_sched_ext(tmp_path, state=text)
    with pytest.raises(HostReadError, match="not a known sched_ext state") as caught:
        read_sched_ext(tmp_path)
    assert caught.value.path == tmp_path / SCHED_EXT_DIR / "state"


def test_missing_state_is_a_read_error(tmp_path: Path) -> None:
    write_fake_sched_ext(tmp_path)
    (tmp_path / SCHED_EXT_DIR / "state").unlink()
    with pytest.raises(HostReadError, match="is missing"):
        read_sched_ext(tmp_path)


def test_garbled_enable_seq_is_a_read_error(tmp_path: Path) -> None:
    write_fake_sched_ext(tmp_path)
    (tmp_path / SCHED_EXT_DIR / "enable_seq").write_text("-1\n", encoding="ascii")
    with pytest.raises(HostReadError, match="enable_seq: is not an enable count"):
        read_sched_ext(tmp_path)


def test_missing_host_root(tmp_path: Path) -> None:
    with pytest.raises(HostRootMissing):
        read_sched_ext(tmp_path / "absent")


@pytest.mark.parametrize(
    ("status", "ours"),
    [
        (SchedExtStatus(SchedState.ENABLED, LAYERED, 1), True),
        (SchedExtStatus(SchedState.ENABLED, "lavd_1.0", 1), False),
        (SchedExtStatus(SchedState.ENABLED, None, 1), False),
        (SchedExtStatus(SchedState.ENABLING, LAYERED, 1), False),
        (SchedExtStatus(SchedState.DISABLING, LAYERED, 1), False),
        (SchedExtStatus(SchedState.DISABLED, None, 1), False),
        (SchedExtStatus(SchedState.ABSENT, None, None), False),
    ],
)
def test_is_ours(status: SchedExtStatus, ours: bool) -> None:
    assert status.is_ours() is ours


def test_is_ours_with_another_prefix(tmp_path: Path) -> None:
    write_fake_sched_ext(tmp_path, state="enabled", ops="lavd_1.0")
    status = read_sched_ext(tmp_path)
    assert status.is_ours("lavd")
    assert not status.is_ours()


def test_trigger_sysrq_reset_writes_s(tmp_path: Path) -> None:
    write_fake_kernel(tmp_path)
    trigger_sysrq_reset(tmp_path)
    assert (tmp_path / SYSRQ_TRIGGER).read_text(encoding="ascii") == "S"


def test_trigger_sysrq_reset_without_the_file_is_a_host_error(tmp_path: Path) -> None:
    """A wrong host root fails loudly and leaves no stray file behind."""
    with pytest.raises(HostError, match="cannot trigger SysRq-S"):
        trigger_sysrq_reset(tmp_path)
    assert not (tmp_path / SYSRQ_TRIGGER).exists()


def test_trigger_sysrq_reset_on_an_unwritable_path_is_a_host_error(tmp_path: Path) -> None:
    write_fake_kernel(tmp_path)
    trigger = tmp_path / SYSRQ_TRIGGER
    trigger.unlink()
    trigger.mkdir()  # writable by no one, root included
    with pytest.raises(HostError):
        trigger_sysrq_reset(tmp_path)
