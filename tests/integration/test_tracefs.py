"""capture_sched_trace against the real tracefs of this machine, mounted at a temporary directory.

The mount needs root (CAP_SYS_ADMIN) and a kernel with tracefs. Where it fails, the tests fail
with the reason; like the rest of the suite they never skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from temper.host.errors import TraceBusy, TracefsError
from temper.host.tracefs import MAX_PIDS, PID_MAX_LIMIT, capture_sched_trace
from temper.policy.schedtrace import MAX_BYTES, parse_sched_trace, summarize_wake_to_run
from waiting import wait_until

SLEEPER = "import time\nwhile True: time.sleep(0.001)"
SPINNER = "while True: pass"
HEADER = re.compile(r"\A# tracer: nop\n#\n# entries-in-buffer/entries-written: \d+/\d+   #P:\d+\n")


@pytest.fixture(scope="session")
def tracefs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """tracefs mounted at a fresh directory for this session, unmounted at its end."""
    mount_point = tmp_path_factory.mktemp("tracefs")
    command = ["mount", "-t", "tracefs", "nodev", str(mount_point)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
        said = " ".join(done.stderr.split())
        problem = "" if done.returncode == 0 else said or f"exit {done.returncode}"
    except OSError as exc:
        problem = str(exc)
    if problem:
        pytest.fail(f"cannot mount tracefs ({' '.join(command)}): {problem}", pytrace=False)
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True, timeout=30)


@pytest.fixture
def instance() -> str:
    """An instance name of this test's own, so a failing test cannot clobber another's."""
    return f"temper-test-{uuid.uuid4().hex[:8]}"


@contextmanager
def running(code: str, cpu: int | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A Python child running `code`, pinned to `cpu` when given; killed on the way out."""
    pin = f"import os; os.sched_setaffinity(0, {{{cpu}}})\n" if cpu is not None else ""
    child = subprocess.Popen([sys.executable, "-c", pin + code])
    try:
        time.sleep(0.2)  # past interpreter start-up, into the loop
        yield child
    finally:
        child.kill()
        child.wait()


def test_captures_a_threads_wakeups_and_runs(tracefs: Path, instance: str, tmp_path: Path) -> None:
    # A spinner on the sleeper's CPU means the sleeper is switched in from a running task rather
    # than from idle: on the 6.18 VM this was written on, switches out of CPU 1's idle task are
    # never recorded, which would leave every wakeup there unmatched.
    cpu = min(os.sched_getaffinity(0))
    out = tmp_path / "sched.trace"
    with running(SLEEPER, cpu) as sleeper, running(SPINNER, cpu):
        capture = capture_sched_trace(
            tracefs, out, seconds=1.0, max_bytes=MAX_BYTES, pids=[sleeper.pid], instance=instance
        )
    text = out.read_text()
    assert HEADER.match(text), text[:400]
    pid = sleeper.pid
    assert re.search(rf"sched_switch: .* next_pid={pid} next_prio=", text)
    assert re.search(rf"sched_switch: .*prev_pid={pid} prev_prio=.* ==> ", text)
    assert re.search(rf"sched_wakeup: comm=\S+ pid={pid} prio=", text)
    events = [line for line in text.splitlines() if not line.startswith("#")]
    # The filter held: the sleeper is switched in or out, woken, or the running task (a wakeup
    # the sleeper makes of another thread, e.g. rcu_preempt from a softirq, is kept too).
    strays = [line for line in events if not re.search(rf"-{pid}\s|[\s_]pid={pid}\s", line)]
    assert not strays, strays[:5]
    assert capture.path == out
    assert capture.size_bytes == out.stat().st_size
    assert capture.events == len(parse_sched_trace(text.splitlines()).events) == len(events)
    assert not capture.truncated
    assert capture.seconds >= 1.0
    (row,) = summarize_wake_to_run(
        text.splitlines(), {pid: "latency-critical"}, ["latency-critical"]
    )
    assert row.count > 0
    assert row.max_us is not None
    assert row.max_us > 0
    assert not (tracefs / "instances" / instance).exists()


def test_output_is_cut_at_max_bytes_on_a_line_boundary(
    tracefs: Path, instance: str, tmp_path: Path
) -> None:
    out = tmp_path / "sched.trace"
    with running(SLEEPER):
        capture = capture_sched_trace(
            tracefs, out, seconds=1.0, max_bytes=64 * 1024, pids=None, instance=instance
        )
    data = out.read_bytes()
    assert capture.truncated
    assert capture.size_bytes == len(data) <= 64 * 1024
    assert len(data) > 60 * 1024  # cut at the last whole line, not far before
    assert data.endswith(b"\n")
    assert HEADER.match(data.decode(errors="replace"))
    assert capture.events == len(parse_sched_trace(data.decode().splitlines()).events) > 0


def test_a_second_capture_while_one_runs_is_busy(
    tracefs: Path, instance: str, tmp_path: Path
) -> None:
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            capture_sched_trace,
            tracefs,
            tmp_path / "first.trace",
            seconds=1.0,
            max_bytes=1024 * 1024,
            pids=None,
            instance=instance,
        )
        made = tracefs / "instances" / instance
        wait_until(lambda: made.is_dir() or first.done(), 10, "the first capture's instance")
        with pytest.raises(TraceBusy, match="already running"):
            capture_sched_trace(
                tracefs,
                tmp_path / "second.trace",
                seconds=0.1,
                max_bytes=1024,
                pids=None,
                instance=f"{instance}-2",
            )
        assert first.result().size_bytes > 0
    assert not (tmp_path / "second.trace").exists()
    assert not (tracefs / "instances" / f"{instance}-2").exists()


def test_instance_is_removed_after_a_failure(tracefs: Path, instance: str, tmp_path: Path) -> None:
    out = tmp_path / "no-such-dir" / "sched.trace"
    with pytest.raises(TracefsError, match="no-such-dir"):
        capture_sched_trace(tracefs, out, seconds=0.1, max_bytes=1024, pids=None, instance=instance)
    assert not (tracefs / "instances" / instance).exists()


def test_instance_left_by_a_crash_is_replaced(tracefs: Path, instance: str, tmp_path: Path) -> None:
    (tracefs / "instances" / instance).mkdir()  # what a capture killed mid-way leaves
    capture = capture_sched_trace(
        tracefs, tmp_path / "t", seconds=0.1, max_bytes=1024 * 1024, pids=None, instance=instance
    )
    assert capture.size_bytes > 0
    assert not (tracefs / "instances" / instance).exists()


def test_missing_tracefs_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(TracefsError, match=f"{missing}: does not exist"):
        capture_sched_trace(missing, tmp_path / "t", seconds=0.1, max_bytes=1024, pids=None)


def test_directory_without_tracefs_says_how_to_mount(tmp_path: Path) -> None:
    with pytest.raises(TracefsError) as caught:
        capture_sched_trace(tmp_path, tmp_path / "t", seconds=0.1, max_bytes=1024, pids=None)
    assert str(caught.value) == (
        f"{tmp_path}: tracefs is not mounted here (mount -t tracefs nodev {tmp_path})"
    )
    assert not (tmp_path / "instances").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"seconds": 0.0}, "seconds"),
        ({"seconds": float("nan")}, "seconds"),
        ({"max_bytes": 0}, "max_bytes"),
        ({"instance": "../x"}, "instance"),
    ],
)
def test_arguments_no_request_could_mean_are_refused(
    tmp_path: Path, arguments: dict[str, object], message: str
) -> None:
    call: dict[str, object] = {"seconds": 0.1, "max_bytes": 1024, "pids": None, **arguments}
    with pytest.raises(ValueError, match=message):
        capture_sched_trace(tmp_path, tmp_path / "t", **call)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pids", "message"),
    [
        ([], "give 1 to 100000 thread ids"),
        (range(1, MAX_PIDS + 2), "give 1 to 100000 thread ids"),
        ([0], "thread ids must be from 1 to"),
        ([PID_MAX_LIMIT + 1], "thread ids must be from 1 to"),
    ],
)
def test_a_pid_filter_the_kernel_cannot_take_is_refused(
    tmp_path: Path, pids: Collection[int], message: str
) -> None:
    with pytest.raises(TracefsError, match=message) as caught:
        capture_sched_trace(tmp_path, tmp_path / "t", seconds=0.1, max_bytes=1024, pids=pids)
    assert caught.value.path == tmp_path / "instances" / "temper" / "set_event_pid"
