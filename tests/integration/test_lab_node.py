"""SimulatedNode under a plain directory standing in for /sys/fs/cgroup, with real processes.

What runs without root cgroups: kubelet's CPU arithmetic, the tree's layout and files (checked
against `pod_cgroup_path` and `read_pod_cgroups`, the planner's and the agent's own view), the
workload processes and their thread names (read from the real /proc), and cleanup. The real
cgroup v2 behaviour (controllers, processes really moved) is the lab tier's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from builders import make_pod
from temper.host.podcgroups import CGROUP_DIR, PodCgroup, read_cgroup_pids, read_pod_cgroups
from temper.policy.cgroups import CgroupDriver, container_cgroup_path, pod_cgroup_path
from temper.policy.tiers import QosClass
from temper_testing.lab.node import (
    Container,
    NodeError,
    SimulatedNode,
    Thread,
    container_id,
    cpu_max,
    cpu_shares,
    cpu_weight_from_shares,
    sandbox_id,
)
from temper_testing.lab.processes import (
    await_ready,
    kill,
    release,
    spawn_in,
    spawn_workload,
)
from temper_testing.lab.workload import ThreadSpec, parse_thread_spec
from waiting import wait_until

UID = "5f0c6a8e-2b1d-4c3e-9f7a-1b2c3d4e5f60"
OTHER_UID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
NODE_CPU_MILLIS = 4000  # 4096 shares: kubepods weight 157
WAIT_S = 10.0

NodeMaker = Callable[..., SimulatedNode]


@pytest.fixture
def cgroup_root(tmp_path: Path) -> Path:
    """A plain directory where the cgroup root would be: `<host root>/sys/fs/cgroup`."""
    root = tmp_path / CGROUP_DIR
    root.mkdir(parents=True)
    return root


@pytest.fixture
def make_node(cgroup_root: Path) -> Iterator[NodeMaker]:
    """make_node(driver) -> a set-up SimulatedNode over `cgroup_root`, closed after the test."""
    nodes: list[SimulatedNode] = []

    def make(driver: CgroupDriver = CgroupDriver.SYSTEMD) -> SimulatedNode:
        node = SimulatedNode(cgroup_root, driver, node_cpu_millis=NODE_CPU_MILLIS)
        nodes.append(node)
        node.setup()
        return node

    yield make
    for node in nodes:
        node.close()


def read(path: Path) -> str:
    return path.read_text(encoding="ascii").strip()


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def task_comms(pid: int) -> list[str]:
    task = Path(f"/proc/{pid}/task")
    return sorted(read(tid / "comm") for tid in task.iterdir())


def cpu_ticks(pid: int, tid: int) -> int:
    """utime + stime of one thread, in clock ticks."""
    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text(encoding="ascii")
    fields = stat.rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


# Kubelet's arithmetic.


@pytest.mark.parametrize(
    ("millicores", "shares", "weight"),
    [
        (0, 2, 1),
        (1, 2, 1),
        (100, 102, 4),
        (500, 512, 20),
        (1000, 1024, 39),
        (4000, 4096, 157),
        (256_000, 262_144, 10_000),
        (1_000_000, 262_144, 10_000),
    ],
)
def test_kubelet_shares_and_weights(millicores: int, shares: int, weight: int) -> None:
    assert cpu_shares(millicores) == shares
    assert cpu_weight_from_shares(shares) == weight


def test_weight_ends_and_invalid_shares() -> None:
    assert cpu_weight_from_shares(2) == 1
    assert cpu_weight_from_shares(262_144) == 10_000
    assert cpu_weight_from_shares(10**9) == 10_000
    with pytest.raises(ValueError, match="below the minimum"):
        cpu_weight_from_shares(1)


@given(st.integers(0, 400_000), st.integers(0, 400_000))
def test_weight_is_monotonic_and_in_range(a: int, b: int) -> None:
    low, high = sorted((a, b))
    weights = [cpu_weight_from_shares(cpu_shares(m)) for m in (low, high)]
    assert 1 <= weights[0] <= weights[1] <= 10_000


@pytest.mark.parametrize(
    ("limit", "period", "expected"),
    [
        (500, 100_000, "50000 100000"),
        (None, 100_000, "max 100000"),
        (0, 100_000, "max 100000"),
        (2000, 100_000, "200000 100000"),
        (5, 100_000, "1000 100000"),  # below kubelet's 1000 us minimum quota
        (250, 50_000, "12500 50000"),
    ],
)
def test_cpu_max(limit: int | None, period: int, expected: str) -> None:
    assert cpu_max(limit, period) == expected


def test_container_ids_are_reproducible_sha256() -> None:
    ids = {container_id(UID, "app"), container_id(UID, "db"), sandbox_id(UID)}
    assert len(ids) == 3
    assert all(len(i) == 64 and int(i, 16) >= 0 for i in ids)
    assert container_id(UID, "app") == container_id(UID, "app") != container_id(OTHER_UID, "app")


# Containers, threads and the workload's arguments.


@pytest.mark.parametrize("comm", ["", "sixteen-bytes-xx", "é" * 8, "a\nb"])
def test_thread_names_the_kernel_would_cut_are_refused(comm: str) -> None:
    with pytest.raises(ValueError, match="comm"):
        Thread(comm)


def test_container_validation() -> None:
    assert Container("fifteen-bytes-x-and-more").comm == "fifteen-bytes-x"
    for bad in ("", "a/b", "POD"):
        with pytest.raises(ValueError, match="container name"):
            Container(bad)
    with pytest.raises(ValueError, match="negative"):
        Container("app", spin_processes=-1)


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("worker", ThreadSpec("worker", spin=False)),
        ("worker:spin", ThreadSpec("worker", spin=True)),
        ("worker:sleep", ThreadSpec("worker", spin=False)),
        ("kworker/0:1", ThreadSpec("kworker/0:1", spin=False)),
        ("a:spin:sleep", ThreadSpec("a:spin", spin=False)),
    ],
)
def test_thread_specs_parse_and_round_trip(text: str, spec: ThreadSpec) -> None:
    assert parse_thread_spec(text) == spec
    assert parse_thread_spec(spec.argument) == spec


# The tree.


@pytest.mark.parametrize("driver", list(CgroupDriver))
def test_setup_makes_kubepods_and_qos_slices_with_kubelet_weights(
    make_node: NodeMaker, cgroup_root: Path, driver: CgroupDriver
) -> None:
    node = make_node(driver)
    assert not node.is_cgroup_fs
    kubepods = pod_cgroup_path(QosClass.GUARANTEED, UID, driver).split("/")[0]
    burstable, besteffort = (
        pod_cgroup_path(qos, UID, driver).rsplit("/", 2)[0]
        for qos in (QosClass.BURSTABLE, QosClass.BEST_EFFORT)
    )
    made = {str(p.relative_to(cgroup_root)) for p in cgroup_root.rglob("*") if p.is_dir()}
    assert made == {kubepods, burstable, besteffort}
    assert read(cgroup_root / kubepods / "cpu.weight") == "157"
    assert read(cgroup_root / burstable / "cpu.weight") == "1"  # no burstable pods: 2 shares
    assert read(cgroup_root / besteffort / "cpu.weight") == "1"
    assert not list(cgroup_root.rglob("cgroup.subtree_control"))  # not a cgroup fs: no enabling


# qos, request, limit (millicores) -> the pod's and its one container's cpu.weight and cpu.max
POD_CASES = {
    "guaranteed": (QosClass.GUARANTEED, 500, 500, "20", "50000 100000"),
    "burstable": (QosClass.BURSTABLE, 100, None, "4", "max 100000"),
    "burstable-limited": (QosClass.BURSTABLE, 1000, 2000, "39", "200000 100000"),
    "besteffort": (QosClass.BEST_EFFORT, 0, None, "1", "max 100000"),
}
PodCase = tuple[QosClass, int, int | None, str, str]


@pytest.mark.parametrize("driver", list(CgroupDriver))
@pytest.mark.parametrize("case", list(POD_CASES.values()), ids=list(POD_CASES))
def test_pod_cgroups_are_where_the_planner_and_the_agent_look(
    make_node: NodeMaker, tmp_path: Path, driver: CgroupDriver, case: PodCase
) -> None:
    qos, request, limit, weight, quota = case
    cgroup_root = tmp_path / CGROUP_DIR
    node = make_node(driver)
    pod = make_pod("web", qos, request=request, limit=limit, uid=UID)
    running = node.add_pod(pod, [Container("app", cpu_millis=request, cpu_limit_millis=limit)])

    path = pod_cgroup_path(qos, UID, driver)
    app_path = container_cgroup_path(path, container_id(UID, "app"), driver)
    assert running.path == path
    assert running.sandbox_path == container_cgroup_path(path, sandbox_id(UID), driver)
    assert running.container_paths == {"app": app_path}
    scopes = sorted(p.rstrip("/").rpartition("/")[2] for p in (running.sandbox_path, app_path))
    assert read_pod_cgroups(tmp_path, driver) == {
        UID: PodCgroup(uid=UID, path=path, containers=tuple(scopes))
    }
    assert read(cgroup_root / path / "cpu.weight") == weight
    assert read(cgroup_root / path / "cpu.max") == quota
    assert read(cgroup_root / app_path / "cpu.weight") == weight
    assert read(cgroup_root / app_path / "cpu.max") == quota
    assert read(cgroup_root / running.sandbox_path / "cpu.weight") == "1"  # containerd: 2 shares
    assert read(cgroup_root / running.sandbox_path / "cpu.max") == "max 100000"


def test_burstable_slice_weight_follows_the_burstable_requests(
    make_node: NodeMaker, cgroup_root: Path
) -> None:
    node = make_node()
    slice_weight = cgroup_root / "kubepods.slice/kubepods-burstable.slice/cpu.weight"
    node.add_pod(make_pod("a", QosClass.BURSTABLE, request=300, uid=UID), [])
    node.add_pod(make_pod("b", QosClass.BURSTABLE, request=700, uid=OTHER_UID), [])
    node.add_pod(make_pod("c", QosClass.GUARANTEED, request=4000, limit=4000), [])
    assert read(slice_weight) == "39"  # 1000m -> 1024 shares
    node.remove_pod(UID)
    assert read(slice_weight) == "28"  # 700m -> 716 shares
    node.remove_pod(OTHER_UID)
    assert read(slice_weight) == "1"


# The processes.


def test_workloads_run_with_their_thread_names_in_their_cgroups(
    make_node: NodeMaker, tmp_path: Path
) -> None:
    node = make_node()
    app = Container("app", threads=(Thread("worker-1"), Thread("worker-2"), Thread("hot", True)))
    batch = Container("batch", spin_processes=2, spin_comm="cruncher")
    running = node.add_pod(make_pod("web", uid=UID), [app, batch])

    (app_pid,) = running.containers["app"]
    assert len(running.containers["batch"]) == 3  # the main process and two spinners
    assert task_comms(app_pid) == ["app", "hot", "worker-1", "worker-2"]
    assert task_comms(running.sandbox_pid) == ["pause"]
    for spinner in running.containers["batch"][1:]:
        assert task_comms(spinner) == ["batch", "cruncher"]
    threads = running.thread_ids()
    assert sorted(threads) == ["app", "batch", "cruncher", "hot", "pause", "worker-1", "worker-2"]
    assert threads["app"] == [app_pid]
    assert threads["pause"] == [running.sandbox_pid]
    assert threads["batch"] == sorted(running.containers["batch"])
    assert len(threads["cruncher"]) == 2
    assert all(Path(f"/proc/{app_pid}/task/{tid}").exists() for tid in threads["worker-1"])
    for name, pids in running.containers.items():
        assert read_cgroup_pids(tmp_path, running.container_paths[name]) == tuple(pids)
    assert read_cgroup_pids(tmp_path, running.sandbox_path) == (running.sandbox_pid,)


def test_spinning_threads_burn_cpu(make_node: NodeMaker) -> None:
    node = make_node()
    app = Container("app", threads=(Thread("hot", spin=True),))
    running = node.add_pod(make_pod("web", uid=UID), [app])
    (pid,) = running.containers["app"]
    (tid,) = running.thread_ids()["hot"]
    wait_until(lambda: cpu_ticks(pid, tid) >= 5, WAIT_S, "5 ticks of CPU")


def test_spawn_in_places_the_command_before_it_runs(tmp_path: Path) -> None:
    container = tmp_path / "container"
    container.mkdir()
    ran = tmp_path / "ran"
    process = spawn_in(container, ["sh", "-c", f'cat /proc/self/status > "{ran}"'])
    assert process.wait(WAIT_S) == 0
    assert (container / "cgroup.procs").read_text() == f"{process.pid}\n"
    # exec keeps the pid: the command ran as the very process that was placed
    assert f"Pid:\t{process.pid}\n" in ran.read_text()


def test_spawn_in_refuses_a_missing_container(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        spawn_in(tmp_path / "gone")


def test_close_kills_every_process_and_removes_the_tree(cgroup_root: Path) -> None:
    node = SimulatedNode(cgroup_root, node_cpu_millis=NODE_CPU_MILLIS)
    with node:
        first = node.add_pod(
            make_pod("a", QosClass.GUARANTEED, request=500, limit=500, uid=UID),
            [Container("app", 500, 500, (Thread("hot", spin=True),), spin_processes=1)],
        )
        second = node.add_pod(make_pod("b", QosClass.BEST_EFFORT, request=0, uid=OTHER_UID), [])
        pids = first.pids() + second.pids()
        assert len(pids) == 4  # two sandboxes, the app's main process and its spinner
        assert all(alive(pid) for pid in pids)
    assert not any(alive(pid) for pid in pids)
    assert list(cgroup_root.iterdir()) == []
    assert node.pods == {}


def test_remove_pod_leaves_the_other_pods(make_node: NodeMaker, cgroup_root: Path) -> None:
    node = make_node()
    gone = node.add_pod(make_pod("a", uid=UID), [Container("app")])
    kept = node.add_pod(make_pod("b", uid=OTHER_UID), [Container("app")])
    node.remove_pod(UID)
    assert not any(alive(pid) for pid in gone.pids())
    assert not (cgroup_root / gone.path).exists()
    assert all(alive(pid) for pid in kept.pids())
    assert (cgroup_root / kept.container_paths["app"]).is_dir()
    assert list(node.pods) == [OTHER_UID]
    with pytest.raises(KeyError):
        node.remove_pod(UID)


def test_a_pod_that_cannot_be_added_leaves_nothing_behind(
    make_node: NodeMaker, cgroup_root: Path
) -> None:
    node = make_node()
    node.add_pod(make_pod("a", uid=UID), [])
    with pytest.raises(NodeError, match="already running"):
        node.add_pod(make_pod("a", uid=UID), [])
    with pytest.raises(NodeError, match="duplicate"):
        node.add_pod(make_pod("b", uid=OTHER_UID), [Container("app"), Container("app")])
    squatter = cgroup_root / pod_cgroup_path(QosClass.BURSTABLE, OTHER_UID, CgroupDriver.SYSTEMD)
    squatter.mkdir()
    with pytest.raises(NodeError, match="cannot make the cgroup"):
        node.add_pod(make_pod("b", uid=OTHER_UID), [Container("app")])
    assert list(squatter.iterdir()) == []  # the existing directory is not ours to fill or remove
    assert list(node.pods) == [UID]
    squatter.rmdir()


# A real cgroup v2 root, as far as a plain directory can play one.


@pytest.mark.parametrize(
    ("available", "enabled"),
    [("cpuset cpu io memory pids", "+cpu +cpuset"), ("cpu io memory pids", "+cpu")],
)
def test_controllers_are_enabled_at_each_level_of_a_cgroup_fs(
    cgroup_root: Path, available: str, enabled: str
) -> None:
    (cgroup_root / "cgroup.controllers").write_text(available + "\n", encoding="ascii")
    node = SimulatedNode(cgroup_root, node_cpu_millis=NODE_CPU_MILLIS)
    assert node.is_cgroup_fs
    node.setup()  # not closed: a plain directory cannot drop its files on rmdir as cgroupfs does
    for level in ("", "kubepods.slice", "kubepods.slice/kubepods-burstable.slice"):
        assert read(cgroup_root / level / "cgroup.subtree_control") == enabled
    assert read(cgroup_root / "kubepods.slice/kubepods-besteffort.slice/cpu.weight") == "1"


def test_a_cgroup_fs_without_the_cpu_controller_is_refused(cgroup_root: Path) -> None:
    (cgroup_root / "cgroup.controllers").write_text("memory pids\n", encoding="ascii")
    with pytest.raises(NodeError, match="cpu controller"):
        SimulatedNode(cgroup_root).setup()
    assert [p.name for p in cgroup_root.iterdir()] == ["cgroup.controllers"]


def test_a_workload_exits_when_its_parent_pipe_closes() -> None:
    """The lifeline: once the parent's end of the start pipe closes, the workload exits."""
    process = spawn_workload(["--comm=orphan", "--thread=hot:spin"])
    try:
        release(process)
        await_ready([process])
        assert task_comms(process.pid) == ["hot", "orphan"]
        process.close_pipes()  # as the parent dying would
        assert process.popen.wait(WAIT_S) == 0
    finally:
        kill(process)
