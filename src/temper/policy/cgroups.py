"""Where kubelet puts a pod's cgroup, for both cgroup drivers.

scx_layered matches tasks by their cgroup-v2 path, relative to the root, with no leading and a
trailing `/` (docs/scx-layered.md#cgroup-paths). Kubelet lays pods out as:

    systemd:  kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/<rt>-<id>.scope/
    cgroupfs: kubepods/<qos>/pod<uid>/<id>/

with `<qos>` `burstable` or `besteffort`, Guaranteed pods directly under `kubepods`, and the
systemd driver writing the UID's dashes as underscores. Every
container of a pod, the sandbox included, is a child of the pod's cgroup, so matching the pod's
path as a prefix places all of them.

`CgroupRegex` rules are different: scx_layered evaluates them in userspace against the absolute
filesystem path of each cgroup directory, `/sys/fs/cgroup/<path>` without a trailing slash
(scx_layered 1.1.2 `main.rs`, `process_cgroup_creation` over a `WalkDir` of `/sys/fs/cgroup`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable

from temper.policy.tiers import QosClass

CGROUP_FS_ROOT = "/sys/fs/cgroup"
_META = re.compile(r"[\\.+*?()|\[\]{}^$]")


class CgroupDriver(enum.Enum):
    SYSTEMD = "systemd"
    CGROUPFS = "cgroupfs"


_QOS_DIR = {QosClass.BURSTABLE: "burstable", QosClass.BEST_EFFORT: "besteffort"}


def qos_prefix(qos: QosClass, driver: CgroupDriver) -> str:
    """A prefix every pod cgroup of this QoS class starts with, and no other pod cgroup does.

    Guaranteed pods sit directly under `kubepods`, so their prefix ends inside the pod's own
    directory name (`kubepods.slice/kubepods-pod`), which no QoS slice name starts with.
    """
    if driver is CgroupDriver.SYSTEMD:
        if qos is QosClass.GUARANTEED:
            return "kubepods.slice/kubepods-pod"
        name = _QOS_DIR[qos]
        return f"kubepods.slice/kubepods-{name}.slice/kubepods-{name}-pod"
    if qos is QosClass.GUARANTEED:
        return "kubepods/pod"
    return f"kubepods/{_QOS_DIR[qos]}/pod"


def pod_cgroup_path(qos: QosClass, uid: str, driver: CgroupDriver) -> str:
    """The pod's own cgroup path: every container of the pod is below it."""
    if driver is CgroupDriver.SYSTEMD:
        return f"{qos_prefix(qos, driver)}{uid.replace('-', '_')}.slice/"
    return f"{qos_prefix(qos, driver)}{uid}/"


def container_cgroup_path(pod_path: str, container_id: str, driver: CgroupDriver) -> str:
    """A container's cgroup under its pod (containerd's naming for the systemd driver)."""
    if driver is CgroupDriver.SYSTEMD:
        return f"{pod_path}cri-containerd-{container_id}.scope/"
    return f"{pod_path}{container_id}/"


def any_path_regex(paths: Iterable[str]) -> str:
    """A `CgroupRegex` matching these cgroups and everything below them, and nothing else."""
    alternatives = "|".join(_escape(path.rstrip("/")) for path in sorted(paths))
    return f"^{_escape(CGROUP_FS_ROOT)}/(?:{alternatives})(?:/|$)"


def _escape(text: str) -> str:
    """Escape regex metacharacters only, so Python's `re` and Rust's `regex` read it alike."""
    return _META.sub(r"\\\g<0>", text)


def regex_subject(path: str) -> str:
    """The string scx_layered tests a `CgroupRegex` against, for a relative cgroup path."""
    return f"{CGROUP_FS_ROOT}/{path}".rstrip("/")
