"""python -m temper_release COMMAND: the agent image and its release, from a checkout.

    image [--arch ARCH] [--out DIR]   build DIR/temper-agent-<version>.oci.tar (`make image`)
    lock  [--arch ARCH]               rewrite versions/image-python-<arch>.txt from pyproject.toml

Run from the checkout's root (the Makefile does). SOURCE_DATE_EPOCH, when set, stamps the
image; otherwise the commit's time does. Exit 1 when a step fails (its message says which and
where its evidence is), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path

from temper_release import image, oci, pythonenv, rootfs
from temper_release.errors import ReleaseError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m temper_release", description=__doc__)
    parser.add_argument("--checkout", type=Path, default=Path.cwd(), help="the source checkout")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("image", help="build the agent image archive")
    build.add_argument("--arch", default="amd64", help="Debian architecture (default amd64)")
    build.add_argument("--out", type=Path, default=Path("dist"), help="output directory")
    lock = commands.add_parser("lock", help="rewrite the image's Python lock")
    lock.add_argument("--arch", default="amd64", help="Debian architecture (default amd64)")
    args = parser.parse_args(argv)
    checkout = args.checkout.resolve()
    try:
        if args.command == "image":
            return _image(checkout, args.arch, args.out)
        return _lock(checkout, args.arch)
    except ReleaseError as error:
        print(f"temper_release {args.command}: {error}", file=sys.stderr)
        return 1


def _image(checkout: Path, architecture: str, out: Path) -> int:
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - started:5.0f}s] image: {line}", flush=True)

    inputs = image_inputs(checkout, architecture)
    progress(f"temper {inputs.version} at {inputs.revision}, SOURCE_DATE_EPOCH={inputs.epoch}")
    built = image.build(inputs, out, progress)
    progress(
        f"{built.archive} ({built.uncompressed_bytes / 2**20:.1f} MiB uncompressed), "
        f"manifest {built.manifest_digest}"
    )
    return 0


def _lock(checkout: Path, architecture: str) -> int:
    with tempfile.TemporaryDirectory() as work:
        wheel = pythonenv.build_wheel(checkout, Path(work))
        text = pythonenv.make_lock(wheel, architecture)
    path = pythonenv.lock_path(checkout, architecture)
    path.write_text(text)
    print(f"wrote {path}")
    return 0


def image_inputs(checkout: Path, architecture: str) -> image.Inputs:
    """Everything a build reads, found from the checkout."""
    project = tomllib.loads((checkout / "pyproject.toml").read_text())["project"]
    scx_version = (checkout / "versions/scx_layered").read_text().strip()
    located = subprocess.run(
        [str(checkout / "scripts/install-scx-layered"), "--path"],
        capture_output=True,
        text=True,
        check=False,
    )
    if located.returncode != 0:
        raise ReleaseError(f"scripts/install-scx-layered --path: {located.stderr.strip()}")
    binary = Path(located.stdout.strip())
    epoch = (
        oci.source_date_epoch()
        if "SOURCE_DATE_EPOCH" in os.environ
        else image.commit_epoch(checkout)
    )
    return image.Inputs(
        checkout=checkout,
        version=str(project["version"]),
        revision=image.git_revision(checkout),
        architecture=architecture,
        epoch=epoch,
        scx_layered=binary,
        scx_cargo_lock=binary.parent.parent / "Cargo.lock",
        scx_patch=checkout / f"patches/scx_layered-{scx_version}.patch",
        scx_version=scx_version,
        sources=rootfs.apt_sources(),
    )


if __name__ == "__main__":
    sys.exit(main())
