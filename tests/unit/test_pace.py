"""The lab guest's pace: waits scale with a measured interpreter start, never below quiet."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from temper_testing.lab import pace as pace_module
from temper_testing.lab.pace import QUIET_START_S, pace, paced
from temper_testing.lab.processes import WorkloadError, await_ready, kill, spawn_workload


@pytest.fixture(autouse=True)
def fresh_pace() -> Iterator[None]:
    pace.cache_clear()
    yield
    pace.cache_clear()


def measured(monkeypatch: pytest.MonkeyPatch, seconds: float) -> list[int]:
    calls: list[int] = []

    def start_s() -> float:
        calls.append(1)
        return seconds

    monkeypatch.setattr(pace_module, "interpreter_start_s", start_s)
    return calls


def test_a_slow_guest_stretches_every_wait_by_its_measured_slowness(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = measured(monkeypatch, 3 * QUIET_START_S)
    assert pace() == pytest.approx(3.0)
    assert paced(30) == pytest.approx(90.0)
    assert paced(240) == pytest.approx(720.0)
    assert calls == [1], "measured once per process, not at every wait"


def test_a_fast_machine_keeps_the_quiet_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    measured(monkeypatch, 0.05)  # a host's interpreter start
    assert pace() == 1.0
    assert paced(30) == 30


def test_the_probe_is_a_real_interpreter_start_of_the_workload_module() -> None:
    start_s = pace_module.interpreter_start_s()
    assert 0 < start_s < pace_module.PROBE_TIMEOUT_S


def test_a_probe_that_cannot_import_the_workload_fails_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(subprocess.CalledProcessError):
        pace_module.interpreter_start_s()


def test_a_late_workload_is_named_with_its_state_and_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never released, the workload cannot get ready; the error says what it was doing."""
    measured(monkeypatch, QUIET_START_S)
    process = spawn_workload(["--comm=held"])
    try:
        with pytest.raises(WorkloadError) as caught:
            await_ready([process], timeout_s=0.5)
    finally:
        kill(process)
    message = str(caught.value)
    assert f"workload processes [{process.pid}] not ready after 0.5 s (pace 1.00;" in message
    assert f"{process.pid}: state S, " in message
    assert " s CPU, 1 threads" in message


def test_the_ready_wait_is_paced_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    measured(monkeypatch, 2 * QUIET_START_S)
    monkeypatch.setattr("temper_testing.lab.processes.READY_TIMEOUT_S", 0.25)
    process = spawn_workload(["--comm=held"])
    try:
        with pytest.raises(WorkloadError, match=r"not ready after 0\.5 s \(pace 2\.00;"):
            await_ready([process])
    finally:
        kill(process)
