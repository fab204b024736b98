"""The image's root filesystem, from Debian's packages: only what the agent runs on.

Problem
-------
No base image can be pulled here, and the agent image should hold its Python, scx_layered's
shared libraries and nothing else: no shell, no package manager, no compiler.

Approach
--------
1. `mmdebstrap --variant=extract` resolves and downloads `PACKAGES` with their dependencies from
   the archive this machine's apt reads (its own sources file, passed as it is), and keeps the
   `.deb` files (`--skip=cleanup/apt/cache`). Nothing is configured and no maintainer script
   runs: the agent needs files, not a booted system.
2. The image takes the *dependency closure* of `PACKAGES` among the downloaded packages
   (Depends and Pre-Depends, an alternative satisfied by name or Provides). mmdebstrap adds
   dpkg and its tools to every set; the closure leaves them out, and a dependency that dpkg
   satisfies (readline-common's `dpkg | install-info`, for its info pages) counts as met: it is
   for maintainer scripts, which never run here.
3. Each kept package is unpacked from its data archive (`dpkg-deb --fsys-tarfile`) without
   documentation, manual pages, locales or lintian overrides; its copyright file (or its doc
   directory's symlink to the package that holds it) stays. Its
   control paragraph goes to `/var/lib/dpkg/status.d/<name>`, the layout distroless images use
   and SBOM scanners read (the image has no dpkg to keep a status file).
4. `/etc/passwd` and `/etc/group` name root and nobody only, and `/tmp` is world-writable with
   the sticky bit.

Debian's bookworm is the suite: its `python3.11` is the Python the product is written for.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from temper_release.errors import ReleaseError

SUITE = "bookworm"
DISTRO = "debian-12"  # SUITE's release, as package URLs name it (`distro=`)
# What the image runs: Python 3.11 and its standard library (temper-agent, temper-cli);
# scx_layered's libelf, zlib and libgcc; grpcio's libstdc++. Their dependencies come with them.
PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libelf1", "zlib1g", "libstdc++6")
# Paths a node agent never reads. Copyright files are kept: they are the licence notices, and
# a package's doc directory may be a symlink to another's (libstdc++6 -> gcc-12-base).
PRUNED = re.compile(r"^usr/share/(doc|man|info|locale|lintian|bug)/")
KEPT = re.compile(r"^usr/share/doc/[^/]+(/copyright)?$")
STATUS_DIR = "var/lib/dpkg/status.d"
# The package manager: never in the image, and a dependency it satisfies is met without it.
PACKAGE_MANAGER = frozenset({"dpkg"})


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    architecture: str
    control: str  # the control paragraph, as dpkg-deb prints it
    path: Path

    @property
    def fields(self) -> dict[str, str]:
        return parse_control(self.control)


def apt_sources(apt_dir: Path = Path("/etc/apt")) -> Path:
    """The sources file mmdebstrap reads: the first of this machine's own apt sources files
    (deb822 `.sources` first, then `sources.list`) that names SUITE. mmdebstrap uses it as it
    is, so the image gets SUITE and whatever else that file lists for it (security updates)."""
    candidates = [*sorted(apt_dir.glob("sources.list.d/*.sources")), apt_dir / "sources.list"]
    for path in candidates:
        if path.is_file() and re.search(rf"(^|\s){SUITE}(\s|$)", path.read_text(), re.M):
            return path
    raise ReleaseError(
        f"no apt sources file under {apt_dir} names {SUITE}: the image's packages come from "
        f"Debian {SUITE}; add a sources file for it"
    )


def fetch_packages(work: Path, architecture: str, sources: Path) -> list[DebPackage]:
    """Resolve and download PACKAGES for `architecture` into `work`; every .deb, read."""
    if shutil.which("mmdebstrap") is None:
        raise ReleaseError("mmdebstrap is not installed (apt-get install mmdebstrap)")
    target = work / "fetch"
    command = [
        "mmdebstrap",
        "--quiet",
        "--mode=root",
        "--variant=extract",
        "--skip=cleanup/apt/cache",
        f"--architectures={architecture}",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(target),
        str(sources),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ReleaseError(
            f"mmdebstrap exited {done.returncode} fetching {', '.join(PACKAGES)}:\n"
            f"{done.stderr.strip()[-2000:]}"
        )
    debs = sorted((target / "var/cache/apt/archives").glob("*.deb"))
    if not debs:
        raise ReleaseError(f"mmdebstrap left no .deb files under {target}/var/cache/apt/archives")
    return [read_deb(path) for path in debs]


def read_deb(path: Path) -> DebPackage:
    done = subprocess.run(
        ["dpkg-deb", "--field", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ReleaseError(f"dpkg-deb could not read {path}: {done.stderr.strip()}")
    fields = parse_control(done.stdout)
    return DebPackage(
        name=fields["Package"],
        version=fields["Version"],
        architecture=fields["Architecture"],
        control=done.stdout.rstrip("\n") + "\n",
        path=path,
    )


def parse_control(text: str) -> dict[str, str]:
    """One Debian control paragraph -> {field: value}; continuation lines are joined."""
    fields: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and current:
            fields[current] += "\n" + line.strip()
        elif ":" in line:
            current, _, value = line.partition(":")
            fields[current] = value.strip()
    return fields


def closure(packages: Sequence[DebPackage], wanted: Iterable[str]) -> list[DebPackage]:
    """The packages `wanted` needs, by Depends and Pre-Depends, among `packages`.

    An alternative (`a | b`) is satisfied by the first one present by name or by Provides; a
    dependency none of whose alternatives was downloaded is an error (apt resolved the set, so
    that would be a bug here, not a missing package)."""
    by_name = {p.name: p for p in packages}
    provided: dict[str, str] = {}
    for package in packages:
        for provide in _names(package.fields.get("Provides", "")):
            provided.setdefault(provide, package.name)
    keep: set[str] = set()
    todo = list(wanted)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        if name not in by_name:
            raise ReleaseError(f"package {name} is wanted but was not downloaded")
        keep.add(name)
        fields = by_name[name].fields
        for group in _groups(fields.get("Pre-Depends", ""), fields.get("Depends", "")):
            if PACKAGE_MANAGER.intersection(group):
                continue
            choice = next((c for c in (_present(a, by_name, provided) for a in group) if c), None)
            if choice is None:
                raise ReleaseError(
                    f"{name} depends on {' | '.join(group)}, and none of them was downloaded"
                )
            todo.append(choice)
    return sorted((by_name[n] for n in keep), key=lambda p: p.name)


def unpack(packages: Sequence[DebPackage], root: Path) -> None:
    """Unpack each package's files into `root` (pruned) and record it in status.d."""
    status = root / STATUS_DIR
    status.mkdir(parents=True, exist_ok=True)
    for package in packages:
        _extract_data(package.path, root)
        (status / package.name).write_text(package.control)
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    (etc / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    tmp = root / "tmp"
    tmp.mkdir(exist_ok=True)
    tmp.chmod(0o1777)


def installed_packages(root: Path) -> list[Mapping[str, str]]:
    """The Debian packages an image root holds, from its status.d (for the SBOM)."""
    return [parse_control(p.read_text()) for p in sorted((root / STATUS_DIR).iterdir())]


def _extract_data(deb: Path, root: Path) -> None:
    command = ["dpkg-deb", "--fsys-tarfile", str(deb)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for member in tar:
                    name = member.name.removeprefix("./")
                    if not name or (PRUNED.match(name) and not KEPT.match(name)):
                        continue
                    tar.extract(member, root, filter="tar")
        except tarfile.TarError as error:
            said = proc.stderr.read().decode(errors="replace").strip()
            raise ReleaseError(f"unpacking {deb.name}: {error} (dpkg-deb: {said})") from None
        said = proc.stderr.read().decode(errors="replace").strip()
    if proc.returncode != 0:
        raise ReleaseError(f"dpkg-deb --fsys-tarfile {deb} exited {proc.returncode}: {said}")


def _present(
    alternative: str, by_name: Mapping[str, object], provided: Mapping[str, str]
) -> str | None:
    if alternative in by_name:
        return alternative
    return provided.get(alternative)


def _groups(*relations: str) -> list[list[str]]:
    """`a (>= 1), b | c:any` -> [["a"], ["b", "c"]]."""
    groups = []
    for relation in relations:
        for item in relation.split(","):
            if item.strip():
                groups.append(_names(item.replace("|", ",")))
    return groups


def _names(relation: str) -> list[str]:
    names = []
    for item in relation.split(","):
        name = re.sub(r"\(.*?\)|\[.*?\]|<.*?>", "", item).strip().split(":")[0]
        if name:
            names.append(name)
    return names
