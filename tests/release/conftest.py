"""The release tier: the agent image and the release built for real (docs/testing.md).

`image_archive` is one build of the image for the whole session (about a minute warm);
`build_image` builds another into a given directory, for the reproducibility check. A build
runs `python -m temper_release image`, as `make image` does. Without root, mmdebstrap or umoci
the tier fails and says which; it never skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from temper import __version__
from temper_release.image import archive_name

REPO = Path(__file__).resolve().parents[2]


def _build_image(out: Path) -> Path:
    if os.geteuid() != 0:
        pytest.fail("the release tier needs root (mmdebstrap --mode=root, chroot)", pytrace=False)
    for tool in ("mmdebstrap", "umoci"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run scripts/install-image-tools", pytrace=False)
    command = [sys.executable, "-m", "temper_release", "--checkout", str(REPO)]
    done = subprocess.run(
        [*command, "image", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if done.returncode != 0:
        pytest.fail(f"the image build failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
    return out / archive_name(__version__)


@pytest.fixture(scope="session")
def build_image() -> Callable[[Path], Path]:
    return _build_image


@pytest.fixture(scope="session")
def image_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build_image(tmp_path_factory.mktemp("image"))
