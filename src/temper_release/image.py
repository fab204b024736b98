"""The agent image: `dist/temper-agent-<version>.oci.tar`, built without a container daemon.

    root filesystem   Debian's python3.11 and the shared libraries (rootfs.py)
    + Python          the locked runtime distributions and the temper wheel (pythonenv.py)
    + scx_layered     the pinned build with our patch, its Cargo.lock and the patch beside it
    -> one layer, written reproducibly as an OCI image layout archive (oci.py)

The entrypoint is `temper-agent`; the chart runs it with the flags it needs, and
`--scx-layered /usr/local/bin/scx_layered` points the agent at the binary in the image.
A failed build keeps its work directory and names it: the evidence stays.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from temper_release import oci, pythonenv, rootfs
from temper_release.errors import ReleaseError

IMAGE_NAME = "temper-agent"
SCX_LAYERED = "usr/local/bin/scx_layered"
# What the image says about how its scx_layered was built (read by the SBOM, and by a person).
SCX_DOC = "usr/local/share/temper/scx_layered"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Inputs:
    checkout: Path
    version: str
    revision: str  # the commit, "-dirty" when the tracked files differ from it
    architecture: str  # Debian's name: amd64, arm64
    epoch: int  # SOURCE_DATE_EPOCH
    scx_layered: Path  # the binary
    scx_cargo_lock: Path
    scx_patch: Path
    scx_version: str
    sources: Path  # apt sources for the Debian packages


@dataclass(frozen=True)
class Built:
    archive: Path
    manifest_digest: str
    uncompressed_bytes: int


def archive_name(version: str) -> str:
    return f"{IMAGE_NAME}-{version}.oci.tar"


def build(inputs: Inputs, out_dir: Path, progress: Progress) -> Built:
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".image-build-", dir=out_dir))
    try:
        built = _build(inputs, out_dir, work, progress)
    except Exception as error:  # any failure: say what, and keep the evidence
        raise ReleaseError(f"{error!r}\nthe build's work directory is kept: {work}") from error
    shutil.rmtree(work)
    return built


def _build(inputs: Inputs, out_dir: Path, work: Path, progress: Progress) -> Built:
    root = work / "root"
    progress(f"resolving Debian {rootfs.SUITE} packages for {inputs.architecture}")
    fetched = rootfs.fetch_packages(work, inputs.architecture, inputs.sources)
    kept = rootfs.closure(fetched, rootfs.PACKAGES)
    progress(f"unpacking {len(kept)} Debian packages (of {len(fetched)} fetched)")
    rootfs.unpack(kept, root)
    progress("building the temper wheel and installing the locked Python distributions")
    wheel = pythonenv.build_wheel(inputs.checkout, work)
    lock = pythonenv.lock_path(inputs.checkout, inputs.architecture)
    launchers = pythonenv.install(root, wheel, lock, inputs.architecture)
    progress(f"adding scx_layered {inputs.scx_version} (launchers: {', '.join(launchers)})")
    _add_scx_layered(inputs, root)
    layout = work / "layout"
    config = oci.ImageConfig(
        architecture=inputs.architecture,
        entrypoint=["/usr/local/bin/temper-agent"],
        env=["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE=1"],
        labels={
            "org.opencontainers.image.title": IMAGE_NAME,
            "org.opencontainers.image.version": inputs.version,
            "org.opencontainers.image.revision": inputs.revision,
            "org.opencontainers.image.licenses": "Apache-2.0",
            "io.temper.scx-layered.version": inputs.scx_version,
        },
    )
    progress("writing the OCI image layout")
    image = oci.write_layout(root, layout, config, inputs.version, inputs.epoch)
    archive = out_dir / archive_name(inputs.version)
    oci.write_archive(layout, archive, inputs.epoch)
    return Built(archive, image.manifest.digest, image.layer_bytes)


def _add_scx_layered(inputs: Inputs, root: Path) -> None:
    for path in (inputs.scx_layered, inputs.scx_cargo_lock, inputs.scx_patch):
        if not path.is_file():
            raise ReleaseError(f"{path} does not exist: run `make scx-layered` first")
    binary = root / SCX_LAYERED
    binary.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(inputs.scx_layered, binary)
    binary.chmod(0o755)
    doc = root / SCX_DOC
    doc.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(inputs.scx_cargo_lock, doc / "Cargo.lock")
    shutil.copyfile(inputs.scx_patch, doc / inputs.scx_patch.name)
    (doc / "VERSION").write_text(inputs.scx_version + "\n")


def git_revision(checkout: Path) -> str:
    """HEAD's commit, with `-dirty` when tracked files differ from it."""
    head = _git(checkout, "rev-parse", "HEAD")
    dirty = subprocess.run(["git", "-C", str(checkout), "diff", "--quiet", "HEAD"], check=False)
    return head + ("-dirty" if dirty.returncode else "")


def commit_epoch(checkout: Path) -> int:
    """The commit's time: the SOURCE_DATE_EPOCH a build uses unless one is given."""
    return int(_git(checkout, "log", "-1", "--format=%ct"))


def _git(checkout: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(checkout), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)} in {checkout}: {done.stderr.strip()}")
    return done.stdout.strip()
