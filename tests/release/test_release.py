"""The release (`make release`, `make verify-release`), built for real around a real image.

- The release verifies with its public key: both cosign signatures and every digest.
- One byte changed in any artefact, or a different public key, fails verification and names
  what failed.
- The SBOM is valid SPDX 2.3 by the SPDX project's own validator, and lists exactly the Debian
  packages, Python distributions and crates the image holds.
- release.json carries the version, the commit, the image's digest and size, and the patch with
  the upstream version it applies to.

Signing uses a key pair made for the test (`TEMPER_SIGNING_KEY`), so the provided-key path is
the one exercised; cosign comes from the cache (`scripts/install-cosign`, run by `make test`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from temper import __version__
from temper_release import rootfs
from temper_release.image import SCX_DOC
from temper_release.pythonenv import SITE

REPO = Path(__file__).resolve().parents[2]
SCX_VERSION = (REPO / "versions/scx_layered").read_text().strip()


def cosign() -> Path:
    path = Path(
        subprocess.run(
            [REPO / "scripts/install-cosign", "--path"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    if not os.access(path, os.X_OK):
        pytest.fail(f"cosign not found at {path}: run scripts/install-cosign", pytrace=False)
    return path


def temper_release(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "temper_release", "--checkout", str(REPO), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def key_pair(directory: Path) -> Path:
    directory.mkdir(parents=True)
    subprocess.run(
        [cosign(), "generate-key-pair"],
        cwd=directory,
        env={**os.environ, "COSIGN_PASSWORD": "test-password"},
        check=True,
        capture_output=True,
    )
    return directory / "cosign.key"


@pytest.fixture(scope="module")
def dist(image_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release directory: the session's image, then `release` beside it."""
    out = tmp_path_factory.mktemp("dist")
    shutil.copyfile(image_archive, out / image_archive.name)
    key = key_pair(tmp_path_factory.mktemp("keys") / "release")
    made = temper_release(
        "release",
        "--out",
        str(out),
        env={"TEMPER_SIGNING_KEY": str(key), "COSIGN_PASSWORD": "test-password"},
    )
    assert made.returncode == 0, made.stdout + made.stderr
    return out


def release_json(dist: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((dist / "release.json").read_text())
    return loaded


def test_the_release_verifies_with_its_key(dist: Path) -> None:
    verified = temper_release("verify", "--out", str(dist), "--key", str(dist / "cosign.pub"))
    assert verified.returncode == 0, verified.stderr
    assert "every signature and digest checks" in verified.stdout


@pytest.mark.parametrize(
    "artefact",
    [
        f"temper-agent-{__version__}.oci.tar",
        f"temper-agent-{__version__}.spdx.json",
        f"patches/scx_layered-{SCX_VERSION}.patch",
        "release.json",
        "release.json.sig",
        "cosign.pub",
        f"temper-agent-{__version__}.oci.tar.sig",
    ],
)
def test_one_changed_byte_in_any_artefact_fails_verification(
    dist: Path, artefact: str, tmp_path: Path
) -> None:
    copy = tmp_path / "dist"
    shutil.copytree(dist, copy)
    target = copy / artefact
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    verified = temper_release("verify", "--out", str(copy), "--key", str(dist / "cosign.pub"))
    assert verified.returncode == 1
    assert "FAILED" in verified.stderr
    named = artefact.removesuffix(".sig").rsplit("/", 1)[-1]
    assert named in verified.stderr, verified.stderr


def test_a_missing_artefact_fails_verification(dist: Path, tmp_path: Path) -> None:
    copy = tmp_path / "dist"
    shutil.copytree(dist, copy)
    (copy / f"temper-agent-{__version__}.spdx.json").unlink()
    verified = temper_release("verify", "--out", str(copy), "--key", str(dist / "cosign.pub"))
    assert verified.returncode == 1
    assert f"temper-agent-{__version__}.spdx.json is missing" in verified.stderr


def test_another_key_fails_verification(dist: Path, tmp_path: Path) -> None:
    other = key_pair(tmp_path / "other").with_suffix(".pub")
    verified = temper_release("verify", "--out", str(dist), "--key", str(other))
    assert verified.returncode == 1
    assert "release.json: cosign verify-blob failed" in verified.stderr


def test_release_json_names_the_version_commit_image_and_patch(dist: Path) -> None:
    manifest = release_json(dist)
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert manifest["version"] == __version__
    assert manifest["revision"].startswith(head)
    image = manifest["image"]
    assert image["manifest_digest"].startswith("sha256:")
    assert 0 < image["layer_compressed_bytes"] < image["uncompressed_bytes"]
    assert manifest["patches"] == [
        {
            "file": f"patches/scx_layered-{SCX_VERSION}.patch",
            "applies_to": {"crate": "scx_layered", "version": SCX_VERSION},
        }
    ]
    patch = REPO / f"patches/scx_layered-{SCX_VERSION}.patch"
    assert (dist / manifest["patches"][0]["file"]).read_bytes() == patch.read_bytes()
    assert manifest["signing"] == {"tool": "cosign", "key": "provided", "public_key": "cosign.pub"}
    files = {a["file"] for a in manifest["artefacts"]}
    assert files == {
        image["file"],
        manifest["sbom"]["file"],
        manifest["patches"][0]["file"],
        "cosign.pub",
    }


def test_the_sbom_is_valid_spdx_and_lists_what_the_image_holds(
    dist: Path, image_archive: Path, tmp_path: Path
) -> None:
    sbom_path = dist / release_json(dist)["sbom"]["file"]
    messages = validate_full_spdx_document(parse_file(str(sbom_path)))
    assert not messages, [m.validation_message for m in messages[:5]]
    document = json.loads(sbom_path.read_text())
    listed: dict[str, set[tuple[str, str]]] = {"deb": set(), "pypi": set(), "cargo": set()}
    for package in document["packages"]:
        purl = package["externalRefs"][0]["referenceLocator"]
        kind = purl.removeprefix("pkg:").split("/")[0]
        if kind in listed:
            listed[kind].add((package["name"], package["versionInfo"]))
    listed["pypi"] = _normalise(listed["pypi"])
    held = _image_contents(image_archive, tmp_path)
    assert listed == held
    assert ("temper", __version__) in listed["pypi"]
    assert ("scx_layered", SCX_VERSION) in listed["cargo"]
    assert any(name == "python3.11-minimal" for name, _ in listed["deb"])


def _image_contents(archive: Path, tmp_path: Path) -> dict[str, set[tuple[str, str]]]:
    """The image's Debian packages, Python distributions and crates, read independently of
    the SBOM code: status.d paragraphs, dist-info directory names, the Cargo.lock."""
    root = tmp_path / "root"
    with tarfile.open(archive) as outer:
        index = json.load(outer.extractfile("index.json"))  # type: ignore[arg-type]
        manifest_digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(outer.extractfile(f"blobs/sha256/{manifest_digest}"))  # type: ignore[arg-type]
        layer = manifest["layers"][0]["digest"].split(":")[1]
        with tarfile.open(fileobj=outer.extractfile(f"blobs/sha256/{layer}"), mode="r|gz") as tar:
            tar.extractall(root, filter="tar")  # Debian ships absolute symlinks
    debian = {(p["Package"], p["Version"]) for p in rootfs.installed_packages(root)}
    python = set()
    for info in (root / SITE).glob("*.dist-info"):
        name, _, version = info.name.removesuffix(".dist-info").partition("-")
        python.add((name, version))
    lock = tomllib.loads((root / SCX_DOC / "Cargo.lock").read_text())
    crates = {(p["name"], p["version"]) for p in lock["package"]}
    return {"deb": debian, "pypi": _normalise(python), "cargo": crates}


def _normalise(pairs: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Names as PEP 503 compares them: a dist-info directory says `pyyaml` or `PyYAML` where
    METADATA says `PyYAML`, `prometheus_client` where it may say `prometheus-client`."""
    return {(re.sub(r"[-_.]+", "-", name).lower(), version) for name, version in pairs}
