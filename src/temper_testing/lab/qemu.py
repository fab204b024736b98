"""The lab's QEMU: Debian's backported build, so each vCPU can have a host thread of its own.

Why not the host release's own QEMU: bookworm's 7.2 under multi-threaded TCG crashed the lab
kernel in text patching ("Oops: int3" at static-key sites) often enough that the lab ran all
vCPUs on one host thread, where a busy batch vCPU taxes the critical one whatever the guest's
scheduler does (docs/lab.md has the evidence, and the stability proof of this build).

`provision_qemu` downloads `PACKAGES` from `<host codename>-backports` on the mirror in the
machine's apt configuration, verified against the suite's index, unpacks them with
`dpkg-deb -x` into `lab_cache()/qemu/<version>/` (built in `<version>.partial/`, renamed when
complete), and checks that the binary starts and finds every shared library. The libraries
come from the host release's own `qemu-system-x86`, which provisioning installs anyway; the
backport is built against that release. Once ready it touches no network: the choice is kept
in `qemu/current` until `refresh=True`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from temper_testing.lab import archive
from temper_testing.lab.errors import LabError

PACKAGES = ("qemu-system-x86", "qemu-system-data", "qemu-system-common")
MIN_VERSION = (10, 0)  # 7.2's multi-threaded TCG is what oopsed; this is the build proven
OS_RELEASE = Path("/etc/os-release")
_VERSION = re.compile(r"(?:\d+:)?(\d+)\.(\d+)")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Accel:
    """How QEMU runs the guest's CPUs: which binary, TCG with one host thread per vCPU
    (`multi`) or one for all (`single`), and the CPU model with its feature switches."""

    tcg_threads: str
    cpu: str = "max"
    qemu: str = "qemu-system-x86_64"  # a path, or a name on PATH
    firmware: Path | None = None  # QEMU's data directory (-L) when not the binary's own

    @property
    def qemu_accel(self) -> str:
        return f"tcg,thread={self.tcg_threads}"


# The host release's QEMU with every vCPU on one host thread: the lab before the backport.
SINGLE_THREADED = Accel("single")


@dataclass(frozen=True)
class LabQemu:
    """A provisioned QEMU: the binary, the data directory QEMU's -L takes, its version."""

    binary: Path
    firmware: Path
    version: str  # the Debian package version

    def accel(self) -> Accel:
        """Each vCPU on a host thread of its own, with every CPU feature TCG has."""
        return Accel("multi", "max", str(self.binary), self.firmware)


def provision_qemu(
    cache: Path, progress: Progress, mirror_of: Callable[[], str], *, refresh: bool = False
) -> LabQemu:
    """The lab's QEMU, downloaded and unpacked on first use; see the module docstring.
    `mirror_of` gives the Debian mirror, asked only when something must be downloaded."""
    root = cache / "qemu"
    current = root / "current"
    if not refresh and current.is_file():
        known = root / current.read_text(encoding="utf-8").strip()
        if (known / "ready").is_file():
            return _lab_qemu(known)
    suite = f"{host_codename()}-backports"
    mirror = mirror_of()
    progress(f"reading the {suite} package index from {mirror}")
    stanzas = archive.parse_packages(archive.fetch_index(mirror, suite))
    files = [archive.package_file(stanzas, name, suite) for name in PACKAGES]
    version = files[0].version
    if version_key(version) < MIN_VERSION:
        wanted = ".".join(map(str, MIN_VERSION))
        raise LabError(f"{suite} offers QEMU {version}; the lab needs {wanted} or newer")
    target = root / version
    if not (target / "ready").is_file():
        _unpack(mirror, files, root, target, progress)
    current.write_text(version + "\n", encoding="utf-8")
    return _lab_qemu(target)


def host_codename(os_release: Path = OS_RELEASE) -> str:
    """The host release's codename (`VERSION_CODENAME` in /etc/os-release), e.g. bookworm."""
    try:
        text = os_release.read_text(encoding="utf-8")
    except OSError as exc:
        raise LabError(f"cannot read {os_release}: {exc.strerror}") from exc
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME" and value.strip('"'):
            return value.strip('"')
    raise LabError(f"{os_release} names no VERSION_CODENAME")


def version_key(version: str) -> tuple[int, int]:
    """(major, minor) of a Debian QEMU version such as `1:10.0.2+ds-2~bpo12+1`."""
    match = _VERSION.match(version)
    if match is None:
        raise LabError(f"cannot read a QEMU version from {version!r}")
    return int(match.group(1)), int(match.group(2))


def _unpack(
    mirror: str, files: list[archive.PackageFile], root: Path, target: Path, progress: Progress
) -> None:
    downloads = root / "downloads"
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for file in files:
        deb = archive.download(mirror, file, downloads, progress)
        _run(["dpkg-deb", "-x", str(deb), str(partial)])
    qemu = _lab_qemu(partial)
    missing = [
        line.split()[0]
        for line in _run(["ldd", str(qemu.binary)]).splitlines()
        if "not found" in line
    ]
    if missing:
        raise LabError(f"QEMU {target.name} lacks shared libraries: {', '.join(missing)}")
    progress(_run([str(qemu.binary), "--version"]).splitlines()[0])
    (partial / "ready").write_text(target.name + "\n", encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


def _lab_qemu(directory: Path) -> LabQemu:
    return LabQemu(
        directory / "usr" / "bin" / "qemu-system-x86_64",
        directory / "usr" / "share" / "qemu",
        directory.name.removesuffix(".partial"),
    )


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{argv[0]} failed: {exc}") from exc
    if done.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout
