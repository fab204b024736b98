"""The Debian archive, as the lab needs it: find kernel packages, download them, read members.

A Debian kernel release `R` (for example `7.3.4+deb13-amd64`, what `uname -r` prints) ships as three
binary packages: `linux-base-R` (the config, in `usr/lib/modules/R/config`), `linux-binary-R` (the
bzImage, `usr/lib/modules/R/vmlinuz`) and `linux-modules-R`. Only the generic flavor counts:
`-cloud-amd64` and `-rt-amd64` releases are skipped (the cloud flavor has sched_ext on in 7.x
but no 9p, which the lab's guest mounts the host with: docs/testing.md#the-kernel-lab). The
suite's `Packages.xz` index gives each file's path in the pool, size and SHA-256; downloads are
checked against both.

The indexes are fetched over the mirror's own scheme without checking `InRelease` signatures, so
the SHA-256 checks catch truncation and corruption, not a hostile mirror.
"""

from __future__ import annotations

import hashlib
import lzma
import re
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from temper_testing.lab.errors import LabError

KINDS = ("base", "binary", "modules")
NETWORK_TIMEOUT_S = 60  # per socket operation; the mirror answers in well under a second
_CHUNK_BYTES = 1024 * 1024
_RELEASE = re.compile(r"([0-9]+)\.([0-9]+)\.([0-9]+)\+deb([0-9]+)-amd64")
_BINARY = re.compile(r"linux-binary-(" + _RELEASE.pattern + ")")


@dataclass(frozen=True)
class PackageFile:
    """One .deb in the archive, as its suite's Packages index describes it."""

    package: str
    version: str
    filename: str  # path below the mirror root, e.g. pool/main/l/linux/...
    size: int
    sha256: str


@dataclass(frozen=True)
class KernelCandidate:
    """A generic amd64 kernel release offered by one suite, with its three packages."""

    release: str
    suite: str
    packages: Mapping[str, PackageFile]  # keyed by kind: "base", "binary", "modules"


def parse_packages(text: str) -> dict[str, dict[str, str]]:
    """The stanzas of a Packages index, keyed by package name (fields without continuations)."""
    stanzas: dict[str, dict[str, str]] = {}
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line[:1] not in ("", " ", "\t") and ": " in line:
                key, value = line.split(": ", 1)
                fields[key] = value.strip()
        if "Package" in fields:
            stanzas[fields["Package"]] = fields
    return stanzas


def parse_kernel_candidates(suite: str, text: str) -> list[KernelCandidate]:
    """The generic amd64 kernel releases in one suite's Packages index that ship all three debs."""
    stanzas = parse_packages(text)
    found: list[KernelCandidate] = []
    for name in stanzas:
        match = _BINARY.fullmatch(name)
        if match is None:
            continue
        release = match[1]
        names = {kind: f"linux-{kind}-{release}" for kind in KINDS}
        if all(n in stanzas for n in names.values()):
            files = {kind: _package_file(stanzas[n]) for kind, n in names.items()}
            found.append(KernelCandidate(release, suite, files))
    return found


def release_key(release: str) -> tuple[int, ...]:
    """Sort key of a generic release `X.Y.Z+debN-amd64`: (X, Y, Z, N)."""
    match = _RELEASE.fullmatch(release)
    if match is None:
        raise LabError(
            f"{release!r} is not a generic amd64 Debian kernel release (X.Y.Z+debN-amd64)"
        )
    return tuple(int(part) for part in match.groups())


def order_candidates(
    candidates: Sequence[KernelCandidate], suites: Sequence[str]
) -> list[KernelCandidate]:
    """Newest release first; for one release offered by several suites, the earlier suite first."""
    rank = {suite: index for index, suite in enumerate(suites)}
    by_suite = sorted(candidates, key=lambda c: rank.get(c.suite, len(rank)))
    return sorted(by_suite, key=lambda c: release_key(c.release), reverse=True)


def fetch_index(mirror: str, suite: str) -> str:
    """The text of `dists/<suite>/main/binary-amd64/Packages.xz` on the mirror."""
    url = f"{mirror}/dists/{suite}/main/binary-amd64/Packages.xz"
    try:
        with urllib.request.urlopen(url, timeout=NETWORK_TIMEOUT_S) as response:
            data: bytes = response.read()
        return lzma.decompress(data).decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError, lzma.LZMAError) as exc:
        raise LabError(f"cannot read the {suite} package index at {url}: {exc}") from exc


def download(
    mirror: str, file: PackageFile, directory: Path, progress: Callable[[str], None]
) -> Path:
    """Download `file` into `directory` (reused when already there and intact); return its path.

    The file is written as `<name>.partial`, checked against the index's size and SHA-256, then
    renamed, so a path without the suffix is always a complete, verified package.
    """
    target = directory / Path(file.filename).name
    if target.is_file() and _sha256(target) == file.sha256:
        progress(f"{target.name}: already downloaded ({_megabytes(file.size)})")
        return target
    directory.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    url = f"{mirror}/{file.filename}"
    progress(f"downloading {target.name} ({_megabytes(file.size)})")
    start = time.monotonic()
    digest = _fetch_to(url, partial)
    if partial.stat().st_size != file.size or digest != file.sha256:
        partial.unlink()
        raise LabError(f"{url}: size or SHA-256 differs from the package index; try again")
    partial.replace(target)
    progress(f"{target.name}: done in {time.monotonic() - start:.1f} s")
    return target


def read_deb_members(deb: Path, wanted: Collection[str]) -> dict[str, bytes]:
    """The regular files named in `wanted` (paths like `usr/lib/...`) from a .deb's data part.

    `dpkg-deb --fsys-tarfile` undoes whichever compression the package uses; the tar stream is
    read once, keeping only the wanted members. Missing members are simply absent from the result.
    """
    command = ["dpkg-deb", "--fsys-tarfile", str(deb)]
    try:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            stdout, stderr = _pipes(proc)
            found = _read_tar_members(stdout, wanted)
            stdout.read()  # drain, so dpkg-deb exits on its own
            problem = stderr.read().decode(errors="replace").strip()
    except (OSError, tarfile.TarError) as exc:
        raise LabError(f"cannot read {deb}: {exc}") from exc
    if proc.returncode != 0:
        raise LabError(f"dpkg-deb could not read {deb}: {problem}")
    return found


def _read_tar_members(stream: IO[bytes], wanted: Collection[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            name = member.name.removeprefix("./")
            if name in wanted and member.isfile():
                extracted = archive.extractfile(member)
                if extracted is not None:
                    found[name] = extracted.read()
    return found


def _pipes(proc: subprocess.Popen[bytes]) -> tuple[IO[bytes], IO[bytes]]:
    if proc.stdout is None or proc.stderr is None:
        raise LabError("dpkg-deb started without pipes")
    return proc.stdout, proc.stderr


def package_file(stanzas: Mapping[str, Mapping[str, str]], name: str, suite: str) -> PackageFile:
    """The .deb of package `name` in a parsed index of `suite`; LabError when it is not there."""
    if name not in stanzas:
        raise LabError(f"the {suite} package index has no {name}")
    return _package_file(stanzas[name])


def _package_file(stanza: Mapping[str, str]) -> PackageFile:
    try:
        return PackageFile(
            package=stanza["Package"],
            version=stanza["Version"],
            filename=stanza["Filename"],
            size=int(stanza["Size"]),
            sha256=stanza["SHA256"],
        )
    except (KeyError, ValueError) as exc:
        name = stanza.get("Package", "?")
        raise LabError(f"package index entry for {name} lacks a field: {exc}") from exc


def _fetch_to(url: str, path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with (
            urllib.request.urlopen(url, timeout=NETWORK_TIMEOUT_S) as response,
            path.open("wb") as out,
        ):
            while chunk := response.read(_CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        path.unlink(missing_ok=True)
        raise LabError(f"cannot download {url}: {exc}") from exc
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
