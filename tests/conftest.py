"""Shared fixtures: a fake 16-CPU host, Pod manifests and PodList files written from them.

`host_root`, `pod_manifest` and `write_pod_list` are the names to look for, and
`scx_layered`: the pinned scx_layered binary, built once into the cache outside the repo by
`make scx-layered` (scripts/install-scx-layered). When it is missing, tests that need it fail
with that instruction; they never skip.

After each test module the garbage is collected, so a socket or file a module left open fails
that module's last test (pytest reports the ResourceWarning in its teardown) rather than
whichever later test the collector happens to run in.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import settings

import builders
from temper.policy.machine import synthetic_shape
from temper_testing.host.fakesys import write_fake_sysfs

# Property tests assert what holds, not how fast: hypothesis's default 200 ms deadline per
# example failed a planner property on a 2-core machine busy with a lab run beside the tests.
# Speed targets are the benchmarks' (bench/).
settings.register_profile("temper", deadline=None)
settings.load_profile("temper")


@pytest.fixture(autouse=True, scope="module")
def _collect_each_modules_garbage() -> Iterator[None]:
    yield
    gc.collect()


@pytest.fixture
def host_root(tmp_path: Path) -> Path:
    """A host root whose sysfs describes 16 CPUs: one socket, 8 cores x 2 threads, one LLC."""
    return write_fake_sysfs(tmp_path / "host", synthetic_shape(1, 8, 2, 1))


@pytest.fixture
def pod_manifest() -> Callable[..., builders.PodManifest]:
    """Build a Pod manifest (a dict): `builders.pod_manifest`."""
    return builders.pod_manifest


@pytest.fixture
def write_pod_list(tmp_path: Path) -> Callable[..., Path]:
    """Write these Pod objects as a PodList JSON file named `name` in tmp_path; return its path."""

    def write(pods: Sequence[builders.PodManifest], name: str = "pods.json") -> Path:
        path = tmp_path / name
        document = {"apiVersion": "v1", "kind": "List", "items": list(pods)}
        path.write_text(json.dumps(document, indent=2), encoding="utf-8")
        return path

    return write


ROOT = Path(__file__).resolve().parents[1]


def scx_layered_path() -> Path:
    """Where scripts/install-scx-layered puts the pinned, patched version, or $SCX_LAYERED."""
    if "SCX_LAYERED" in os.environ:
        return Path(os.environ["SCX_LAYERED"])
    script = ROOT / "scripts" / "install-scx-layered"
    return Path(
        subprocess.run(
            [script, "--path"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )


@pytest.fixture(scope="session")
def scx_layered() -> Path:
    path = scx_layered_path()
    if not os.access(path, os.X_OK):
        pytest.fail(f"scx_layered not found at {path}: run `make scx-layered` first", pytrace=False)
    return path
