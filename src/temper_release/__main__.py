"""python -m temper_release COMMAND: the agent image and its release, from a checkout.

    image   [--arch ARCH] [--out DIR]  build DIR/temper-agent-<version>.oci.tar (`make image`)
    release [--arch ARCH] [--out DIR]  the SBOM, the patch, release.json and signatures beside
                                       that image (`make release`; signing.py says which key)
    verify  [--out DIR] [--key PUB]    check every signature and digest (`make verify-release`)
    lock    [--arch ARCH]              rewrite versions/image-python-<arch>.txt

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

from temper_release import image, oci, pythonenv, release, rootfs, signing
from temper_release.errors import ReleaseError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m temper_release", description=__doc__)
    parser.add_argument("--checkout", type=Path, default=Path.cwd(), help="the source checkout")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("image", help="build the agent image archive")
    build.add_argument("--arch", default="amd64", help="Debian architecture (default amd64)")
    build.add_argument("--out", type=Path, default=Path("dist"), help="output directory")
    release = commands.add_parser("release", help="SBOM, patches, release.json, signatures")
    release.add_argument("--arch", default="amd64", help="Debian architecture (default amd64)")
    release.add_argument("--out", type=Path, default=Path("dist"), help="the image's directory")
    check = commands.add_parser("verify", help="check a release's signatures and digests")
    check.add_argument("--out", type=Path, default=Path("dist"), help="the release directory")
    check.add_argument("--key", type=Path, help="cosign public key (default: the release's own)")
    lock = commands.add_parser("lock", help="rewrite the image's Python lock")
    lock.add_argument("--arch", default="amd64", help="Debian architecture (default amd64)")
    args = parser.parse_args(argv)
    checkout = args.checkout.resolve()
    try:
        if args.command == "image":
            return _image(checkout, args.arch, args.out)
        if args.command == "release":
            return _release(checkout, args.arch, args.out)
        if args.command == "verify":
            return _verify(checkout, args.out, args.key)
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


def _release(checkout: Path, architecture: str, out: Path) -> int:
    cosign = signing.cosign_path(checkout)
    cache = Path(os.environ.get("TEMPER_CACHE", Path.home() / ".cache/temper"))
    key = signing.signing_key(cosign, cache)
    if key.origin == signing.DEVELOPMENT:
        print(
            f"release: signing with the development key {key.private} (set TEMPER_SIGNING_KEY "
            "to a cosign key file for a release anyone else should trust)",
            flush=True,
        )
    inputs = image_inputs(checkout, architecture)
    written = release.make_release(inputs, out, cosign, key, lambda line: print(f"release: {line}"))
    print(f"release: {written}")
    return 0


def _verify(checkout: Path, out: Path, key: Path | None) -> int:
    cosign = signing.cosign_path(checkout)
    if key is None:
        key = out / release.PUBLIC_KEY
        print(
            f"verify: with {key}, the key inside the release; pass --key with the public key "
            "you got from the publisher to know who signed it",
            flush=True,
        )
    problems = release.verify_release(out, cosign, key)
    for problem in problems:
        print(f"verify: FAILED: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"verify: {out}: every signature and digest checks")
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
