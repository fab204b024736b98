"""The kernel gate: can this host's kernel run scx_layered at all?

The agent loads scx_layered only on a node that passes this gate
(docs/reliability.md#the-scheduler-lifecycle). A node that fails it refuses loudly, with every
reason, and keeps observing on the stock scheduler. So the gate never raises: an unreadable file is
one more reason, and the operator sees all of them at once rather than fixing one, redeploying and
meeting the next.

The checks, each read from the host under `root` (the node's `/` mounted at `--host-root`;
tests write a fake tree with `temper_testing.host.fakesys.write_fake_kernel`):

- the release in `proc/sys/kernel/osrelease` is at least 6.12, the first mainline kernel with
  sched_ext (docs/scx-layered.md#what-the-kernel-guarantees); only the leading `X.Y` counts, so
  `6.12.0-rc1` passes;
- `CONFIG_SCHED_CLASS_EXT=y` in `boot/config-<release>` or, when that is absent, in the
  gzipped `proc/config.gz` (CONFIG_IKCONFIG_PROC);
- kernel BTF at `sys/kernel/btf/vmlinux`, which the BPF scheduler is loaded against;
- the `sys/kernel/sched_ext` directory, the kernel's own proof that sched_ext is built in;
- no `isolcpus=` on the kernel command line: the kernel refuses to enable sched_ext with
  "Not compatible with \"isolcpus=\" domain isolation" (ext.c `scx_enable`). Any `isolcpus=`
  is refused, even one whose flags leave out `domain`: the gate errs toward the stock scheduler.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from temper.host.errors import HostReadError
from temper.host.sched_ext import SCHED_EXT_DIR

MIN_KERNEL = (6, 12)
OSRELEASE = Path("proc/sys/kernel/osrelease")
BOOT_DIR = Path("boot")
PROC_CONFIG = Path("proc/config.gz")
BTF_VMLINUX = Path("sys/kernel/btf/vmlinux")
CMDLINE = Path("proc/cmdline")
CONFIG_OPTION = "CONFIG_SCHED_CLASS_EXT"

# A kernel config is a few hundred kilobytes; reading stops well past that.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
_RELEASE = re.compile(r"([0-9]+)\.([0-9]+)")
_MIN_TEXT = ".".join(map(str, MIN_KERNEL))


@dataclass(frozen=True)
class GateResult:
    """The verdict of the kernel gate, with every failed check."""

    passed: bool
    kernel: str  # release, e.g. "7.3.4-amd64"; "" when it could not be read
    reasons: tuple[str, ...]  # every failed check, as a sentence; empty when passed


def read_kernel_gate(root: Path) -> GateResult:
    """Check the kernel of the host whose root directory is `root`; never raises."""
    if not _is_dir(root):
        reason = f"The host root {root} is not a directory; check the --host-root mount."
        return GateResult(passed=False, kernel="", reasons=(reason,))
    release, release_reason = _check_release(root)
    found = (
        release_reason,
        _check_config(root, release),
        _check_btf(root),
        _check_sched_ext(root),
        _check_cmdline(root),
    )
    reasons = tuple(reason for reason in found if reason is not None)
    return GateResult(passed=not reasons, kernel=release, reasons=reasons)


def parse_kernel_version(release: str) -> tuple[int, int] | None:
    """The leading `(major, minor)` of a kernel release string; None when it has none."""
    match = _RELEASE.match(release)
    return (int(match[1]), int(match[2])) if match else None


def _check_release(root: Path) -> tuple[str, str | None]:
    """The release string ("" when unreadable) and the reason it fails, if it does."""
    path = root / OSRELEASE
    try:
        release = _read_text(path).strip()
    except HostReadError as exc:
        return "", f"{exc}; cannot tell whether the kernel is {_MIN_TEXT} or newer."
    version = parse_kernel_version(release)
    if version is None:
        return release, (
            f"The kernel release {release!r} in {path} does not start with a version X.Y; "
            f"cannot tell whether the kernel is {_MIN_TEXT} or newer."
        )
    if version < MIN_KERNEL:
        return release, (
            f"Kernel {release} is older than {_MIN_TEXT}, the first with sched_ext; "
            f"boot a {_MIN_TEXT} or newer kernel."
        )
    return release, None


def _check_config(root: Path, release: str) -> str | None:
    boot = root / BOOT_DIR / f"config-{release}" if release else None
    proc = root / PROC_CONFIG
    try:
        if boot is not None and _exists(boot):
            path, text = boot, _read_text(boot)
        elif _exists(proc):
            path, text = proc, _read_gzip(proc)
        else:
            searched = f"neither {boot} nor {proc} exists" if boot else f"{proc} does not exist"
            return (
                f"The kernel config could not be found: {searched}; "
                f"cannot confirm {CONFIG_OPTION}=y."
            )
    except HostReadError as exc:
        return f"{exc}; cannot confirm {CONFIG_OPTION}=y."
    if f"{CONFIG_OPTION}=y" not in text.splitlines():
        return (
            f"{CONFIG_OPTION} is not set to y in {path}; "
            f"boot a kernel built with {CONFIG_OPTION}=y."
        )
    return None


def _check_btf(root: Path) -> str | None:
    path = root / BTF_VMLINUX
    if _exists(path):
        return None
    return (
        f"Kernel BTF is missing: {path} was not found; "
        "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y."
    )


def _check_sched_ext(root: Path) -> str | None:
    path = root / SCHED_EXT_DIR
    if _is_dir(path):
        return None
    return (
        f"sched_ext is not available: {path} is not a directory; "
        f"boot a kernel built with {CONFIG_OPTION}=y."
    )


def _check_cmdline(root: Path) -> str | None:
    path = root / CMDLINE
    try:
        words = _read_text(path).split()
    except HostReadError as exc:
        return f"{exc}; cannot confirm that isolcpus= is not set."
    # Words after "--" go to init, not to the kernel.
    kernel_words = words[: words.index("--")] if "--" in words else words
    isolated = [word for word in kernel_words if word.startswith("isolcpus=")]
    if not isolated:
        return None
    return (
        f"The kernel command line in {path} has {isolated[0]}, and sched_ext refuses to run "
        'with "isolcpus=" domain isolation; remove isolcpus= from the boot parameters.'
    )


def _exists(path: Path) -> bool:
    """Whether `path` exists; False also when it cannot be looked at (never raises)."""
    return os.path.exists(path)


def _is_dir(path: Path) -> bool:
    """Whether `path` is a directory; False also when it cannot be looked at (never raises)."""
    return os.path.isdir(path)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError as exc:
        raise HostReadError(path, "is missing") from exc
    except (OSError, ValueError) as exc:
        raise HostReadError(path, f"cannot be read ({_cause(exc)})") from exc


def _read_gzip(path: Path) -> str:
    try:
        with gzip.open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        raise HostReadError(path, f"cannot be read as gzip ({_cause(exc)})") from exc
    return data.decode("utf-8", errors="replace")


def _cause(exc: Exception) -> str:
    """The OS's words for `exc`, without the path the reason already names."""
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
