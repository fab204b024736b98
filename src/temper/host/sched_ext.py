"""Read the kernel's sched_ext state, and reset it with SysRq-S, under a host root.

Why sysfs: `/sys/kernel/sched_ext` is the kernel's truth about which BPF scheduler runs
(docs/reliability.md#the-scheduler-lifecycle). The agent reconciles against what these files say
now, never against its memory of what it started, so a scheduler that crashed, was replaced or was
reset by an operator shows up on the next read. Why a root argument: the agent reads the node's
`/sys` mounted at `--host-root`, and tests read a fake tree written by
`temper_testing.host.fakesys.write_fake_sched_ext`.

Which files (kernel ext.c; Documentation/scheduler/sched-ext.rst):

- `state` is one of `disabled`, `enabling`, `enabled`, `disabling`. A kernel without sched_ext
  has no `sched_ext` directory at all; that is `SchedState.ABSENT`, not an error.
- `root/ops` names the loaded scheduler, e.g. `layered_1.1.2_x86_64-unknown-linux-gnu`. The
  `root/` directory exists only while a scheduler is loaded.
- `enable_seq` counts enables since boot; older kernels lack it.

Races are expected, not raised: a scheduler unloading between the read of `state` and the read
of `root/ops` takes `root/` with it, and that reads as `ops=None`. The reader never combines
the two into a verdict of its own; `SchedExtStatus.is_ours` does, and asks for both.

Failures are translated at this edge: a garbled or unreadable file is a `HostReadError` naming
it, and a failed SysRq write is a `HostError`.
"""

from __future__ import annotations

import enum
import errno
import os
from dataclasses import dataclass
from pathlib import Path

from temper.host.errors import HostError, HostReadError, HostRootMissing

SCHED_EXT_DIR = Path("sys/kernel/sched_ext")
SYSRQ_TRIGGER = Path("proc/sysrq-trigger")
OURS_PREFIX = "layered"

# What a sysfs file that is going away reports: gone from the directory, or a kernfs node
# deactivated while we held it open.
_VANISHED = (errno.ENOENT, errno.ENODEV, errno.ENOTDIR)


class SchedState(enum.Enum):
    """The sched_ext enable state, as `/sys/kernel/sched_ext/state` spells it."""

    DISABLED = "disabled"
    ENABLING = "enabling"
    ENABLED = "enabled"
    DISABLING = "disabling"
    ABSENT = "absent"  # no /sys/kernel/sched_ext: the kernel has no sched_ext


# The states the kernel writes; "absent" is ours, for a missing directory, never read from a file.
_KERNEL_STATES = {state.value: state for state in SchedState if state is not SchedState.ABSENT}


@dataclass(frozen=True)
class SchedExtStatus:
    """One reading of the kernel's sched_ext files."""

    state: SchedState
    ops: str | None  # root/ops, stripped; None when no scheduler is loaded (no root/)
    enable_seq: int | None  # enables since boot; None on kernels without the file

    def is_ours(self, prefix: str = OURS_PREFIX) -> bool:
        """Whether an enabled scheduler is loaded whose name starts with `prefix`.

        scx_layered names itself `layered_<version>_<target>`; a foreign scheduler (`lavd_1.0`)
        is never ours, and neither is a scheduler still enabling or already disabling.
        """
        return (
            self.state is SchedState.ENABLED
            and self.ops is not None
            and self.ops.startswith(prefix)
        )


def read_sched_ext(root: Path) -> SchedExtStatus:
    """The sched_ext state of the host whose root directory is `root`."""
    if not root.is_dir():
        raise HostRootMissing(root)
    directory = root / SCHED_EXT_DIR
    if not directory.is_dir():
        return SchedExtStatus(state=SchedState.ABSENT, ops=None, enable_seq=None)
    state = _read_state(directory / "state")
    ops = _read_optional(directory / "root" / "ops")
    return SchedExtStatus(
        state=state,
        ops=ops.strip() if ops is not None else None,
        enable_seq=_read_enable_seq(directory / "enable_seq"),
    )


def trigger_sysrq_reset(root: Path) -> None:
    """Press SysRq-S: write `S` to `<root>/proc/sysrq-trigger`.

    SysRq-S ("reset-sched-ext") disables sched_ext and reverts all tasks to CFS, whatever
    scheduler is loaded. It is the last step of stopping, after SIGTERM and SIGKILL, and the
    supervisor calls it only when the loaded scheduler is ours (`SchedExtStatus.is_ours`): a
    foreign scheduler is never fought.

    The file is opened without O_CREAT, so a wrong host root fails instead of leaving a stray
    file behind.
    """
    path = root / SYSRQ_TRIGGER
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, b"S")
        finally:
            os.close(fd)
    except OSError as exc:
        raise HostError(f"{path}: cannot trigger SysRq-S: {exc}") from exc


def _read_state(path: Path) -> SchedState:
    text = _read_text(path).strip()
    state = _KERNEL_STATES.get(text)
    if state is None:
        raise HostReadError(path, f"is not a known sched_ext state: {text!r}")
    return state


def _read_enable_seq(path: Path) -> int | None:
    text = _read_optional(path)
    if text is None:
        return None
    text = text.strip()
    if not text.isdigit():
        raise HostReadError(path, f"is not an enable count: {text!r}")
    return int(text)


def _read_text(path: Path) -> str:
    text = _read_optional(path)
    if text is None:
        raise HostReadError(path, "is missing")
    return text


def _read_optional(path: Path) -> str | None:
    """The text of `path`; None when it is absent or vanishes while being read."""
    try:
        return path.read_text(encoding="ascii")
    except OSError as exc:
        if exc.errno in _VANISHED:
            return None
        raise HostReadError(path, f"cannot be read: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise HostReadError(path, f"cannot be read: {exc}") from exc
