"""Proof of enforcement on a real sched_ext kernel with the real scx_layered.

One guest boot runs `python -m temper_testing.lab.proof` (see its docstring for the checks): pods of
all five tiers on a simulated node, `temper-agent` enforcing them, per-layer task counts from the
scx_layered stats socket, and the faults a VM can produce. The report comes back as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from temper_testing.lab.provision import LabKernel
from temper_testing.lab.vm import run_in_guest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(1800)


def test_the_agent_enforces_every_tier_and_falls_back_on_faults(
    lab_kernel: LabKernel, scx_layered: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    script = (
        f"cd {REPO} && {sys.executable} -m temper_testing.lab.proof "
        f"--scx-layered {scx_layered} --out {out}/proof.json"
    )
    result = run_in_guest(lab_kernel, script, shares=[(REPO, False), (out, True)], timeout_s=1500)
    print(result.output)
    report = json.loads((out / "proof.json").read_text())
    failed = [c for c in report["checks"] if not c["ok"]]
    assert failed == [], json.dumps(failed, indent=1)
    names = {c["name"] for c in report["checks"]}
    assert {"enforcing", "config", "placement", "replacement on a tier change"} <= names
    assert "restart after SIGKILL" in names
    assert result.returncode == 0
