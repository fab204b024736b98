"""Provision the lab: host packages, and a sched_ext kernel from the Debian archive, cached.

`provision_kernel` picks the newest generic amd64 kernel offered by `SUITES` whose config passes
`image.REQUIRED_CONFIG` (an older release is tried when the newest fails), or the release pinned
by `$TEMPER_LAB_KERNEL`, and prepares everything a guest boots into
`lab_cache()/kernels/<release>/`:

    vmlinux             uncompressed ELF kernel (QEMU boots it through PVH)
    config              the kernel's config (checked; also the guest's /boot/config-<release>)
    modules/*.ko        the four 9p modules, decompressed
    initrd-<hash>.cpio  busybox-static + modules + config + init.sh; <hash> covers init.sh, so
                        editing the init script rebuilds the initramfs without the network
    source.json         which packages, from which suite and mirror, and why this release
    ready               written last: the directory is complete

A release is built in `<release>.partial/` and renamed when complete, so a crash never leaves a
half-built kernel that looks ready. Once ready, provisioning touches no network: the unpinned
choice is remembered in `kernels/current` until `refresh=True` asks the mirror again.

The cache defaults to `~/.cache/temper/lab`, not /tmp: the guest hides the host's /tmp, /run and
/var/tmp behind its own tmpfs mounts (the job file is read before that, but nothing else of the
lab's should depend on it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from temper_testing.lab import archive, image
from temper_testing.lab.archive import KernelCandidate
from temper_testing.lab.errors import LabError
from temper_testing.lab.qemu import SINGLE_THREADED, Accel, provision_qemu

SUITES = ("trixie-backports", "sid")  # Debian's 7.x generic kernels: docs/testing.md#the-kernel-lab
PIN_ENV = "TEMPER_LAB_KERNEL"  # a release string, e.g. 7.3.4+deb13-amd64
HOST_PACKAGES = ("qemu-system-x86", "busybox-static", "zstd", "xz-utils")
APT_DIR = Path("/etc/apt")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LabKernel:
    """A provisioned lab kernel: what QEMU needs to boot it."""

    release: str  # what `uname -r` prints in the guest
    vmlinux: Path
    initrd: Path
    config: Path
    accel: Accel = SINGLE_THREADED  # the QEMU that boots it, and how (provision_qemu's)


def lab_cache() -> Path:
    """`$TEMPER_CACHE/lab` (TEMPER_CACHE defaults to ~/.cache/temper): the lab's cache root."""
    default = Path.home() / ".cache" / "temper"
    return Path(os.environ.get("TEMPER_CACHE", default)).absolute() / "lab"


def ensure_host_packages(progress: Progress, packages: Sequence[str] = HOST_PACKAGES) -> None:
    """Install the Debian packages the lab needs when any is missing (apt-get; sudo if not root)."""
    missing = _missing_packages(packages)
    if not missing:
        return
    progress(f"installing host packages: {' '.join(missing)}")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    apt = [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q"]
    _run_checked([*apt, "update"])
    _run_checked([*apt, "install", "-y", "--no-install-recommends", *missing])
    still = _missing_packages(missing)
    if still:
        raise LabError(f"apt-get did not install {' '.join(still)}")


def debian_mirror(apt_dir: Path = APT_DIR) -> str:
    """The Debian archive URI this machine's apt uses (deb822 `.sources` first, then `.list`).

    Security-only entries are skipped: the kernels live in the main archive.
    """
    for path in sorted(apt_dir.glob("sources.list.d/*.sources")):
        for uri in _deb822_uris(_read_text(path)):
            return uri.rstrip("/")
    one_line = [apt_dir / "sources.list", *sorted(apt_dir.glob("sources.list.d/*.list"))]
    for path in one_line:
        for uri in _one_line_uris(_read_text(path)):
            return uri.rstrip("/")
    raise LabError(
        f"no Debian archive (an http or https URI) in the apt configuration under {apt_dir}"
    )


def provision_kernel(
    progress: Progress, *, refresh: bool = False, cache: Path | None = None
) -> LabKernel:
    """The lab kernel, downloaded and prepared on first use; see the module docstring."""
    cache = cache if cache is not None else lab_cache()
    kernels = cache / "kernels"
    ensure_host_packages(progress)
    pinned = os.environ.get(PIN_ENV, "").strip() or None
    if pinned is not None:
        archive.release_key(pinned)  # a malformed pin fails here, before any network
    known = pinned or (None if refresh else _read_current(kernels))
    if known is None or not _is_ready(kernels / known):
        kernels.mkdir(parents=True, exist_ok=True)
        with _locked(kernels / ".lock"):
            if known is None or not _is_ready(kernels / known):
                known = _provision_release(cache, pinned, progress)
        if pinned is None:
            (kernels / "current").write_text(known + "\n", encoding="utf-8")
    qemu = provision_qemu(cache, progress, debian_mirror, refresh=refresh)
    return _lab_kernel(kernels / known, progress, qemu.accel())


def _provision_release(cache: Path, pinned: str | None, progress: Progress) -> str:
    mirror = debian_mirror()
    candidates: list[KernelCandidate] = []
    for suite in SUITES:
        progress(f"reading the {suite} package index from {mirror}")
        candidates += archive.parse_kernel_candidates(suite, archive.fetch_index(mirror, suite))
    why = f"pinned by {PIN_ENV}" if pinned else f"newest passing release of {', '.join(SUITES)}"
    rejected: list[str] = []
    for candidate in _in_order_of_preference(candidates, pinned):
        if _is_ready(cache / "kernels" / candidate.release):
            progress(f"kernel {candidate.release}: already provisioned")
            return candidate.release
        config = _fetch_config(cache, mirror, candidate, progress)
        missing = image.missing_config(config.decode(errors="replace"))
        if not missing:
            progress(f"kernel {candidate.release} from {candidate.suite} ({why})")
            _build_release(cache, mirror, candidate, config, why=why, progress=progress)
            return candidate.release
        rejected.append(f"{candidate.release} ({candidate.suite}) lacks {', '.join(missing)}")
        progress(f"skipping {rejected[-1]}")
        (cache / "downloads" / Path(candidate.packages["base"].filename).name).unlink(
            missing_ok=True
        )
    if not rejected:
        raise LabError(f"no generic amd64 kernel in {', '.join(SUITES)} at {mirror}")
    raise LabError("no kernel passes the lab's config check: " + "; ".join(rejected))


def _in_order_of_preference(
    candidates: list[KernelCandidate], pinned: str | None
) -> list[KernelCandidate]:
    """Newest first; only the pinned release (from the first suite offering it) when pinned."""
    ordered = archive.order_candidates(candidates, SUITES)
    if pinned is None:
        return ordered
    chosen = [c for c in ordered if c.release == pinned][:1]
    if not chosen:
        offered = ", ".join(sorted({c.release for c in candidates}, key=archive.release_key))
        raise LabError(
            f"{PIN_ENV}={pinned} is not in {', '.join(SUITES)} (offered: {offered or 'none'})"
        )
    return chosen


def _fetch_config(
    cache: Path, mirror: str, candidate: KernelCandidate, progress: Progress
) -> bytes:
    member = f"usr/lib/modules/{candidate.release}/config"
    deb = archive.download(mirror, candidate.packages["base"], cache / "downloads", progress)
    found = archive.read_deb_members(deb, [member])
    if member not in found:
        raise LabError(f"{deb.name} has no {member}")
    return found[member]


def _build_release(
    cache: Path,
    mirror: str,
    candidate: KernelCandidate,
    config: bytes,
    *,
    why: str,
    progress: Progress,
) -> None:
    release = candidate.release
    final = cache / "kernels" / release
    partial = final.with_name(release + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    (partial / "config").write_bytes(config)
    downloads = cache / "downloads"
    debs = [
        archive.download(mirror, candidate.packages[k], downloads, progress) for k in archive.KINDS
    ]
    vmlinuz_member = f"usr/lib/modules/{release}/vmlinuz"
    vmlinuz = archive.read_deb_members(debs[1], [vmlinuz_member]).get(vmlinuz_member)
    if vmlinuz is None:
        raise LabError(f"{debs[1].name} has no {vmlinuz_member}")
    progress("extracting vmlinux from the bzImage")
    (partial / "vmlinux").write_bytes(image.extract_vmlinux(vmlinuz))
    progress("extracting the 9p modules")
    members = archive.read_deb_members(debs[2], image.module_member_names(release))
    (partial / "modules").mkdir()
    for name, data in image.decompress_modules(release, members).items():
        (partial / "modules" / f"{name}.ko").write_bytes(data)
    _write_source(partial / "source.json", mirror, candidate, why)
    (partial / "ready").write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n", encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)  # an incomplete leftover; a ready one never gets here
    partial.rename(final)
    for deb in debs:
        deb.unlink(missing_ok=True)


def _write_source(path: Path, mirror: str, candidate: KernelCandidate, why: str) -> None:
    record = {
        "release": candidate.release,
        "suite": candidate.suite,
        "mirror": mirror,
        "chosen": why,
        "packages": {
            kind: {
                "package": f.package,
                "version": f.version,
                "filename": f.filename,
                "size": f.size,
                "sha256": f.sha256,
            }
            for kind, f in candidate.packages.items()
        },
    }
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _lab_kernel(directory: Path, progress: Progress, accel: Accel) -> LabKernel:
    """The LabKernel of a ready release; builds the initramfs for the current init.sh if needed."""
    init_script = resources.files("temper_testing.lab").joinpath("init.sh").read_bytes()
    digest = hashlib.sha256(init_script)
    for name in image.NINEP_MODULES:
        digest.update(name.encode())
    initrd = directory / f"initrd-{digest.hexdigest()[:12]}.cpio"
    if not initrd.is_file():
        progress(f"building the initramfs {initrd.name}")
        modules = {p.stem: p.read_bytes() for p in sorted((directory / "modules").glob("*.ko"))}
        config = (directory / "config").read_bytes()
        image.write_initramfs(initrd, init_script, modules, config)
        for stale in directory.glob("initrd-*.cpio"):
            if stale != initrd:
                stale.unlink(missing_ok=True)
    return LabKernel(
        release=directory.name,
        vmlinux=directory / "vmlinux",
        initrd=initrd,
        config=directory / "config",
        accel=accel,
    )


def _is_ready(directory: Path) -> bool:
    return (directory / "ready").is_file()


def _read_current(kernels: Path) -> str | None:
    try:
        release = (kernels / "current").read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return release or None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path`, so two provisioners never build one release at once."""
    with path.open("a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def _missing_packages(packages: Sequence[str]) -> list[str]:
    fmt = "${Package} ${db:Status-Abbrev}\n"
    try:
        done = subprocess.run(
            ["dpkg-query", "-W", "-f", fmt, *packages], capture_output=True, text=True, check=False
        )
    except OSError as exc:
        raise LabError(f"the lab needs a Debian host with dpkg and apt: {exc}") from exc
    installed = {
        line.split()[0] for line in done.stdout.splitlines() if line.split()[1:2] == ["ii"]
    }
    return [package for package in packages if package not in installed]


def _run_checked(command: list[str]) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise LabError(f"cannot run {command[0]}: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise LabError(f"{' '.join(command)} failed ({done.returncode}):\n{tail}")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _deb822_uris(text: str) -> Iterator[str]:
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line[:1] not in ("", " ", "\t", "#") and ":" in line:
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
        if (
            fields.get("enabled", "yes").lower() == "no"
            or "deb" not in fields.get("types", "").split()
        ):
            continue
        if _security_only(fields.get("suites", "").split()):
            continue
        yield from (
            u for u in fields.get("uris", "").split() if u.startswith(("http://", "https://"))
        )


def _one_line_uris(text: str) -> Iterator[str]:
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "deb":
            continue
        rest = words[1:]
        if rest and rest[0].startswith("["):  # options: deb [arch=amd64 signed-by=...] URI ...
            end = next((i for i, word in enumerate(rest) if word.endswith("]")), len(rest))
            rest = rest[end + 1 :]
        plain_uri = len(rest) >= 2 and rest[0].startswith(("http://", "https://"))
        if plain_uri and not _security_only(rest[1:2]):
            yield rest[0]


def _security_only(suites: Sequence[str]) -> bool:
    return bool(suites) and all(suite.endswith("-security") for suite in suites)
