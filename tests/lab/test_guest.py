"""Boot the lab kernel and check, from inside the guest, what the lab promises.

Each boot costs 6-10 s under TCG, so one boot checks everything a working guest should show;
the other two cover the ways a guest fails (killed at its timeout, never reporting a status).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from temper_testing.lab.errors import LabError
from temper_testing.lab.hostmeter import HostSample
from temper_testing.lab.provision import LabKernel
from temper_testing.lab.vm import run_in_guest

# Covers a cold provision (apt, ~120 MB of downloads) in the session fixture, then the boot.
pytestmark = pytest.mark.timeout(1800)

CHECKS = """\
echo "release=$(uname -r)"
echo "sched_ext=$(cat /sys/kernel/sched_ext/state)"
test -e /sys/kernel/btf/vmlinux && echo btf=yes
echo "siblings0=$(cat /sys/devices/system/cpu/cpu0/topology/thread_siblings_list)"
echo "repo=$(cat {repo}/marker)"
test -e {hidden} || echo hidden=yes
touch {repo}/written 2>/dev/null || echo repo_readonly=yes
echo from-guest > {out}/result.txt && echo out_written=yes
sleep 2; echo "meter=$TEMPER_LAB_HOST_METER $(cat "$TEMPER_LAB_HOST_METER")"
exit 7
"""


def parse_lines(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def test_the_guest_runs_the_lab_kernel_with_smt_and_shares(
    lab_kernel: LabKernel, tmp_path: Path
) -> None:
    repo, out = tmp_path / "repo", tmp_path / "out"
    repo.mkdir()
    out.mkdir()
    (repo / "marker").write_text("repo-visible\n")
    hidden = tmp_path / "not-shared.txt"  # under /tmp, which the guest covers with a tmpfs
    hidden.write_text("host only\n")
    script = CHECKS.format(repo=repo, out=out, hidden=hidden)

    result = run_in_guest(
        lab_kernel,
        script,
        cpus=4,
        cores=2,
        threads=2,
        shares=[(repo, False), (out, True)],
        host_meter=out / "meter",
    )

    seen = parse_lines(result.output)
    assert result.returncode == 7, result.output
    assert seen["release"] == lab_kernel.release
    assert seen["sched_ext"] == "disabled"
    assert seen.get("btf") == "yes"
    assert seen["siblings0"] == "0-1"
    assert seen["repo"] == "repo-visible"
    assert seen.get("hidden") == "yes"
    assert seen.get("repo_readonly") == "yes"
    assert seen.get("out_written") == "yes"
    assert (out / "result.txt").read_text() == "from-guest\n"
    assert not (repo / "written").exists()
    # The host's live CPU figures reach the guest (temper_testing.lab.hostmeter).
    path, sample = seen["meter"].split(" ", 1)
    assert path == str((out / "meter").resolve())
    meter = HostSample.parse(sample)
    assert meter.qemu_s > 0
    assert meter.busy_s >= meter.qemu_s
    # Multi-threaded TCG: each vCPU thread pinned to a host CPU, round robin.
    assert lab_kernel.accel.tcg_threads == "multi"
    host_cpus = sorted(os.sched_getaffinity(0))
    assert result.host is not None
    assert result.host.vcpu_pins == {v: host_cpus[v % len(host_cpus)] for v in range(4)}


def test_a_guest_past_its_timeout_is_killed_with_the_console_tail(lab_kernel: LabKernel) -> None:
    with pytest.raises(LabError, match=r"did not finish within 3 s") as raised:
        run_in_guest(lab_kernel, "sleep 600\n", cpus=2, cores=1, threads=2, timeout_s=3)
    assert "console lines" in str(raised.value)


def test_a_guest_that_never_reports_a_status_raises_with_the_console_tail(
    lab_kernel: LabKernel,
) -> None:
    power_off_now = "echo o > /proc/sysrq-trigger\nsleep 60\n"  # no trailer can be written
    with pytest.raises(LabError, match="never reported an exit status") as raised:
        run_in_guest(lab_kernel, power_off_now, cpus=2, cores=1, threads=2, timeout_s=120)
    assert "lab: ready" in str(raised.value)  # the init script's line, from the console
