"""The lab tier: jobs run in a QEMU guest on a sched_ext kernel (docs/testing.md).

The kernel is provisioned once per session by the project's own tooling
(`python -m temper_testing.lab provision` does the same by hand): cold, it installs QEMU and
busybox-static with apt and downloads about 120 MB from the Debian mirror in the machine's apt
configuration; warm, it touches no network. When that fails this tier fails with the reason; it
never skips.
"""

from __future__ import annotations

import sys

import pytest

from temper_testing.lab.errors import LabError
from temper_testing.lab.provision import LabKernel, provision_kernel


def _progress(line: str) -> None:
    print(f"lab: {line}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def lab_kernel() -> LabKernel:
    try:
        return provision_kernel(_progress)
    except LabError as exc:
        pytest.fail(f"cannot provision the lab kernel: {exc}", pytrace=False)
