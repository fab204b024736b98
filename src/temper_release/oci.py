"""An OCI image layout, written reproducibly from a root directory, and read back.

The image is one layer: the root filesystem `rootfs.py` assembles. Written here without a
container daemon or registry (the build machine has neither), as the OCI image-spec lays it out
(docs/release.md has the spec's sources):

    oci-layout                 {"imageLayoutVersion": "1.0.0"}
    index.json                 one manifest, named by `org.opencontainers.image.ref.name`
    blobs/sha256/<hex>         the layer (tar+gzip), the image config, the manifest

and packed into one archive (`temper-agent-<version>.oci.tar`) that `skopeo copy
oci-archive:...` and `umoci` read.

Reproducible: the same tree gives the same bytes, so two builds of one commit give one manifest
digest, whatever the build machine's clock or umask. Tar entries come depth-first, each
directory's entries sorted by name; every entry is owned by 0:0 with no user or group names and
stamped with SOURCE_DATE_EPOCH; modes are normalised (0755 for directories and for files any
execute bit is set on, 0644 for the rest, and a directory's sticky bit kept, as /tmp's); gzip
carries no name and mtime 0; JSON is written with sorted keys and no spaces; the config's
`created` is SOURCE_DATE_EPOCH. Hard links stay links, to the first path in that order. A file
of any other type (a device, a socket) is an error: the runtime gives the container its /dev.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from temper_release.errors import ReleaseError

LAYOUT_VERSION = "1.0.0"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
# On the layer's descriptor in the manifest: its size once unpacked, for the release manifest
# (what a node's disk holds; the descriptor's own size is the compressed blob's).
UNCOMPRESSED_ANNOTATION = "io.temper.layer.uncompressed-bytes"
# A mid-level compression: the layer is ~50% smaller than raw, and level 9 only costs time.
GZIP_LEVEL = 6


@dataclass(frozen=True)
class ImageConfig:
    """What the runtime reads from the image config (docs/release.md, "The layout", names the
    OCI image specification's sections)."""

    architecture: str  # GOARCH spelling: amd64, arm64
    entrypoint: Sequence[str]
    env: Sequence[str] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    os: str = "linux"


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str  # "sha256:<hex>"
    size: int

    def as_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Image:
    """A written image: its manifest's descriptor, and the uncompressed size of its layer."""

    manifest: Descriptor
    layer_bytes: int


def source_date_epoch(env: Mapping[str, str] = os.environ) -> int:
    """SOURCE_DATE_EPOCH (reproducible-builds.org): the timestamp every entry is clamped to."""
    raw = env.get("SOURCE_DATE_EPOCH")
    if raw is None:
        raise ReleaseError("SOURCE_DATE_EPOCH is not set: a reproducible image needs one timestamp")
    try:
        value = int(raw)
    except ValueError:
        raise ReleaseError(f"SOURCE_DATE_EPOCH={raw!r} is not a whole number of seconds") from None
    if value < 0:
        raise ReleaseError(f"SOURCE_DATE_EPOCH={value} is before 1970")
    return value


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def write_layout(root: Path, layout: Path, config: ImageConfig, ref_name: str, epoch: int) -> Image:
    """Write `root` as a one-layer image into the empty directory `layout`."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    staged = blobs / "layer.partial"
    with staged.open("wb") as out:
        compressed = _HashingWriter(out)
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=GZIP_LEVEL
        ) as zipped:
            raw = _HashingWriter(zipped)
            with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for info, data in tree_entries(root, epoch):
                    tar.addfile(info, data)
                    if data is not None:
                        data.close()
    layer = Descriptor(MEDIA_LAYER, compressed.digest, compressed.size)
    staged.rename(blobs / compressed.hexdigest)
    config_blob = canonical_json(
        {
            "architecture": config.architecture,
            "os": config.os,
            "created": _rfc3339(epoch),
            "config": {
                "Entrypoint": list(config.entrypoint),
                "Env": list(config.env),
                "Labels": dict(config.labels),
            },
            "rootfs": {"type": "layers", "diff_ids": [raw.digest]},
            "history": [{"created": _rfc3339(epoch), "created_by": "temper_release"}],
        }
    )
    config_desc = _write_blob(blobs, MEDIA_CONFIG, config_blob)
    manifest_blob = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config_desc.as_json(),
            "layers": [
                {
                    **layer.as_json(),
                    "annotations": {UNCOMPRESSED_ANNOTATION: str(raw.size)},
                }
            ],
            "annotations": {"org.opencontainers.image.created": _rfc3339(epoch)},
        }
    )
    manifest = _write_blob(blobs, MEDIA_MANIFEST, manifest_blob)
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                **manifest.as_json(),
                "platform": {"architecture": config.architecture, "os": config.os},
                "annotations": {REF_NAME: ref_name},
            }
        ],
    }
    (layout / "index.json").write_bytes(canonical_json(index))
    (layout / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": LAYOUT_VERSION}))
    return Image(manifest, raw.size)


def write_archive(layout: Path, archive: Path, epoch: int) -> None:
    """Pack a layout directory into one tar (`oci-archive:` in skopeo's terms)."""
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in tree_entries(layout, epoch):
            tar.addfile(info, data)
            if data is not None:
                data.close()
    partial.rename(archive)


def tree_entries(root: Path, epoch: int) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
    """Every path under `root` as a normalised tar entry, in sorted order, with its contents."""
    first_of_inode: dict[tuple[int, int], str] = {}
    for path in _sorted_walk(root):
        name = path.relative_to(root).as_posix()
        st = path.lstat()
        info = tarfile.TarInfo(name)
        info.mode = _normal_mode(st.st_mode)
        info.mtime = epoch
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        data: IO[bytes] | None = None
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in first_of_inode:
                info.type = tarfile.LNKTYPE
                info.linkname = first_of_inode[key]
            else:
                first_of_inode[key] = name
                info.size = st.st_size
                data = path.open("rb")
        else:
            raise ReleaseError(
                f"{path}: a {stat.filemode(st.st_mode)[0]!r}-type file cannot go into the image "
                "(only directories, regular files and links do; the runtime provides /dev)"
            )
        yield info, data


@dataclass(frozen=True)
class ArchiveView:
    """An image archive read back: its index and its blobs, every digest checked."""

    index: dict[str, Any]
    blobs: dict[str, bytes]  # digest -> bytes, for the index's manifest and config only
    manifest_digest: str
    ref_name: str

    @property
    def manifest(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.blobs[self.manifest_digest])
        return loaded

    @property
    def config(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.blobs[self.manifest["config"]["digest"]])
        return loaded


def read_archive(archive: Path) -> ArchiveView:
    """Open an image archive and check it: one manifest in the index, and every blob's bytes
    match its digest and size (the layer too). ReleaseError naming the first mismatch."""
    with tarfile.open(archive) as tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers()}

        def blob_bytes(descriptor: Mapping[str, Any], keep: bool = True) -> bytes:
            """The blob's bytes (empty unless `keep`), after checking its digest and size."""
            digest = str(descriptor["digest"])
            algorithm, _, hexdigest = digest.partition(":")
            member = members.get(f"blobs/{algorithm}/{hexdigest}")
            handle = tar.extractfile(member) if member else None
            if handle is None:
                raise ReleaseError(f"{archive}: blob {digest} is missing")
            hasher = hashlib.sha256()
            kept = io.BytesIO()
            size = 0
            while chunk := handle.read(1 << 20):
                hasher.update(chunk)
                size += len(chunk)
                if keep:
                    kept.write(chunk)
            if f"sha256:{hasher.hexdigest()}" != digest or size != descriptor["size"]:
                raise ReleaseError(
                    f"{archive}: blob {digest} does not match its digest or size "
                    f"(read sha256:{hasher.hexdigest()}, {size} bytes)"
                )
            return kept.getvalue()

        index_member = members.get("index.json")
        index_file = tar.extractfile(index_member) if index_member else None
        if index_file is None:
            raise ReleaseError(f"{archive}: no index.json: not an OCI image layout archive")
        index = json.loads(index_file.read())
        manifests = index.get("manifests", [])
        if len(manifests) != 1:
            raise ReleaseError(f"{archive}: the index holds {len(manifests)} manifests, not one")
        entry = manifests[0]
        manifest_raw = blob_bytes(entry)
        manifest = json.loads(manifest_raw)
        blobs = {
            entry["digest"]: manifest_raw,
            manifest["config"]["digest"]: blob_bytes(manifest["config"]),
        }
        for layer in manifest["layers"]:
            blob_bytes(layer, keep=False)
    return ArchiveView(
        index=index,
        blobs=blobs,
        manifest_digest=entry["digest"],
        ref_name=entry.get("annotations", {}).get(REF_NAME, ""),
    )


def _normal_mode(mode: int) -> int:
    """0755 or 0644 by the execute bits, and a directory's sticky bit: not the umask's say."""
    executable = stat.S_ISDIR(mode) or bool(mode & 0o111)
    sticky = stat.S_ISDIR(mode) and bool(mode & stat.S_ISVTX)
    return (0o755 if executable else 0o644) | (stat.S_ISVTX if sticky else 0)


def _sorted_walk(root: Path) -> Iterator[Path]:
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        yield entry
        if entry.is_dir() and not entry.is_symlink():
            yield from _sorted_walk(entry)


def _write_blob(blobs: Path, media_type: str, data: bytes) -> Descriptor:
    hexdigest = hashlib.sha256(data).hexdigest()
    (blobs / hexdigest).write_bytes(data)
    return Descriptor(media_type, f"sha256:{hexdigest}", len(data))


def _rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `sink`."""

    def __init__(self, sink: IO[bytes] | gzip.GzipFile) -> None:
        self._sink = sink
        self._hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._hash.update(view)
        self._sink.write(view)
        self.size += len(view)
        return len(view)

    @property
    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    @property
    def digest(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"
