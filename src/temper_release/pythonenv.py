"""The image's Python side: the agent's wheel and its runtime distributions, pinned and hashed.

The image runs Debian's `python3.11`. Its site directory for local installs,
`/usr/local/lib/python3.11/dist-packages`, is on that interpreter's path, so the distributions
are installed there with `pip install --target`, which never runs the image's interpreter:

- the runtime distributions from the lock (`versions/image-python-<arch>.txt`), with
  `--require-hashes`, binary wheels only, for the image's platform rather than the build
  machine's; the lock is made from the wheel's own requirements (`lock`), so it holds the
  runtime dependencies and none of the `dev` extra;
- the `temper` wheel, built from the checkout's tracked files (nothing untracked, no build
  leftovers), without dependencies;
- no bytecode (`--no-compile`): the image is read-only at run time, and a `.pyc` is what differs
  between two builds;
- each console script of the wheel as a two-line launcher in `/usr/local/bin`, on the image's
  interpreter (pip's own launchers would name the build machine's).
"""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from temper_release.errors import ReleaseError

PYTHON = "/usr/bin/python3.11"
SITE = "usr/local/lib/python3.11/dist-packages"
PYTHON_VERSION = "3.11"
ABI = "cp311"
# Debian's architecture names -> the machine part of a manylinux platform tag.
MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}
# bookworm's glibc is 2.36: any of these wheels runs on it.
MANYLINUX = ("manylinux2014", "manylinux_2_28", "manylinux_2_34")


def lock_path(checkout: Path, architecture: str) -> Path:
    return checkout / "versions" / f"image-python-{architecture}.txt"


def platform_args(architecture: str) -> list[str]:
    if architecture not in MACHINE:
        raise ReleaseError(
            f"architecture {architecture!r} is not supported (supported: {', '.join(MACHINE)})"
        )
    args = ["--only-binary=:all:", f"--python-version={PYTHON_VERSION}"]
    args += ["--implementation=cp", f"--abi={ABI}", "--abi=abi3", "--abi=none"]
    return (
        args
        + [f"--platform={tag}_{MACHINE[architecture]}" for tag in MANYLINUX]
        + ["--platform=any"]
    )


def build_wheel(checkout: Path, work: Path) -> Path:
    """The `temper` wheel, from a copy of the checkout's tracked files."""
    listed = subprocess.run(
        ["git", "-C", str(checkout), "ls-files", "-z"], capture_output=True, check=False
    )
    if listed.returncode != 0:
        raise ReleaseError(f"{checkout} is not a git checkout: {listed.stderr.decode().strip()}")
    source = work / "source"
    for name in listed.stdout.decode().split("\0"):
        if name and (checkout / name).is_file():
            target = source / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(checkout / name, target, follow_symlinks=False)
    wheels = work / "wheel"
    _pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), str(source))
    found = sorted(wheels.glob("temper-*.whl"))
    if len(found) != 1:
        raise ReleaseError(f"pip wheel left {len(found)} temper wheels in {wheels}, not one")
    return found[0]


def make_lock(wheel: Path, architecture: str) -> str:
    """The lock file's text: the wheel's runtime distributions resolved for the image."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        _pip(
            "install",
            "--dry-run",
            "--ignore-installed",
            "--target",
            str(Path(scratch) / "target"),
            "--report",
            str(report),
            *platform_args(architecture),
            str(wheel),
        )
        resolved = json.loads(report.read_text())["install"]
    lines = [
        f"# The agent image's Python distributions for {architecture}: exact, hashed, binary.",
        f"# Made by `python -m temper_release lock --arch {architecture}` from the wheel's",
        "# requirements (pyproject.toml); read by pip install --require-hashes.",
    ]
    for item in sorted(resolved, key=lambda i: i["metadata"]["name"].lower()):
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if name == "temper":
            continue
        sha256 = item["download_info"]["archive_info"]["hashes"]["sha256"]
        lines.append(f"{name}=={version} --hash=sha256:{sha256}")
    return "\n".join(lines) + "\n"


def install(root: Path, wheel: Path, lock: Path, architecture: str) -> list[str]:
    """Install the locked distributions and the wheel into the image root; the launchers'
    names."""
    if not lock.is_file():
        raise ReleaseError(
            f"{lock} does not exist: make it with `python -m temper_release lock --arch "
            f"{architecture}`"
        )
    site = root / SITE
    common = ["install", "--no-compile", "--no-warn-script-location", "--target", str(site)]
    _pip(*common, "--no-deps", "--require-hashes", *platform_args(architecture), "-r", str(lock))
    _pip(*common, "--no-deps", str(wheel))
    for direct_url in site.glob("*.dist-info/direct_url.json"):
        _forget(direct_url)  # the build machine's path to the wheel: differs between builds
    return _write_launchers(root, site)


def _forget(path: Path) -> None:
    """Delete an installed file and its line in the distribution's RECORD."""
    path.unlink()
    record = path.parent / "RECORD"
    entry = f"{path.parent.name}/{path.name},"
    lines = record.read_text().splitlines(keepends=True)
    record.write_text("".join(line for line in lines if not line.startswith(entry)))


def _write_launchers(root: Path, site: Path) -> list[str]:
    points = configparser.ConfigParser()
    found = sorted(site.glob("temper-*.dist-info/entry_points.txt"))
    if len(found) != 1:
        raise ReleaseError(f"found {len(found)} temper entry_points.txt under {site}, not one")
    points.read(found[0])
    bin_dir = root / "usr/local/bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for name, target in sorted(points["console_scripts"].items()):
        module, _, function = target.partition(":")
        launcher = bin_dir / name
        launcher.write_text(
            f"#!{PYTHON}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n"
        )
        launcher.chmod(0o755)
        names.append(name)
    shutil.rmtree(site / "bin", ignore_errors=True)  # pip's launchers, for the build machine
    return names


def _pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip()[-2000:]
        raise ReleaseError(f"pip {args[0]} exited {done.returncode}:\n{said}")
