"""The image's SBOM: SPDX 2.3 JSON, read from the image archive itself.

Nothing here comes from a list we keep. One pass over the image's layer reads:

- every `/var/lib/dpkg/status.d/<package>`: the Debian packages (`rootfs.py` writes them from
  the packages' own control files);
- every `*.dist-info/METADATA` in the image's site directory: the Python distributions, the
  `temper` wheel among them;
- `/usr/local/share/temper/scx_layered/Cargo.lock`: the crates scx_layered was built from with
  `cargo install --locked`. A lock file lists every crate the build may use on any platform,
  so this is a superset of what is linked in; the scx_layered crate itself is marked as patched.

Each becomes an SPDX package with a package URL (purl), and the image is the package the
document describes and that contains them all (SPDX 2.3, clauses 7 and 11; the purl types
`deb`, `pypi`, `cargo` and `oci` from the package-url specification). The document namespace is
a `urn:uuid` derived from the image's manifest digest: one image, one namespace.
"""

from __future__ import annotations

import re
import tarfile
import tomllib
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from temper_release import oci
from temper_release.errors import ReleaseError
from temper_release.image import IMAGE_NAME, SCX_DOC
from temper_release.pythonenv import SITE
from temper_release.rootfs import DISTRO, STATUS_DIR, parse_control

CARGO_LOCK = f"{SCX_DOC}/Cargo.lock"
METADATA = re.compile(rf"^{re.escape(SITE)}/[^/]+\.dist-info/METADATA$")
NOASSERTION = "NOASSERTION"


@dataclass(frozen=True)
class Component:
    kind: str  # "deb", "pypi", "cargo"
    name: str
    version: str
    purl: str
    license: str = NOASSERTION
    checksum_sha256: str = ""
    comment: str = ""


@dataclass
class Contents:
    """What the image holds, by ecosystem."""

    debian: list[Component] = field(default_factory=list)
    python: list[Component] = field(default_factory=list)
    crates: list[Component] = field(default_factory=list)

    def all(self) -> list[Component]:
        return [*self.debian, *self.python, *self.crates]


def read_contents(archive: Path, architecture: str, scx_patched: str) -> Contents:
    """The Debian packages, Python distributions and crates in the image archive's layer."""
    contents = Contents()
    cargo_lock = ""
    for name, text in _wanted_files(archive):
        if name.startswith(STATUS_DIR + "/"):
            fields = parse_control(text)
            contents.debian.append(_debian(fields, architecture))
        elif METADATA.match(name):
            contents.python.append(_python(text))
        elif name == CARGO_LOCK:
            cargo_lock = text
    if not cargo_lock:
        raise ReleaseError(f"{archive}: no /{CARGO_LOCK} in the image: scx_layered's crates")
    contents.crates = _crates(cargo_lock, scx_patched)
    for part, found in (("Debian packages", contents.debian), ("Python", contents.python)):
        if not found:
            raise ReleaseError(f"{archive}: the image holds no {part}: not an agent image")
    for found in (contents.debian, contents.python, contents.crates):
        found.sort(key=lambda c: (c.name.lower(), c.version))
    return contents


def spdx_document(
    contents: Contents, version: str, manifest_digest: str, created: int
) -> dict[str, Any]:
    image_id = "SPDXRef-Image"
    packages: list[dict[str, Any]] = [
        {
            "SPDXID": image_id,
            "name": IMAGE_NAME,
            "versionInfo": version,
            "downloadLocation": NOASSERTION,
            "filesAnalyzed": False,
            "primaryPackagePurpose": "CONTAINER",
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": "Apache-2.0",
            "copyrightText": NOASSERTION,
            "externalRefs": [_purl(f"pkg:oci/{IMAGE_NAME}@{manifest_digest}")],
        }
    ]
    relationships = [
        {
            "spdxElementId": "SPDXRef-DOCUMENT",
            "relationshipType": "DESCRIBES",
            "relatedSpdxElement": image_id,
        }
    ]
    for index, component in enumerate(contents.all()):
        spdx_id = f"SPDXRef-{component.kind}-{index}"
        package: dict[str, Any] = {
            "SPDXID": spdx_id,
            "name": component.name,
            "versionInfo": component.version,
            "downloadLocation": NOASSERTION,
            "filesAnalyzed": False,
            "licenseConcluded": NOASSERTION,
            "licenseDeclared": component.license,
            "copyrightText": NOASSERTION,
            "externalRefs": [_purl(component.purl)],
        }
        if component.checksum_sha256:
            package["checksums"] = [
                {"algorithm": "SHA256", "checksumValue": component.checksum_sha256}
            ]
        if component.comment:
            package["comment"] = component.comment
        packages.append(package)
        relationships.append(
            {
                "spdxElementId": image_id,
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": spdx_id,
            }
        )
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"{IMAGE_NAME}@{manifest_digest}")
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{IMAGE_NAME}-{version}",
        "documentNamespace": f"urn:uuid:{namespace}",
        "creationInfo": {
            "created": datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "creators": [f"Tool: temper_release-{version}"],
        },
        "documentDescribes": [image_id],
        "packages": packages,
        "relationships": relationships,
    }


def _wanted_files(archive: Path) -> Iterator[tuple[str, str]]:
    view = oci.read_archive(archive)
    layer_digest = view.manifest["layers"][0]["digest"].split(":", 1)[1]
    with tarfile.open(archive) as outer:
        blob = outer.extractfile(f"blobs/sha256/{layer_digest}")
        if blob is None:
            raise ReleaseError(f"{archive}: the layer blob is missing")
        with tarfile.open(fileobj=blob, mode="r|gz") as layer:
            for member in layer:
                name = member.name.removeprefix("./")
                wanted = (
                    name.startswith(STATUS_DIR + "/") or METADATA.match(name) or name == CARGO_LOCK
                )
                if wanted and member.isfile():
                    handle = layer.extractfile(member)
                    if handle is not None:
                        yield name, handle.read().decode("utf-8", errors="replace")


def _debian(fields: Mapping[str, str], architecture: str) -> Component:
    name, version = fields["Package"], fields["Version"]
    arch = fields.get("Architecture", architecture)
    source = fields.get("Source", "").split(" ")[0]
    qualifiers = f"arch={arch}&distro={DISTRO}" + (f"&upstream={source}" if source else "")
    return Component("deb", name, version, f"pkg:deb/debian/{name}@{version}?{qualifiers}")


def _python(text: str) -> Component:
    headers = HeaderParser().parsestr(text)
    name, version = str(headers["Name"]), str(headers["Version"])
    license_text = headers.get("License-Expression") or ""
    normal = re.sub(r"[-_.]+", "-", name).lower()
    return Component(
        "pypi",
        name,
        version,
        f"pkg:pypi/{normal}@{version}",
        license=str(license_text).strip() or NOASSERTION,
    )


def _crates(lock_text: str, patched: str) -> list[Component]:
    lock = tomllib.loads(lock_text)
    crates = []
    for package in lock.get("package", []):
        name, version = package["name"], package["version"]
        comment = "built with Temper's carry-patch (release patches/)" if name == patched else ""
        crates.append(
            Component(
                "cargo",
                name,
                version,
                f"pkg:cargo/{name}@{version}",
                checksum_sha256=package.get("checksum", ""),
                comment=comment,
            )
        )
    return crates


def _purl(locator: str) -> dict[str, str]:
    return {
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": locator,
    }
