"""Thread and PSI readers on fake trees and on this machine's own /proc (rows E1, E2, E3)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from temper.host.errors import HostReadError
from temper.host.psi import PressureReader
from temper.host.threads import Container, ThreadReader, read_pod_threads
from temper.policy.cgroups import CgroupDriver, pod_cgroup_path
from temper.policy.observe import Pressure, ThreadStat
from temper.policy.tiers import QosClass
from temper_testing.host.fakecgroups import write_fake_pod_cgroup

UID = "5f0c6a8e-2b1d-4c3e-9f7a-1b2c3d4e5f60"
POD_PATH = pod_cgroup_path(QosClass.BURSTABLE, UID, CgroupDriver.SYSTEMD)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- fake trees ---------------------------------------------------------------------------------


def stat_line(tid: int, comm: str, *, start: int, cpu: int, state: str = "S") -> str:
    """A /proc/<tid>/stat line of 52 fields; every other field holds a distinct decoy number."""
    fields = [str(1000 + number) for number in range(1, 53)]  # fields[n - 1] is field n
    fields[0], fields[1], fields[2] = str(tid), f"({comm})", state
    fields[21] = str(start)  # field 22: starttime, in clock ticks since boot
    fields[38] = str(cpu)  # field 39: processor, the CPU it last ran on
    return " ".join(fields) + "\n"


def write_thread(
    root: Path,
    tid: int,
    comm: str = "worker",
    *,
    start: int = 5000,
    cpu: int = 3,
    run_ns: int = 123_456_789,
    wait_ns: int = 4_567,
) -> None:
    directory = root / "proc" / str(tid)
    directory.mkdir(parents=True, exist_ok=True)
    # write_text truncates and rewrites the same inode: a kept descriptor sees the new text.
    (directory / "stat").write_text(stat_line(tid, comm, start=start, cpu=cpu))
    (directory / "schedstat").write_text(f"{run_ns} {wait_ns} 42\n")


def write_process(root: Path, pid: int, tids: tuple[int, ...]) -> None:
    for tid in tids:
        (root / "proc" / str(pid) / "task" / str(tid)).mkdir(parents=True)


def write_pod(root: Path) -> Path:
    """A pod with a sandbox (pid 10, one thread) and an app container (pids 20, 30) that has a
    cpuset; pid 30 has exited since cgroup.procs was read."""
    pod_dir = write_fake_pod_cgroup(
        root,
        QosClass.BURSTABLE,
        UID,
        CgroupDriver.SYSTEMD,
        containers=("sandbox", "app"),
        pids=(10,),
    )
    (pod_dir / "app" / "cgroup.procs").write_text("20\n30\n")
    (pod_dir / "app" / "cpuset.cpus.effective").write_text("0-1,4\n")
    (pod_dir / "cpu.pressure").write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    write_process(root, 10, (10,))
    write_process(root, 20, (20, 21, 22))
    return pod_dir


def test_pod_threads_are_found_per_container_with_their_cpuset(tmp_path: Path) -> None:
    write_pod(tmp_path)
    found = read_pod_threads(tmp_path, POD_PATH)
    assert [c.name for c in found] == ["app", "sandbox"]
    app, sandbox = found
    assert sorted(app.tids) == [20, 21, 22]
    assert app.cpuset == (0, 1, 4)
    assert sandbox == Container("sandbox", (10,), None)


def test_a_containers_cgroup_threads_names_its_threads_when_present(tmp_path: Path) -> None:
    pod_dir = write_pod(tmp_path)
    (pod_dir / "app" / "cgroup.threads").write_text("20\n21\n22\n23\n")  # cgroup v2
    app = read_pod_threads(tmp_path, POD_PATH)[0]
    assert sorted(app.tids) == [20, 21, 22, 23]  # 23 is not under /proc/20/task: the file wins


def test_a_pod_path_with_leading_slash_is_the_same_pod(tmp_path: Path) -> None:
    write_pod(tmp_path)
    assert read_pod_threads(tmp_path, "/" + POD_PATH) == read_pod_threads(tmp_path, POD_PATH)


def test_a_vanished_pod_has_no_threads(tmp_path: Path) -> None:
    assert read_pod_threads(tmp_path, POD_PATH) == ()


def test_a_container_vanishing_mid_read_is_empty(tmp_path: Path) -> None:
    pod_dir = write_pod(tmp_path)
    (pod_dir / "app" / "cgroup.procs").unlink()  # as the kernel's rmdir leaves it, for a moment
    (pod_dir / "app" / "cpuset.cpus.effective").unlink()
    app = read_pod_threads(tmp_path, POD_PATH)[0]
    assert app == Container("app", (), None)


def test_a_cgroup_procs_that_is_not_ids_is_an_error_naming_it(tmp_path: Path) -> None:
    pod_dir = write_pod(tmp_path)
    (pod_dir / "app" / "cgroup.procs").write_text("twenty\n")
    with pytest.raises(HostReadError) as raised:
        read_pod_threads(tmp_path, POD_PATH)
    assert raised.value.path == pod_dir / "app" / "cgroup.procs"


def test_a_thread_is_read_with_an_awkward_name(tmp_path: Path) -> None:
    write_thread(tmp_path, 123, "my (weird) comm", start=777, cpu=5, run_ns=900, wait_ns=80)
    assert ThreadReader(tmp_path).read(123) == ThreadStat(
        tid=123, start_ticks=777, comm="my (weird) comm", last_cpu=5, run_ns=900, wait_ns=80
    )


def test_a_missing_thread_reads_as_none(tmp_path: Path) -> None:
    reader = ThreadReader(tmp_path)
    before = open_fds()
    assert reader.read(999) is None
    assert reader.open_threads == 0
    assert open_fds() == before


def test_a_thread_whose_schedstat_vanished_reads_as_none_without_a_leak(tmp_path: Path) -> None:
    write_thread(tmp_path, 123)
    (tmp_path / "proc" / "123" / "schedstat").unlink()
    reader = ThreadReader(tmp_path)
    before = open_fds()
    assert reader.read(123) is None
    assert open_fds() == before


def test_a_thread_read_empty_mid_exit_reads_as_none(tmp_path: Path) -> None:
    write_thread(tmp_path, 123)
    reader = ThreadReader(tmp_path)
    assert reader.read(123) is not None
    (tmp_path / "proc" / "123" / "stat").write_text("")
    assert reader.read(123) is None
    assert reader.open_threads == 0


def test_a_reused_tid_is_a_different_thread(tmp_path: Path) -> None:
    write_thread(tmp_path, 123, "old", start=5000)
    reader = ThreadReader(tmp_path)
    first = reader.read(123)
    write_thread(tmp_path, 123, "new", start=9000)  # the tid came back with a new start time
    second = reader.read(123)
    assert first is not None
    assert second is not None
    assert first.key == (123, 5000)
    assert second.key == (123, 9000)
    assert second.comm == "new"


def test_a_reused_tid_read_afresh_is_a_different_thread(tmp_path: Path) -> None:
    write_thread(tmp_path, 123, start=5000)
    first = ThreadReader(tmp_path).read(123)
    (tmp_path / "proc" / "123" / "stat").unlink()
    write_thread(tmp_path, 123, start=9000)
    second = ThreadReader(tmp_path).read(123)
    assert first is not None
    assert second is not None
    assert first.key != second.key


@pytest.mark.parametrize(
    ("stat", "schedstat"),
    [
        pytest.param("garbage\n", "1 2 3\n", id="stat-without-fields"),
        pytest.param("123 (short) S 1 2 3\n", "1 2 3\n", id="stat-cut-short"),
        pytest.param(stat_line(123, "w", start=1, cpu=0), "one two\n", id="schedstat-words"),
        pytest.param(stat_line(123, "w", start=1, cpu=0), "7\n", id="schedstat-one-field"),
    ],
)
def test_a_malformed_thread_is_an_error_naming_it(
    tmp_path: Path, stat: str, schedstat: str
) -> None:
    directory = tmp_path / "proc" / "123"
    directory.mkdir(parents=True)
    (directory / "stat").write_text(stat)
    (directory / "schedstat").write_text(schedstat)
    reader = ThreadReader(tmp_path)
    with pytest.raises(HostReadError) as raised:
        reader.read(123)
    assert raised.value.path == directory / "stat"
    assert reader.open_threads == 0


def test_descriptors_are_kept_and_closed_for_threads_no_longer_found(tmp_path: Path) -> None:
    for tid in (1, 2, 3):
        write_thread(tmp_path, tid)
    reader = ThreadReader(tmp_path)
    before = open_fds()
    for tid in (1, 2, 3):
        assert reader.read(tid) is not None
    assert reader.open_threads == 3
    assert open_fds() == before + 6  # stat and schedstat of each
    reader.keep_only([2, 7])
    assert reader.open_threads == 1
    assert open_fds() == before + 2
    assert reader.read(2) is not None  # through the kept descriptors
    assert open_fds() == before + 2
    reader.close()
    assert reader.open_threads == 0
    assert open_fds() == before


def test_beyond_max_open_a_read_opens_and_closes(tmp_path: Path) -> None:
    for tid in (1, 2, 3):
        write_thread(tmp_path, tid, start=tid)
    reader = ThreadReader(tmp_path, max_open=1)
    before = open_fds()
    stats = [reader.read(tid) for tid in (1, 2, 3)]
    assert [s.key for s in stats if s is not None] == [(1, 1), (2, 2), (3, 3)]
    assert reader.open_threads == 1
    assert open_fds() == before + 2
    reader.close()


# -- this machine's /proc -----------------------------------------------------------------------


class Sleepers:
    """`count` threads of this process that name themselves and wait until stopped."""

    def __init__(self, count: int) -> None:
        self.stop = threading.Event()
        self.tids: list[int] = []
        self._ready = threading.Barrier(count + 1)
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(n,), name=f"sleeper-{n}") for n in range(count)
        ]

    def _run(self, number: int) -> None:
        Path("/proc/thread-self/comm").write_text(f"tmp sleep ({number})")
        with self._lock:
            self.tids.append(threading.get_native_id())
        self._ready.wait()
        self.stop.wait()

    def __enter__(self) -> Sleepers:
        for thread in self.threads:
            thread.start()
        self._ready.wait(timeout=10)
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


def read_until_gone(reader: ThreadReader, tids: list[int], deadline_s: float = 10.0) -> None:
    """Read each tid until it reads as None: a joined thread may linger a moment to be reaped."""
    end = time.monotonic() + deadline_s
    pending = set(tids)
    while pending and time.monotonic() < end:
        pending = {tid for tid in pending if reader.read(tid) is not None}
        if pending:
            time.sleep(0.01)
    assert not pending, f"threads {sorted(pending)} still read after they stopped"


def test_real_threads_are_read_and_read_as_gone_once_stopped() -> None:
    reader = ThreadReader(Path("/"))
    before = open_fds()
    process_start = int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19])
    with Sleepers(20) as sleepers:
        stats = {tid: reader.read(tid) for tid in sleepers.tids}
        assert reader.open_threads == 20
        assert open_fds() == before + 40
        for tid, stat in stats.items():
            assert stat is not None
            assert stat.tid == tid
            assert stat.last_cpu in range(os.cpu_count() or 1)
            assert stat.comm.startswith("tmp sleep (")
            assert stat.start_ticks >= process_start
            assert stat.run_ns > 0
    read_until_gone(reader, sleepers.tids)
    assert reader.open_threads == 0
    assert open_fds() == before


def test_reading_threads_that_come_and_go_raises_nothing() -> None:
    """Row E1: threads exit between listing /proc/self/task and reading them."""
    stop = threading.Event()
    churner_failed: list[BaseException] = []

    def churn() -> None:
        try:
            while not stop.is_set():
                batch = [threading.Thread(target=lambda: None) for _ in range(8)]
                for thread in batch:
                    thread.start()
                for thread in batch:
                    thread.join()
        except BaseException as exc:  # reported below, not lost in the thread
            churner_failed.append(exc)

    churner = threading.Thread(target=churn, name="churner")
    reader = ThreadReader(Path("/"), max_open=64)
    reads = gone = 0
    churner.start()
    try:
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            tids = [int(name) for name in os.listdir("/proc/self/task")]
            for tid in tids:
                reads += 1
                gone += reader.read(tid) is None
            reader.keep_only(tids)
    finally:
        stop.set()
        churner.join(timeout=10)
        reader.close()
    assert not churner_failed
    assert reads > 0
    print(f"E1 stress: {reads} reads, {gone} of threads gone between listing and reading")


# -- pressure -----------------------------------------------------------------------------------

NODE_TEXT = (
    "some avg10=2.38 avg60=1.27 avg300=0.85 total=1896882855\n"
    "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
)
OTHER_UID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
OTHER_PATH = pod_cgroup_path(QosClass.BEST_EFFORT, OTHER_UID, CgroupDriver.SYSTEMD)


def psi(avg10: float, total: int) -> str:
    return f"some avg10={avg10:.2f} avg60=0.50 avg300=0.25 total={total}\n"


@pytest.fixture
def psi_root(tmp_path: Path) -> Path:
    (tmp_path / "proc" / "pressure").mkdir(parents=True)
    (tmp_path / "proc" / "pressure" / "cpu").write_text(NODE_TEXT)
    for path in (POD_PATH, OTHER_PATH):
        cgroup = tmp_path / "sys" / "fs" / "cgroup" / path
        cgroup.mkdir(parents=True)
        (cgroup / "cpu.pressure").write_text(psi(1.0, 1000))
    return tmp_path


@pytest.fixture
def pressure(psi_root: Path) -> Iterator[PressureReader]:
    reader = PressureReader(psi_root)
    yield reader
    reader.close()


def cgroup_psi(root: Path, path: str) -> Path:
    return root / "sys" / "fs" / "cgroup" / path / "cpu.pressure"


def test_node_pressure_is_read(pressure: PressureReader) -> None:
    assert pressure.read_node() == Pressure(2.38, 1.27, 1_896_882_855, 0.0, 0)


def test_a_rewritten_file_is_seen_on_the_next_read_through_one_descriptor(
    psi_root: Path, pressure: PressureReader
) -> None:
    before = open_fds()
    assert pressure.read_cgroup(POD_PATH) == Pressure(1.0, 0.5, 1000)
    assert open_fds() == before + 1
    cgroup_psi(psi_root, POD_PATH).write_text(psi(42.5, 99_000))  # in place, as the kernel does
    assert pressure.read_cgroup(POD_PATH) == Pressure(42.5, 0.5, 99_000)
    assert open_fds() == before + 1


def test_a_missing_cgroup_or_psi_file_reads_as_none(tmp_path: Path) -> None:
    reader = PressureReader(tmp_path)
    assert reader.read_cgroup("kubepods.slice/gone.slice") is None
    assert reader.read_node() is None  # a kernel without PSI


def test_keep_only_closes_the_files_of_cgroups_that_left(
    psi_root: Path, pressure: PressureReader
) -> None:
    before = open_fds()
    pressure.read_node()
    pressure.read_cgroup(POD_PATH)
    pressure.read_cgroup(OTHER_PATH)
    assert open_fds() == before + 3
    pressure.keep_only(["/" + POD_PATH])
    assert open_fds() == before + 2  # the node's file and POD_PATH's stay
    cgroup_psi(psi_root, POD_PATH).write_text(psi(7.0, 7))
    assert pressure.read_cgroup(POD_PATH) == Pressure(7.0, 0.5, 7)
    assert open_fds() == before + 2
    pressure.close()
    assert open_fds() == before


def test_a_psi_file_that_is_not_psi_is_an_error_naming_it(
    psi_root: Path, pressure: PressureReader
) -> None:
    cgroup_psi(psi_root, POD_PATH).write_text("nonsense\n")
    with pytest.raises(HostReadError) as raised:
        pressure.read_cgroup(POD_PATH)
    assert raised.value.path == cgroup_psi(psi_root, POD_PATH)


def test_this_machines_node_pressure_parses() -> None:
    reader = PressureReader(Path("/"))
    try:
        pressure = reader.read_node()
        assert pressure is not None, "/proc/pressure/cpu is missing on this machine"
        assert pressure.some_avg10 >= 0
        assert pressure.some_total_us >= 0
        again = reader.read_node()
        assert again is not None
        assert again.some_total_us >= pressure.some_total_us
    finally:
        reader.close()
