"""Fake pod cgroups: the fake beside the `read_pod_cgroups` and `read_cgroup_pids` ports.

`write_fake_pod_cgroup(root, qos, uid, driver)` makes under `root` the directories kubelet makes
for one pod, at `pod_cgroup_path(qos, uid, driver)`, with one child cgroup per container and a
`cgroup.procs` file in each, as the kernel has them. As on a real node, processes live only in a
leaf: the pod's own `cgroup.procs` is empty, and `pids` go to the first container (the sandbox,
whose process is the pod's `pause`). Tests then delete directories to play a pod going away.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from temper.host.podcgroups import CGROUP_DIR, PROCS_FILE
from temper.policy.cgroups import CgroupDriver, pod_cgroup_path
from temper.policy.tiers import QosClass


def write_fake_pod_cgroup(
    root: Path,
    qos: QosClass,
    uid: str,
    driver: CgroupDriver,
    *,
    containers: Sequence[str] = ("sandbox",),
    pids: Sequence[int] = (),
) -> Path:
    """Write one pod's cgroup directories under `root`; return the pod's cgroup directory."""
    if pids and not containers:
        raise ValueError("pids need a container: cgroup v2 keeps processes only in leaves")
    pod_dir = root / CGROUP_DIR / pod_cgroup_path(qos, uid, driver)
    _write_procs(pod_dir, ())
    for number, name in enumerate(containers):
        _write_procs(pod_dir / name, pids if number == 0 else ())
    return pod_dir


def _write_procs(cgroup: Path, pids: Sequence[int]) -> None:
    cgroup.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{pid}\n" for pid in pids)
    (cgroup / PROCS_FILE).write_text(text, encoding="ascii")
