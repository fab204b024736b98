"""read_pod_cgroups and read_cgroup_pids on fake cgroup trees written by the fake beside them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from temper.host.errors import HostReadError, HostRootMissing
from temper.host.podcgroups import CGROUP_DIR, PodCgroup, read_cgroup_pids, read_pod_cgroups
from temper.policy.cgroups import CgroupDriver, container_cgroup_path, pod_cgroup_path
from temper.policy.tiers import QosClass
from temper_testing.host.fakecgroups import write_fake_pod_cgroup

UID = "5f0c6a8e-2b1d-4c3e-9f7a-1b2c3d4e5f60"
OTHER_UID = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


@pytest.mark.parametrize("driver", list(CgroupDriver))
@pytest.mark.parametrize("qos", list(QosClass))
def test_found_paths_are_the_planned_paths(
    tmp_path: Path, qos: QosClass, driver: CgroupDriver
) -> None:
    write_fake_pod_cgroup(tmp_path, qos, UID, driver)
    assert read_pod_cgroups(tmp_path, driver) == {
        UID: PodCgroup(uid=UID, path=pod_cgroup_path(qos, UID, driver), containers=("sandbox",))
    }


@pytest.mark.parametrize("driver", list(CgroupDriver))
def test_pods_of_every_class_are_found_together(tmp_path: Path, driver: CgroupDriver) -> None:
    uids = {qos: f"{number}{UID[1:]}" for number, qos in enumerate(QosClass)}
    for qos, uid in uids.items():
        write_fake_pod_cgroup(tmp_path, qos, uid, driver)
    found = read_pod_cgroups(tmp_path, driver)
    assert {uid: found[uid].path for uid in uids.values()} == {
        uid: pod_cgroup_path(qos, uid, driver) for qos, uid in uids.items()
    }


@pytest.mark.parametrize("driver", list(CgroupDriver))
def test_containers_are_listed_sorted(tmp_path: Path, driver: CgroupDriver) -> None:
    pod_path = pod_cgroup_path(QosClass.BURSTABLE, UID, driver)
    names = [container_cgroup_path(pod_path, cid, driver)[len(pod_path) : -1] for cid in "cab"]
    write_fake_pod_cgroup(tmp_path, QosClass.BURSTABLE, UID, driver, containers=names)
    (found,) = read_pod_cgroups(tmp_path, driver).values()
    assert found.containers == tuple(sorted(names))


def test_a_pod_without_containers_has_none(tmp_path: Path) -> None:
    driver = CgroupDriver.SYSTEMD
    write_fake_pod_cgroup(tmp_path, QosClass.GUARANTEED, UID, driver, containers=())
    assert read_pod_cgroups(tmp_path, driver)[UID].containers == ()


UNRELATED = {
    CgroupDriver.SYSTEMD: [
        "system.slice/containerd.service",
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod.slice",
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podab-cd.slice",
        "kubepods.slice/kubepods-burstable.slice/kubepods-besteffort-podabcd.slice",
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podabcd.scope",
        "kubepods/podabcd",  # the other driver's layout
    ],
    CgroupDriver.CGROUPFS: [
        "system.slice/containerd.service",
        "kubepods/burstable/pod",
        "kubepods/burstable/notapod",
        "kubepods/guaranteed/podabcd",
        "kubepods.slice/kubepods-podabcd.slice",  # the other driver's layout
    ],
}
# A file where a pod directory could be: not a cgroup.
A_FILE = {
    CgroupDriver.SYSTEMD: "kubepods.slice/kubepods-pod1234.slice",
    CgroupDriver.CGROUPFS: "kubepods/pod1234",
}


@pytest.mark.parametrize("driver", list(CgroupDriver))
def test_unrelated_directories_and_files_are_ignored(tmp_path: Path, driver: CgroupDriver) -> None:
    write_fake_pod_cgroup(tmp_path, QosClass.BURSTABLE, UID, driver)
    for path in UNRELATED[driver]:
        (tmp_path / CGROUP_DIR / path).mkdir(parents=True, exist_ok=True)
    (tmp_path / CGROUP_DIR / A_FILE[driver]).write_text("")
    assert list(read_pod_cgroups(tmp_path, driver)) == [UID]


@pytest.mark.parametrize("driver", list(CgroupDriver))
def test_no_kubepods_hierarchy_means_no_pods(tmp_path: Path, driver: CgroupDriver) -> None:
    assert read_pod_cgroups(tmp_path, driver) == {}
    (tmp_path / CGROUP_DIR / "system.slice").mkdir(parents=True)
    assert read_pod_cgroups(tmp_path, driver) == {}


def test_a_missing_host_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(HostRootMissing):
        read_pod_cgroups(tmp_path / "absent", CgroupDriver.SYSTEMD)


def test_a_cgroup_directory_that_cannot_be_listed_is_an_error(tmp_path: Path) -> None:
    kubepods = tmp_path / CGROUP_DIR / "kubepods"
    kubepods.parent.mkdir(parents=True)
    kubepods.symlink_to(kubepods)  # a link loop: ELOOP, not a vanished directory
    with pytest.raises(HostReadError, match="kubepods: cannot be listed"):
        read_pod_cgroups(tmp_path, CgroupDriver.CGROUPFS)


@pytest.mark.parametrize("driver", list(CgroupDriver))
def test_pids_are_read_from_the_sandbox(tmp_path: Path, driver: CgroupDriver) -> None:
    write_fake_pod_cgroup(
        tmp_path, QosClass.BEST_EFFORT, UID, driver, containers=("sandbox", "app"), pids=(7, 42)
    )
    pod = read_pod_cgroups(tmp_path, driver)[UID]
    assert read_cgroup_pids(tmp_path, f"{pod.path}sandbox/") == (7, 42)
    assert read_cgroup_pids(tmp_path, f"{pod.path}app/") == ()
    assert read_cgroup_pids(tmp_path, pod.path) == ()  # cgroup v2: no processes in inner nodes
    assert read_cgroup_pids(tmp_path, f"/{pod.path}sandbox") == (7, 42)  # /proc/<pid>/cgroup form


def test_a_vanished_cgroup_has_no_pids(tmp_path: Path) -> None:
    driver = CgroupDriver.SYSTEMD
    pod_dir = write_fake_pod_cgroup(tmp_path, QosClass.BURSTABLE, UID, driver, pids=(7,))
    pod = read_pod_cgroups(tmp_path, driver)[UID]
    shutil.rmtree(pod_dir)
    assert read_cgroup_pids(tmp_path, f"{pod.path}sandbox/") == ()
    assert read_cgroup_pids(tmp_path, pod.path) == ()
    assert read_pod_cgroups(tmp_path, driver) == {}


def test_a_garbled_procs_file_is_an_error(tmp_path: Path) -> None:
    driver = CgroupDriver.CGROUPFS
    pod_dir = write_fake_pod_cgroup(tmp_path, QosClass.GUARANTEED, UID, driver)
    (pod_dir / "sandbox" / "cgroup.procs").write_text("12\nnot-a-pid\n")
    with pytest.raises(HostReadError, match="is not a list of process ids"):
        read_cgroup_pids(tmp_path, pod_cgroup_path(QosClass.GUARANTEED, UID, driver) + "sandbox/")


def test_the_fake_refuses_pids_without_a_container(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pids need a container"):
        write_fake_pod_cgroup(
            tmp_path, QosClass.BURSTABLE, OTHER_UID, CgroupDriver.SYSTEMD, containers=(), pids=(1,)
        )
