"""The release a design partner installs: `make release` writes it, `make verify-release` checks it.

    dist/
      temper-agent-<version>.oci.tar        the image (`make image`)
      temper-agent-<version>.oci.tar.sig    its cosign signature
      temper-agent-<version>.spdx.json      the SBOM, read from the image (sbom.py)
      patches/scx_layered-<version>.patch   the carry-patch, exactly as the build applied it
      cosign.pub                            the public key the signatures verify with
      release.json                          version, commit, every artefact's sha256 and size,
                                            the image's manifest digest and size
      release.json.sig                      its signature

release.json names every other file with its digest, so its signature covers them all; the
image is signed on its own as well, since it is what gets pushed and pulled. Verification
(`verify`) checks both signatures against a public key, every digest release.json lists, and
every blob inside the image against its own digest; any one byte changed anywhere fails it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from temper_release import oci, sbom, signing
from temper_release.errors import ReleaseError
from temper_release.image import IMAGE_NAME, Inputs, archive_name

RELEASE_JSON = "release.json"
PUBLIC_KEY = "cosign.pub"

Progress = Callable[[str], None]


def make_release(
    inputs: Inputs, dist: Path, cosign: Path, key: signing.Key, progress: Progress
) -> Path:
    """Write the release into `dist`, beside the image `make image` left there."""
    archive = dist / archive_name(inputs.version)
    if not archive.is_file():
        raise ReleaseError(f"{archive} does not exist: run `make image` first")
    view = oci.read_archive(archive)
    built_from = view.config["config"]["Labels"].get("org.opencontainers.image.revision")
    if built_from != inputs.revision:
        raise ReleaseError(
            f"{archive} was built from {built_from}, the checkout is at {inputs.revision}: "
            "run `make image` again"
        )
    progress(f"reading the SBOM's contents from {archive.name}")
    contents = sbom.read_contents(archive, inputs.architecture, scx_patched="scx_layered")
    document = sbom.spdx_document(contents, inputs.version, view.manifest_digest, inputs.epoch)
    sbom_path = dist / f"{IMAGE_NAME}-{inputs.version}.spdx.json"
    sbom_path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    patches = dist / "patches"
    patches.mkdir(exist_ok=True)
    patch = patches / inputs.scx_patch.name
    shutil.copyfile(inputs.scx_patch, patch)
    public = dist / PUBLIC_KEY
    shutil.copyfile(key.public, public)
    layer_bytes = sum(layer["size"] for layer in view.manifest["layers"])
    manifest: dict[str, Any] = {
        "name": IMAGE_NAME,
        "version": inputs.version,
        "revision": inputs.revision,
        "architecture": inputs.architecture,
        "source_date_epoch": inputs.epoch,
        "image": {
            "file": archive.name,
            "manifest_digest": view.manifest_digest,
            "ref_name": view.ref_name,
            "layer_compressed_bytes": layer_bytes,
            "uncompressed_bytes": _uncompressed_bytes(view),
        },
        "sbom": {
            "file": sbom_path.name,
            "format": "SPDX-2.3",
            "debian_packages": len(contents.debian),
            "python_distributions": len(contents.python),
            "crates": len(contents.crates),
        },
        "patches": [
            {
                "file": f"patches/{patch.name}",
                "applies_to": {"crate": "scx_layered", "version": inputs.scx_version},
            }
        ],
        "signing": {"tool": "cosign", "key": key.origin, "public_key": PUBLIC_KEY},
        "artefacts": [_artefact(dist, path) for path in (archive, sbom_path, patch, public)],
    }
    release_json = dist / RELEASE_JSON
    release_json.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    progress(f"signing {archive.name} and {RELEASE_JSON} ({key.origin} key)")
    signing.sign(cosign, key, archive)
    signing.sign(cosign, key, release_json)
    return release_json


def verify_release(dist: Path, cosign: Path, public_key: Path) -> list[str]:
    """Every problem with the release in `dist`, checked against `public_key`; empty if none.

    release.json must verify first: until it does, nothing it says is trusted. Then the image's
    own signature, every artefact it lists (each inside `dist`; the image, the SBOM, the
    patches and the public key must all be listed), and every blob inside the image."""
    release_json = dist / RELEASE_JSON
    why = _check_signature(cosign, public_key, release_json)
    if why:
        return [why]
    try:
        manifest = json.loads(release_json.read_text())
        image = manifest["image"]
        listed = {
            str(a["file"]): (str(a["sha256"]), int(a["bytes"])) for a in manifest["artefacts"]
        }
        required = {image["file"], manifest["sbom"]["file"], PUBLIC_KEY}
        required |= {str(p["file"]) for p in manifest["patches"]}
    except (ValueError, KeyError, TypeError) as error:
        return [f"{RELEASE_JSON} is not a release manifest: {error!r}"]
    problems = [f"{name}: not listed in {RELEASE_JSON}" for name in sorted(required - set(listed))]
    for name, (sha256, size) in sorted(listed.items()):
        path = dist / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            problems.append(f"{name}: a path outside the release directory")
        elif not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(path) != sha256 or path.stat().st_size != size:
            problems.append(f"{name}: sha256 or size differs from {RELEASE_JSON}")
    if problems:
        return problems
    archive = dist / image["file"]
    why = _check_signature(cosign, public_key, archive)
    if why:
        problems.append(why)
    try:
        view = oci.read_archive(archive)
    except (ReleaseError, tarfile.TarError, ValueError, KeyError, OSError) as error:
        problems.append(f"{archive.name}: not a readable image archive: {error}")
    else:
        if view.manifest_digest != image.get("manifest_digest"):
            problems.append(f"{archive.name}: manifest digest differs from {RELEASE_JSON}")
    return problems


def _check_signature(cosign: Path, public_key: Path, path: Path) -> str | None:
    signature = path.with_name(path.name + ".sig")
    for needed in (path, signature):
        if not needed.is_file():
            return f"{needed.name} is missing"
    return signing.verify(cosign, public_key, path, signature)


def _artefact(dist: Path, path: Path) -> dict[str, Any]:
    return {
        "file": path.relative_to(dist).as_posix(),
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
    }


def _uncompressed_bytes(view: oci.ArchiveView) -> int:
    """The layers' size unpacked, from the annotation oci.write_layout puts on each."""
    try:
        return sum(
            int(layer["annotations"][oci.UNCOMPRESSED_ANNOTATION])
            for layer in view.manifest["layers"]
        )
    except (KeyError, ValueError):
        raise ReleaseError(
            f"the image's layers do not say their unpacked size ({oci.UNCOMPRESSED_ANNOTATION}):"
            " it was not built by `make image`"
        ) from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
