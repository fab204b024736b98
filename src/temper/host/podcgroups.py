"""Find the pod cgroups kubelet made on the host, and the processes in them.

The planner places pods by their cgroup path (`temper.policy.cgroups`); this module finds which
of those paths exist on the node. It walks `<root>/sys/fs/cgroup/` where kubelet puts pods for
the chosen driver, one directory per QoS class:

    systemd:  kubepods.slice/                             kubepods-pod<uid_>.slice
              kubepods.slice/kubepods-burstable.slice/    kubepods-burstable-pod<uid_>.slice
              kubepods.slice/kubepods-besteffort.slice/   kubepods-besteffort-pod<uid_>.slice
    cgroupfs: kubepods/                                   pod<uid>
              kubepods/burstable/                         pod<uid>
              kubepods/besteffort/                        pod<uid>

A directory counts as a pod only when `pod_cgroup_path` gives back exactly its path for the uid
in its name, so the paths found and the paths planned cannot drift apart. The uid is the one in
the cgroup name: a pod's `cgroup_uid`, which differs from its API uid for a static pod's mirror.

Pods come and go while the walk runs: a directory that vanishes mid-walk is skipped, and a
cgroup that vanishes before its `cgroup.procs` is read has no processes. Both are expected, so
neither raises. A missing `kubepods` hierarchy means no pods (kubelet has not started yet).
Anything else the kernel refuses is a `HostReadError` naming the directory.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

from temper.host.errors import HostReadError, HostRootMissing
from temper.policy.cgroups import CgroupDriver, pod_cgroup_path, qos_prefix
from temper.policy.tiers import QosClass

CGROUP_DIR = Path("sys/fs/cgroup")
PROCS_FILE = "cgroup.procs"

# Walk order: a uid found under two QoS classes (it should not happen) keeps the first.
_QOS_ORDER = (QosClass.GUARANTEED, QosClass.BURSTABLE, QosClass.BEST_EFFORT)
# errno values that mean "this cgroup is gone": removed, or removed while open (ENODEV).
_VANISHED = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ENODEV})


@dataclass(frozen=True)
class PodCgroup:
    """One pod's cgroup on the host."""

    uid: str  # as in the pod (dashes), recovered from the directory name
    path: str  # relative to the cgroup root, trailing '/': equals pod_cgroup_path(qos, uid, ...)
    containers: tuple[str, ...]  # names of the child cgroups (container scopes), sorted


def read_pod_cgroups(root: Path, driver: CgroupDriver) -> dict[str, PodCgroup]:
    """The pod cgroups kubelet made with `driver` on the host under `root`, keyed by uid."""
    if not root.is_dir():
        raise HostRootMissing(root)
    found: dict[str, PodCgroup] = {}
    for qos in _QOS_ORDER:
        for pod in _read_qos_pods(root / CGROUP_DIR, qos, driver):
            found.setdefault(pod.uid, pod)
    return found


def read_cgroup_pids(root: Path, path: str) -> tuple[int, ...]:
    """The processes in the cgroup at `path` (relative to the cgroup root); () once it is gone.

    cgroup v2 keeps processes only in leaf cgroups, so a pod's processes are in its container
    cgroups (`PodCgroup.path + name`), not in the pod's own.
    """
    procs = root / CGROUP_DIR / path.strip("/") / PROCS_FILE
    try:
        text = procs.read_text(encoding="ascii")
    except OSError as exc:
        if exc.errno in _VANISHED:
            return ()
        raise HostReadError(procs, f"cannot be read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise HostReadError(procs, "is not a list of process ids") from exc
    try:
        return tuple(int(line) for line in text.split())
    except ValueError as exc:
        raise HostReadError(procs, "is not a list of process ids") from exc


def _read_qos_pods(cgroup_dir: Path, qos: QosClass, driver: CgroupDriver) -> list[PodCgroup]:
    """The pod cgroups directly in the QoS class's parent directory, in name order."""
    parent, _, name_prefix = qos_prefix(qos, driver).rpartition("/")
    suffix = ".slice" if driver is CgroupDriver.SYSTEMD else ""
    pods = []
    for name in _list_dirs(cgroup_dir / parent) or ():
        uid = _uid_of(name, name_prefix, suffix, driver)
        if uid is None or pod_cgroup_path(qos, uid, driver) != f"{parent}/{name}/":
            continue
        containers = _list_dirs(cgroup_dir / parent / name)
        if containers is not None:
            pods.append(PodCgroup(uid=uid, path=f"{parent}/{name}/", containers=containers))
    return pods


def _uid_of(name: str, prefix: str, suffix: str, driver: CgroupDriver) -> str | None:
    """The pod uid in a pod cgroup's directory name; None when the name is not a pod's."""
    if not (name.startswith(prefix) and name.endswith(suffix)):
        return None
    uid = name[len(prefix) : len(name) - len(suffix)]
    if driver is CgroupDriver.SYSTEMD:
        uid = uid.replace("_", "-")
    return uid or None


def _list_dirs(directory: Path) -> tuple[str, ...] | None:
    """The names of the subdirectories of `directory`, sorted; None when it is gone."""
    try:
        with os.scandir(directory) as entries:
            return tuple(sorted(e.name for e in entries if e.is_dir(follow_symlinks=False)))
    except OSError as exc:
        if exc.errno in _VANISHED:
            return None
        raise HostReadError(directory, f"cannot be listed: {exc.strerror or exc}") from exc


def read_cpu_usage_usec(root: Path, path: str) -> int | None:
    """The CPU time (us) the cgroup at `path` has used (`cpu.stat` usage_usec); None when the
    cgroup is gone or has no such line."""
    try:
        text = (root / CGROUP_DIR / path / "cpu.stat").read_text()
    except OSError as exc:
        if exc.errno in _VANISHED:
            return None
        raise HostReadError(
            root / CGROUP_DIR / path / "cpu.stat", exc.strerror or str(exc)
        ) from exc
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == "usage_usec" and value.strip().isdigit():
            return int(value)
    return None
