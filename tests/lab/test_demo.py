"""`make demo`'s own code path, short: the README's first command must not break unseen.

The same script and defaults as `make demo` (`bench/demo.py`), with one repeat, short phases and
two restarts, so CI fails when the demo would. Its figures are not judged here (one repeat of a
TCG guest decides nothing); what a person sees is: progress, the summary table, the JSON path
last, and no terminal escape codes or log dumps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(3600)


def test_the_demo_runs_end_to_end_and_speaks_to_a_person(scx_layered: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "demo.py"),
            "--repeats=1",
            "--duration-s=5",
            "--restarts=2",
            f"--out={tmp_path}",
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SCX_LAYERED": str(scx_layered)},
    )
    shown = done.stdout + done.stderr
    assert done.returncode == 0, shown[-6000:]
    assert "\x1b[" not in shown, "terminal escape codes in the demo's output"
    assert "scheduler-exit" not in shown, "the agent's log was dumped into the demo's output"
    assert "demo: interference benchmark" in done.stderr
    assert "repeat 0: temper" in done.stderr  # the guest's progress, as it came
    lines = done.stdout.strip().splitlines()
    result = json.loads(Path(lines[-1]).read_text())
    assert set(result["profiles"]) == {"light", "heavy"}
    for profile in result["profiles"].values():
        assert {"alone", "alone_pinned", "stock", "stock_cpu_idle", "temper"} <= set(
            profile["scenarios"]
        )
        assert profile["verdicts"]["p99_below_stock"]["median"] is not None
    assert result["restart_gap_ms"]["p50"] is not None
    assert any(line.startswith("LC profile light") for line in lines)
    assert lines[-2] == f"full reports: {tmp_path}"
