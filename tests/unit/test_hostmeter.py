"""The host meter's arithmetic and file format (temper_testing.lab.hostmeter); its trip through a
real guest is tests/lab/test_guest.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from temper_testing.lab.hostmeter import HostSample, between, read_sample, sample_host, write_sample


def test_other_work_is_busy_time_that_was_not_qemus() -> None:
    first = HostSample(100.0, busy_s=50.0, steal_s=1.0, qemu_s=40.0, emulator_s=3.0)
    last = HostSample(110.0, busy_s=71.0, steal_s=2.0, qemu_s=59.0, emulator_s=4.5)

    window = between(first, last)

    assert window.seconds == 10.0
    assert window.other_cpus == pytest.approx(0.2)  # (21 - 19) / 10
    assert window.steal_cpus == pytest.approx(0.1)
    assert window.emulator_cpus == pytest.approx(0.15)  # QEMU's non-vCPU threads


def test_a_window_without_time_or_with_qemu_ahead_of_busy_reads_as_quiet() -> None:
    sample = HostSample(5.0, 1.0, 0.0, 1.0, 0.1)
    assert between(sample, sample).other_cpus == 0.0
    # busy and QEMU are read at slightly different instants; never a negative CPU count.
    assert between(sample, HostSample(6.0, 1.5, 0.0, 1.6, 0.1)).other_cpus == 0.0


def test_a_sample_survives_the_file_and_a_missing_or_torn_file_is_none(tmp_path: Path) -> None:
    path = tmp_path / "meter"
    assert read_sample(path) is None
    sample = HostSample(12.5, 30.25, 0.5, 20.0, 1.5)
    write_sample(path, sample)
    assert read_sample(path) == sample
    assert [p.name for p in tmp_path.iterdir()] == ["meter"]
    path.write_text("12.5 30.25 0.5 20.0\n")  # a sample from before emulator time was kept
    assert read_sample(path) is None


def test_the_host_side_reads_this_process_as_qemu_and_its_threads_as_the_emulators() -> None:
    sample = sample_host(os.getpid())
    assert sample.busy_s >= sample.qemu_s > 0
    # No thread of this process is named like a vCPU thread: all its time is "emulator" time.
    assert 0 < sample.emulator_s <= sample.qemu_s + 0.01
