"""The release tier: the agent image, built for real (`python -m temper_release image`, as
`make image` runs it) and checked as a cluster would use it.

- Two builds of one commit give one manifest digest, and byte-identical archives.
- umoci (an OCI implementation that is not ours) unpacks it; from that root, under `chroot`
  with an empty environment, `temper-agent --version`, `temper-cli --version` and
  `scx_layered --help` run, and the agent's modules import: nothing comes from the host.
- Every ELF file's shared libraries resolve inside the root.
- It holds what it runs and nothing else: no shell, package manager, compiler, pip or test
  tooling; the Debian packages recorded in status.d are the ones whose files are there.
- Under 150 MiB uncompressed.

It needs root (mmdebstrap --mode=root and chroot), the Debian mirror of this machine's apt
configuration, the package registry for the locked Python wheels, and the cached scx_layered
(`make scx-layered`); `make test` installs mmdebstrap and umoci. Without one of them it fails
and says which; it never skips. About 2 minutes warm.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from temper import __version__
from temper_release import oci, rootfs
from temper_release.release import sha256_file

REPO = Path(__file__).resolve().parents[2]
CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
# Uncompressed, the layer: what a node's disk holds once pulled.
SIZE_LIMIT_MIB = 150


@pytest.fixture(scope="module")
def unpacked(image_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image unpacked by umoci: the bundle's rootfs."""
    work = tmp_path_factory.mktemp("umoci")
    layout = work / "layout"
    layout.mkdir()
    with tarfile.open(image_archive) as tar:
        tar.extractall(layout, filter="data")
    bundle = work / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{__version__}", str(bundle)],
        check=True,
        capture_output=True,
    )
    return bundle / "rootfs"


def in_image(root: Path, *command: str) -> subprocess.CompletedProcess[str]:
    """Run `command` under chroot in the image root, with CLEAN_ENV as its whole environment."""
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    return subprocess.run(
        [chroot, str(root), *command],
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_two_builds_of_one_commit_give_one_digest(
    image_archive: Path,
    build_image: Callable[[Path], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    again = build_image(tmp_path_factory.mktemp("second"))
    first, second = oci.read_archive(image_archive), oci.read_archive(again)
    assert first.manifest_digest == second.manifest_digest
    assert sha256_file(image_archive) == sha256_file(again)


def test_the_image_runs_the_agent_and_scx_layered_from_its_own_root(unpacked: Path) -> None:
    agent = in_image(unpacked, "/usr/local/bin/temper-agent", "--version")
    assert (agent.returncode, agent.stdout.strip()) == (0, f"temper-agent {__version__}")
    cli = in_image(unpacked, "/usr/local/bin/temper-cli", "--version")
    assert (cli.returncode, cli.stdout.strip()) == (0, f"temper-cli {__version__}")
    scx_version = (REPO / "versions/scx_layered").read_text().strip()
    version = in_image(unpacked, "/usr/local/bin/scx_layered", "--version")
    assert (version.returncode, version.stdout.split()[:2]) == (0, ["scx_layered", scx_version])
    # scx_layered prints its help on stderr and exits 255, on the build host as here.
    scx = in_image(unpacked, "/usr/local/bin/scx_layered", "--help")
    assert "--layer-order-by-weight" in scx.stderr, scx.stderr  # our patch's flag
    modules = "temper.agent.main, temper.cli.agentctl, grpc, aiohttp, yaml, prometheus_client"
    imported = in_image(unpacked, "/usr/bin/python3.11", "-c", f"import {modules}")
    assert imported.returncode == 0, imported.stderr


def test_every_elf_files_libraries_resolve_inside_the_image(unpacked: Path) -> None:
    loader = "/lib64/ld-linux-x86-64.so.2"
    unresolved = {}
    for path in _elf_files(unpacked):
        inside = "/" + path.relative_to(unpacked).as_posix()
        listed = in_image(unpacked, loader, "--list", inside)
        assert listed.returncode == 0 or "not a dynamic executable" in listed.stderr, listed
        missing = [line.strip() for line in listed.stdout.splitlines() if "not found" in line]
        if missing:
            unresolved[inside] = missing
    assert not unresolved


def test_the_image_holds_no_shell_package_manager_compiler_or_test_tooling(unpacked: Path) -> None:
    present = [
        name
        for name in (
            "bin/sh",
            "bin/bash",
            "usr/bin/dpkg",
            "usr/bin/apt",
            "usr/bin/gcc",
            "usr/bin/cc",
        )
        if (unpacked / name).exists() or (unpacked / name).is_symlink()
    ]
    site = unpacked / "usr/local/lib/python3.11/dist-packages"
    present += [p.name for p in site.iterdir() if p.name.split("-")[0] in ("pip", "setuptools")]
    present += [p.name for p in site.iterdir() if p.name.startswith(("temper_testing", "tests"))]
    assert not present


def test_status_d_records_the_debian_packages_whose_files_are_there(unpacked: Path) -> None:
    packages = {p["Package"]: p for p in rootfs.installed_packages(unpacked)}
    assert set(rootfs.PACKAGES) <= set(packages)
    assert not rootfs.PACKAGE_MANAGER & set(packages)
    # Each recorded package's copyright notice came with its files.
    missing = [n for n in packages if not (unpacked / f"usr/share/doc/{n}/copyright").exists()]
    assert not missing
    assert (unpacked / "usr/bin/python3.11").is_file()


def test_the_config_names_the_agent_and_its_revision(image_archive: Path) -> None:
    view = oci.read_archive(image_archive)
    config = view.config
    assert config["config"]["Entrypoint"] == ["/usr/local/bin/temper-agent"]
    labels = config["config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert labels["org.opencontainers.image.revision"].startswith(head)
    assert view.ref_name == __version__
    assert json.loads(view.blobs[view.manifest_digest])["layers"][0]["size"] > 0


def test_the_image_is_under_its_size_limit(image_archive: Path) -> None:
    layer_bytes = sum(member.size for member in _layer_members(image_archive) if member.isfile())
    assert layer_bytes < SIZE_LIMIT_MIB * 2**20, f"{layer_bytes / 2**20:.1f} MiB"


def _layer_members(archive: Path) -> Iterator[tarfile.TarInfo]:
    view = oci.read_archive(archive)
    digest = view.manifest["layers"][0]["digest"].split(":")[1]
    with tarfile.open(archive) as outer:
        blob = outer.extractfile(f"blobs/sha256/{digest}")
        assert blob is not None
        with tarfile.open(fileobj=blob, mode="r|gz") as layer:
            yield from layer


def _elf_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                if handle.read(4) == b"\x7fELF":
                    yield path
