"""The scx tier: runs the real, pinned scx_layered binary (no sched_ext kernel needed).

The binary is built once into the cache outside the repo by `make scx-layered`
(scripts/install-scx-layered). When it is missing this tier fails with that instruction; it
never skips.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def scx_layered_path() -> Path:
    """Where scripts/install-scx-layered puts the pinned version, or $SCX_LAYERED."""
    if "SCX_LAYERED" in os.environ:
        return Path(os.environ["SCX_LAYERED"])
    version = (ROOT / "versions" / "scx_layered").read_text().strip()
    cache = Path(os.environ.get("TEMPER_CACHE", Path.home() / ".cache" / "temper"))
    return cache / "scx_layered" / version / "bin" / "scx_layered"


@pytest.fixture(scope="session")
def scx_layered() -> Path:
    path = scx_layered_path()
    if not os.access(path, os.X_OK):
        pytest.fail(f"scx_layered not found at {path}: run `make scx-layered` first", pytrace=False)
    return path
