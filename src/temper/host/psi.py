"""CPU pressure (PSI): the node's `/proc/pressure/cpu` and each pod cgroup's `cpu.pressure`.

The kernel recomputes the averages every 2 s (docs/performance.md#psi-updates-every-2-s), so reading
more often buys nothing; the observer reads on that cadence. Each file stays open and is read again
with `pread`, which costs a fraction of an open. A pod cgroup that vanished, or a kernel built
without PSI, reads as None: the caller reports it, nothing raises (docs/reliability.md row E2).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Collection
from pathlib import Path

from temper.host.errors import HostReadError
from temper.host.threads import CGROUP_DIR, GONE
from temper.policy.observe import Pressure, parse_pressure

NODE_PSI = Path("proc/pressure/cpu")
_READ_BYTES = 512


class PressureReader:
    """Reads PSI files under host root `root`, keeping each open between reads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cgroups = f"{root}/{CGROUP_DIR}"
        self._open: dict[str, int] = {}  # file path -> descriptor

    def read_node(self) -> Pressure | None:
        return self._read(f"{self.root}/{NODE_PSI}")

    def read_cgroup(self, path: str) -> Pressure | None:
        """The pressure of the cgroup at `path`, relative to the cgroup root."""
        return self._read(f"{self._cgroups}/{path.strip('/')}/cpu.pressure")

    def keep_only(self, cgroup_paths: Collection[str]) -> None:
        """Close the files of cgroups not in `cgroup_paths` (pods that left)."""
        keep = {f"{self._cgroups}/{p.strip('/')}/cpu.pressure" for p in cgroup_paths}
        keep.add(f"{self.root}/{NODE_PSI}")
        for path in [p for p in self._open if p not in keep]:
            os.close(self._open.pop(path))

    def close(self) -> None:
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()

    def _read(self, path: str) -> Pressure | None:
        try:
            fd = self._open.get(path)
            if fd is None:
                fd = self._open[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            text = os.pread(fd, _READ_BYTES, 0).decode("ascii")
        except OSError as exc:
            if path in self._open:
                os.close(self._open.pop(path))
            if exc.errno in GONE or exc.errno == errno.EOPNOTSUPP:  # PSI off at boot
                return None
            raise HostReadError(Path(path), f"cannot be read: {exc.strerror or exc}") from exc
        try:
            return parse_pressure(text)
        except (ValueError, KeyError) as exc:
            raise HostReadError(Path(path), f"is not PSI text: {text[:80]!r}") from exc
