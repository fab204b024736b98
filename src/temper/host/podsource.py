"""The static pod source: pods from a directory of manifest files, for `temper-agent --pods-dir`.

Without a cluster the agent still needs a pod list to plan from. It reads every `*.json`,
`*.yaml` and `*.yml` file directly in one directory. Each file holds a Pod, a PodList, or several
YAML documents of either, as `temper.host.files.read_pod_list` reads them. Hidden files and
editor leftovers (`.*`, `*~`, `*.swp`) are not read. Symbolic links are followed, so a
Kubernetes ConfigMap volume (files that link through a hidden `..data` link) works as the
directory.

One bad file must not hide the rest, so a snapshot is not all-or-nothing: a file that cannot be
read or parsed becomes one line in `PodSnapshot.errors`, naming it, and the other files still
count, their pods in file-name order. A pod whose uid an earlier file (in name order) already
gave is dropped the same way, and the line names both files.

The fingerprint hashes each manifest file's name, size, modification time and inode, taken
before the files are read. A file that changes while it is being read therefore changes the next
poll's fingerprint, and the watcher reads it again: a change can cause a spare snapshot but
is never missed. The one exception is two writes of equal size within one tick of the
filesystem's clock, which look like one write.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

from temper.host.errors import HostReadError
from temper.host.files import read_pod_list
from temper.policy.pods import Pod, PodSnapshot

MANIFEST_SUFFIXES = (".json", ".yaml", ".yml")
_IGNORED_SUFFIXES = ("~", ".swp")

# (size, mtime_ns, inode) of a manifest file; () when it exists but cannot be examined (a
# dangling link), so reading it reports why.
_Stamp = tuple[int, ...]


def read_pod_dir(directory: Path) -> PodSnapshot:
    """The pods of the manifest files in `directory`; a missing directory is an error line."""
    stamps, problem = _read_stamps(directory)
    if problem is not None:
        return PodSnapshot(pods=(), errors=(problem,), fingerprint=_digest(problem))
    pods, errors = _read_files([directory / name for name in stamps])
    return PodSnapshot(pods=pods, errors=errors, fingerprint=_fingerprint(stamps))


async def watch_pod_dir(
    directory: Path, interval_s: float = 1.0
) -> AsyncGenerator[PodSnapshot, None]:
    """Yield the directory's snapshot now, then again each time its fingerprint changes.

    It polls every `interval_s` seconds, using the standard library only: polling works on every
    platform and filesystem (inotify is Linux-only, needs a dependency, and misses the link swap
    of ConfigMap volumes unless watched with care), and the agent coalesces bursts of changes
    before planning anyway, so a second's latency costs nothing. A poll only lists and stats the
    files; it reads them when the fingerprint changed. Reads run in a worker thread so a large
    file never stalls the event loop.
    """
    if not interval_s > 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    snapshot = await asyncio.to_thread(read_pod_dir, directory)
    yield snapshot
    last = snapshot.fingerprint
    while True:
        await asyncio.sleep(interval_s)
        if await asyncio.to_thread(_read_fingerprint, directory) == last:
            continue
        snapshot = await asyncio.to_thread(read_pod_dir, directory)
        if snapshot.fingerprint != last:
            last = snapshot.fingerprint
            yield snapshot


def _is_manifest_name(name: str) -> bool:
    """True for the file names the pod source reads."""
    return (
        name.endswith(MANIFEST_SUFFIXES)
        and not name.startswith(".")
        and not name.endswith(_IGNORED_SUFFIXES)
    )


def _read_fingerprint(directory: Path) -> str:
    stamps, problem = _read_stamps(directory)
    return _digest(problem) if problem is not None else _fingerprint(stamps)


def _read_stamps(directory: Path) -> tuple[dict[str, _Stamp], str | None]:
    """The manifest files of `directory` in name order with their stamps, or why there are none.

    A file that vanishes between listing and stat is left out: it is gone, and its absence
    changes the fingerprint like any other removal.
    """
    try:
        names = sorted(name for name in os.listdir(directory) if _is_manifest_name(name))
    except FileNotFoundError:
        return {}, f"{directory}: pod directory does not exist"
    except NotADirectoryError:
        return {}, f"{directory}: is not a directory"
    except OSError as exc:
        return {}, f"{directory}: cannot be listed: {exc.strerror or exc}"
    stamps = {name: _stamp(directory / name) for name in names}
    return {name: stamp for name, stamp in stamps.items() if stamp is not None}, None


def _stamp(path: Path) -> _Stamp | None:
    """The file's (size, mtime_ns, inode); None when it is gone or not a regular file."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return () if path.is_symlink() else None
    except OSError:
        return ()
    if not stat.S_ISREG(info.st_mode):
        return None
    return (info.st_size, info.st_mtime_ns, info.st_ino)


def _read_files(paths: Sequence[Path]) -> tuple[tuple[Pod, ...], tuple[str, ...]]:
    """The pods of these files, first uid wins, and one error line per problem."""
    pods: dict[str, tuple[Pod, Path]] = {}
    errors: list[str] = []
    for path in paths:
        try:
            found = read_pod_list(path)
        except HostReadError as exc:
            errors.append(str(exc))
            continue
        for pod in found:
            if pod.uid in pods:
                first, first_path = pods[pod.uid]
                errors.append(
                    f"{path}: pod {pod.key} has uid {pod.uid}, which pod {first.key} in "
                    f"{first_path} already has; skipped"
                )
            else:
                pods[pod.uid] = (pod, path)
    return tuple(pod for pod, _ in pods.values()), tuple(errors)


def _fingerprint(stamps: dict[str, _Stamp]) -> str:
    return _digest(repr(sorted(stamps.items())))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode(errors="surrogateescape")).hexdigest()
