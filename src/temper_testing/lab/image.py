"""What the guest boots: the kernel config check, an ELF vmlinux, the 9p modules, the initramfs.

- The config must have every option in `REQUIRED_CONFIG`: sched_ext and BTF for the scheduler,
  virtio PCI and console for the result port, PVH so QEMU can boot the ELF directly.
- QEMU boots an uncompressed ELF `vmlinux` through its PVH entry point, which skips the bzImage
  decompressor (noticeable under TCG). Debian's bzImage carries it as a zstd frame; the setup
  header says exactly where (`payload_offset`/`payload_length` at 0x248, counted from the
  protected-mode code after `setup_sects`), and the kernel build appends the decompressed size as
  a little-endian u32, which we check. Python 3.11 has no zstd, so the `zstd` tool decompresses.
- The root filesystem comes over virtio-9p, built as modules in Debian's kernel:
  `netfs 9pnet 9pnet_virtio 9p`, loaded in that order by the init script.
- The initramfs (newc cpio, uncompressed) holds busybox-static, those modules, the kernel config
  (the guest's /boot/config-<release>, which libbpf reads) and `init.sh`. The host has no `cpio`
  tool, so busybox's applet writes the archive.
"""

from __future__ import annotations

import lzma
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from temper_testing.lab.errors import LabError

REQUIRED_CONFIG = (
    "CONFIG_SCHED_CLASS_EXT",
    "CONFIG_DEBUG_INFO_BTF",
    "CONFIG_VIRTIO_PCI",
    "CONFIG_VIRTIO_CONSOLE",
    "CONFIG_PVH",
)
NINEP_MODULES = {  # load order -> path below usr/lib/modules/<release>/kernel, no suffix
    "netfs": "fs/netfs/netfs",
    "9pnet": "net/9p/9pnet",
    "9pnet_virtio": "net/9p/9pnet_virtio",
    "9p": "fs/9p/9p",
}
MODULE_SUFFIXES = (".ko.xz", ".ko.zst", ".ko")
BUSYBOX = Path("/bin/busybox")  # from busybox-static: the guest has no libc of its own

_HDRS_MAGIC = b"HdrS"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ELF_MAGIC = b"\x7fELF"
_PT_INTERP = 3


def parse_kernel_config(text: str) -> dict[str, str]:
    """`CONFIG_X=value` lines of a kernel config; `# CONFIG_X is not set` lines are left out."""
    options: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, value = line.split("=", 1)
            options[key] = value
    return options


def missing_config(text: str) -> list[str]:
    """The options of `REQUIRED_CONFIG` that this config does not set to `y`."""
    options = parse_kernel_config(text)
    return [option for option in REQUIRED_CONFIG if options.get(option) != "y"]


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed ELF kernel inside an x86 bzImage whose payload is zstd-compressed."""
    if bzimage[0x202:0x206] != _HDRS_MAGIC:
        raise LabError("vmlinuz is not an x86 bzImage (no HdrS setup header)")
    setup_sects = bzimage[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    payload = bzimage[start : start + payload_length]
    if payload[:4] != _ZSTD_MAGIC:
        raise LabError(
            "the bzImage payload is not zstd-compressed; only zstd kernels are supported"
        )
    (expected_size,) = struct.unpack("<I", payload[-4:])
    vmlinux = _zstd_decompress(payload[:-4])
    if vmlinux[:4] != _ELF_MAGIC or len(vmlinux) != expected_size:
        raise LabError(
            f"the decompressed kernel is not the expected ELF ({len(vmlinux)} bytes, "
            f"header says {expected_size})"
        )
    return vmlinux


def module_member_names(release: str) -> list[str]:
    """Every path a 9p module may have in the modules package, one per known suffix."""
    base = f"usr/lib/modules/{release}/kernel"
    return [
        f"{base}/{path}{suffix}" for path in NINEP_MODULES.values() for suffix in MODULE_SUFFIXES
    ]


def decompress_modules(release: str, members: Mapping[str, bytes]) -> dict[str, bytes]:
    """The 9p modules as plain `.ko` bytes, keyed by module name, from the package's members."""
    base = f"usr/lib/modules/{release}/kernel"
    modules: dict[str, bytes] = {}
    for name, path in NINEP_MODULES.items():
        found = [suffix for suffix in MODULE_SUFFIXES if f"{base}/{path}{suffix}" in members]
        if not found:
            raise LabError(f"linux-modules-{release} has no {path}.ko*")
        modules[name] = _decompress_module(found[0], members[f"{base}/{path}{found[0]}"])
    return modules


def write_initramfs(
    target: Path, init_script: bytes, modules: Mapping[str, bytes], kernel_config: bytes
) -> None:
    """Write the lab initramfs (uncompressed newc cpio) to `target`, atomically."""
    if not _is_static_elf(BUSYBOX):
        raise LabError(f"{BUSYBOX} is not a static binary: install busybox-static")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".initramfs-") as scratch:
        root = Path(scratch) / "root"
        _stage_initramfs(root, init_script, modules, kernel_config)
        names = sorted(path.relative_to(root).as_posix() for path in root.rglob("*"))
        partial = Path(scratch) / "initrd.cpio"
        with partial.open("wb") as out:
            done = subprocess.run(
                [str(BUSYBOX), "cpio", "-o", "-H", "newc", "-R", "0:0"],
                cwd=root,
                input="".join(f"{name}\n" for name in [".", *names]).encode(),
                stdout=out,
                stderr=subprocess.PIPE,
                check=False,
            )
        if done.returncode != 0:
            raise LabError(f"busybox cpio failed: {done.stderr.decode(errors='replace').strip()}")
        partial.replace(target)


def _stage_initramfs(
    root: Path, init_script: bytes, modules: Mapping[str, bytes], kernel_config: bytes
) -> None:
    for directory in ("bin", "lib/modules", "proc", "sys", "dev", "mnt", "tmp"):
        (root / directory).mkdir(parents=True)
    shutil.copyfile(BUSYBOX, root / "bin" / "busybox")
    (root / "bin" / "busybox").chmod(0o755)
    (root / "bin" / "sh").symlink_to("busybox")
    for name, data in modules.items():
        (root / "lib" / "modules" / f"{name}.ko").write_bytes(data)
    (root / "kconfig").write_bytes(kernel_config)
    (root / "init").write_bytes(init_script)
    (root / "init").chmod(0o755)


def _decompress_module(suffix: str, data: bytes) -> bytes:
    if suffix == ".ko.zst":
        return _zstd_decompress(data)
    if suffix != ".ko.xz":
        return data
    try:
        return lzma.decompress(data)
    except lzma.LZMAError as exc:
        raise LabError(f"a 9p module does not decompress: {exc}") from exc


def _zstd_decompress(data: bytes) -> bytes:
    try:
        done = subprocess.run(["zstd", "-dcq"], input=data, capture_output=True, check=False)
    except OSError as exc:
        raise LabError(f"cannot run zstd (install the zstd package): {exc}") from exc
    if done.returncode != 0:
        raise LabError(f"zstd failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def _is_static_elf(path: Path) -> bool:
    """True for a 64-bit little-endian ELF without a PT_INTERP (dynamic loader) segment."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    if data[:4] != _ELF_MAGIC or data[4] != 2 or data[5] != 1:
        return False
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    types = (struct.unpack_from("<I", data, phoff + i * phentsize)[0] for i in range(phnum))
    return _PT_INTERP not in types
