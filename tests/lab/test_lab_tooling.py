"""The lab tooling's parts that need no guest: archive indexes, apt sources, QEMU's command line,
the result port's trailer, and the warm provisioning path (no network once a release is ready)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import NoReturn, cast

import pytest

from temper_testing.lab import vm
from temper_testing.lab.__main__ import parse_share
from temper_testing.lab.agentrun import agent_argv, keep_logs
from temper_testing.lab.archive import order_candidates, parse_kernel_candidates
from temper_testing.lab.errors import LabError
from temper_testing.lab.image import extract_vmlinux, missing_config
from temper_testing.lab.provision import PIN_ENV, LabKernel, debian_mirror, provision_kernel
from temper_testing.lab.qemu import LabQemu, host_codename, provision_qemu, version_key
from temper_testing.lab.vm import (
    QUIET_BOOT_S,
    EmulatorFault,
    _forward_lines,
    _guest_error,
    boot_pace,
    emulator_fault,
    parse_result_port,
    plan_shares,
    qemu_command,
    run_in_guest,
)


def stanza(package: str, version: str = "1") -> str:
    return (
        f"Package: {package}\nVersion: {version}\nFilename: pool/main/l/{package}.deb\n"
        f"Size: 10\nSHA256: {'0' * 64}\nDescription: x\n continuation: line\n"
    )


def kernel_index(*releases: str) -> str:
    kinds = ("base", "binary", "modules")
    return "\n".join(stanza(f"linux-{kind}-{r}") for r in releases for kind in kinds)


def test_only_generic_amd64_releases_with_all_three_packages_are_candidates() -> None:
    text = kernel_index("7.3.4+deb13-amd64", "7.3.4+deb13-cloud-amd64", "7.3.4+deb13-rt-amd64")
    text += "\n" + stanza("linux-binary-7.4.1+deb13-amd64")  # no base, no modules
    found = parse_kernel_candidates("trixie-backports", text)
    assert [c.release for c in found] == ["7.3.4+deb13-amd64"]
    assert found[0].packages["modules"].filename.endswith("linux-modules-7.3.4+deb13-amd64.deb")


def test_candidates_are_newest_first_and_the_earlier_suite_wins_a_tie() -> None:
    sid = parse_kernel_candidates("sid", kernel_index("7.2.13+deb14-amd64", "7.3.4+deb13-amd64"))
    bpo = parse_kernel_candidates("trixie-backports", kernel_index("7.3.4+deb13-amd64"))
    ordered = order_candidates([*sid, *bpo], ("trixie-backports", "sid"))
    assert [(c.release, c.suite) for c in ordered] == [
        ("7.3.4+deb13-amd64", "trixie-backports"),
        ("7.3.4+deb13-amd64", "sid"),
        ("7.2.13+deb14-amd64", "sid"),
    ]


def test_the_config_check_names_every_missing_option() -> None:
    config = "CONFIG_SCHED_CLASS_EXT=y\n# CONFIG_DEBUG_INFO_BTF is not set\nCONFIG_VIRTIO_PCI=m\n"
    assert missing_config(config) == [
        "CONFIG_DEBUG_INFO_BTF",
        "CONFIG_VIRTIO_PCI",
        "CONFIG_VIRTIO_CONSOLE",
        "CONFIG_PVH",
    ]


def test_a_file_that_is_not_a_bzimage_is_refused() -> None:
    with pytest.raises(LabError, match="not an x86 bzImage"):
        extract_vmlinux(b"\0" * 4096)


def test_the_mirror_comes_from_the_first_main_archive_entry(tmp_path: Path) -> None:
    sources = tmp_path / "sources.list.d"
    sources.mkdir()
    (sources / "a.sources").write_text(
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: trixie-security\n\n"
        "Enabled: no\nTypes: deb\nURIs: http://disabled.example/debian\nSuites: trixie\n\n"
        "Types: deb-src\nURIs: http://source.example/debian\nSuites: trixie\n"
    )
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian trixie main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ trixie main\n"
    )
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_no_mirror_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="no Debian archive"):
        debian_mirror(tmp_path)


@pytest.mark.parametrize(
    ("data", "returncode", "output"),
    [
        (b"a\nb\n\n__LAB_RC__=7\n", 7, "a\nb\n"),
        (b"no newline\n__LAB_RC__=0\n", 0, "no newline"),
        (b"\n__LAB_RC__=0\n", 0, ""),
        (b"partial output", None, "partial output"),
    ],
)
def test_the_result_port_splits_output_and_exit_status(
    data: bytes, returncode: int | None, output: str
) -> None:
    report = parse_result_port(data)
    assert (report.returncode, report.output, report.fatal) == (returncode, output, None)


def test_progress_gets_whole_lines_as_they_arrive_and_no_trailer(tmp_path: Path) -> None:
    result = tmp_path / "result"
    result.write_bytes(b"")
    seen: list[str] = []
    with result.open("rb") as job_output:
        for chunk in (b"[1] calibr", b"ated\n[2] rep", b"eat 0\n", b"\n__LAB_RC__=0\n"):
            with result.open("ab") as guest:
                guest.write(chunk)
            _forward_lines(job_output, seen.append)
    assert seen == ["[1] calibrated", "[2] repeat 0"]


def test_an_init_failure_is_not_an_exit_status() -> None:
    report = parse_result_port(b"\n__LAB_FATAL__=mount hostroot\n")
    assert (report.returncode, report.fatal) == (None, "mount hostroot")


def test_shares_are_checked_and_listed_parents_first(tmp_path: Path) -> None:
    (tmp_path / "repo" / "out").mkdir(parents=True)
    shares = plan_shares([(tmp_path / "repo" / "out", True), (tmp_path / "repo", False)])
    assert [(s.tag, s.path, s.writable) for s in shares] == [
        ("share0", tmp_path / "repo", False),
        ("share1", tmp_path / "repo" / "out", True),
    ]
    with pytest.raises(LabError, match="does not exist"):
        plan_shares([(tmp_path / "absent", False)])
    (tmp_path / "a,b").mkdir()
    with pytest.raises(LabError, match="cannot share"):
        plan_shares([(tmp_path / "a,b", False)])


def test_the_host_meter_must_be_in_a_writable_share(tmp_path: Path) -> None:
    kernel = LabKernel("7.3.4", tmp_path / "vmlinuz", tmp_path / "initrd", tmp_path)
    with pytest.raises(LabError, match="not in a writable share"):
        run_in_guest(kernel, "true\n", shares=[(tmp_path, False)], host_meter=tmp_path / "m")


def test_a_slow_boot_stretches_the_jobs_bound_by_the_same_factor(tmp_path: Path) -> None:
    console = tmp_path / "console"
    assert boot_pace(tmp_path) is None, "no console yet"
    console.write_bytes(b"[    1.0] Linux version 7.3.4\n")
    assert boot_pace(tmp_path) is None, "not up yet"
    console.write_bytes(f"lab: ready uptime={3 * QUIET_BOOT_S:.2f}\n".encode())
    assert boot_pace(tmp_path) == 3.0
    console.write_bytes(b"lab: ready uptime=4.10\n")
    assert boot_pace(tmp_path) == 1.0, "a fast boot keeps the quiet bound"


def test_the_emulators_text_patching_oops_is_told_from_other_deaths(tmp_path: Path) -> None:
    (tmp_path / "qemu.log").write_text("")
    console = tmp_path / "console"
    console.write_bytes(
        b"[ 136.4] Oops: int3: 0000 [#1] SMP NOPTI\n ? smp_text_poke_batch_finish\n"
    )
    fault = _guest_error("the guest never reported an exit status", tmp_path)
    assert isinstance(fault, EmulatorFault)
    assert fault.run_dir == tmp_path
    console.write_bytes(b"[ 12.0] BUG: kernel NULL pointer dereference\n")
    other = _guest_error("the guest never reported an exit status", tmp_path)
    assert type(other) is LabError, "a kernel bug of our own is never retried"


# From a CI run's console (2026-12-03): one vCPU trapped on an int3 in ttwu_do_activate while
# memory already held the patched jump (`eb`) there; no text_poke frame was printed.
_STALE_INT3 = (
    b"[  115.753914] Oops: int3: 0000 [#1] SMP NOPTI\n"
    b"[  115.762524] RIP: 0010:ttwu_do_activate+0x93/0x1b0\n"
    b"[  115.768165] Code: 00 80 f9 02 0f 44 d0 e8 ab f9 ff ff c6 43 35 01 44 89 e2 48 89 de 48 "
    b"89 ef e8 d9 fe ff ff c6 43 36 00 c7 43 18 00 00 00 00 eb <57> 48 8b 83 18 04 00 00 48\n"
    b"[  115.790921] RIP: 0010:pv_native_safe_halt+0xf/0x20\n"
    b"[  115.791167] Code: 20 d0 c3 cc cc cc cc 0f 1f 40 00 90 fb f4 <c3> cc cc cc cc 66 66\n"
)


def test_an_int3_oops_on_bytes_memory_no_longer_holds_is_the_emulators() -> None:
    assert emulator_fault(_STALE_INT3) is not None
    wild_jump = _STALE_INT3.replace(b"00 eb <57>", b"00 cc <57>")
    assert emulator_fault(wild_jump) is None, "an int3 that is in memory is the kernel's own"
    assert emulator_fault(_STALE_INT3.replace(b"int3", b"general protection")) is None


def test_a_guest_the_emulator_killed_boots_again_once_and_says_where_it_died(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    boots: list[int] = []
    result = cast(vm.GuestResult, object())

    def boot(*_args: object, **_kwargs: object) -> vm.GuestResult:
        boots.append(1)
        if len(boots) == 1:
            raise EmulatorFault("oops", tmp_path / "first")
        return result

    monkeypatch.setattr(vm, "_boot", boot)
    kernel = cast(LabKernel, None)
    assert run_in_guest(kernel, "true\n", cpus=2, cores=2, threads=1) is result
    assert len(boots) == 2
    assert f"run kept at {tmp_path / 'first'}; booting again (1 of 1)" in capsys.readouterr().err
    boots.clear()
    with pytest.raises(EmulatorFault):
        run_in_guest(kernel, "true\n", cpus=2, cores=2, threads=1, emulator_retries=0)
    assert len(boots) == 1, "the stability proof counts such deaths: no retry there"


def test_the_qemu_command_is_single_threaded_tcg_with_an_smt_topology(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    kernel = LabKernel("7.3.4+deb13-amd64", tmp_path / "vmlinux", tmp_path / "i.cpio", tmp_path)
    shares = plan_shares([(tmp_path / "out", True)])
    argv = qemu_command(
        kernel, tmp_path, tmp_path / "job.sh", shares, cpus=4, cores=2, threads=2, memory_mb=2048
    )
    assert argv[argv.index("-accel") + 1] == "tcg,thread=single"
    assert argv[argv.index("-smp") + 1] == "4,cores=2,threads=2"
    append = argv[argv.index("-append") + 1]
    assert f"lab_script={tmp_path}/job.sh" in append
    assert f"lab_shares=share0:{tmp_path}/out:rw" in append
    assert "virtserialport,chardev=result,name=lab.result" in argv


def test_the_lab_qemu_runs_each_vcpu_on_its_own_thread_from_its_own_data_dir(
    tmp_path: Path,
) -> None:
    qemu = LabQemu(tmp_path / "usr/bin/qemu-system-x86_64", tmp_path / "usr/share/qemu", "1:10.0.2")
    kernel = LabKernel(
        "7.3.4+deb13-amd64", tmp_path / "vmlinux", tmp_path / "i.cpio", tmp_path, qemu.accel()
    )
    argv = qemu_command(
        kernel, tmp_path, tmp_path / "job.sh", [], cpus=2, cores=2, threads=1, memory_mb=512
    )
    assert argv[0] == str(qemu.binary)
    assert argv[argv.index("-L") + 1] == str(qemu.firmware)
    assert argv[argv.index("-accel") + 1] == "tcg,thread=multi"
    assert argv[argv.index("-cpu") + 1] == "max"
    assert "temper-lab,debug-threads=on" in argv  # vCPU threads named for pinning


@pytest.mark.parametrize(
    ("version", "key"), [("1:10.0.2+ds-2+deb13u1~bpo12+1", (10, 0)), ("7.2+dfsg-7", (7, 2))]
)
def test_qemu_versions_are_read_from_debian_version_strings(
    version: str, key: tuple[int, int]
) -> None:
    assert version_key(version) == key


def test_the_backports_suite_comes_from_the_host_codename(tmp_path: Path) -> None:
    release = tmp_path / "os-release"
    release.write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_CODENAME=bookworm\n')
    assert host_codename(release) == "bookworm"
    release.write_text("ID=debian\n")
    with pytest.raises(LabError, match="VERSION_CODENAME"):
        host_codename(release)


def ready_qemu(cache: Path, version: str = "1:10.0.2") -> Path:
    directory = cache / "qemu" / version
    directory.mkdir(parents=True)
    (directory / "ready").write_text(version + "\n")
    (cache / "qemu" / "current").write_text(version + "\n")
    return directory


def test_a_ready_qemu_is_returned_without_the_network(tmp_path: Path) -> None:
    directory = ready_qemu(tmp_path)
    qemu = provision_qemu(tmp_path, lambda line: None, _no_network)
    assert qemu.binary == directory / "usr/bin/qemu-system-x86_64"
    assert qemu.version == "1:10.0.2"


def test_kernel_arguments_go_on_the_command_line_and_odd_ones_are_refused(tmp_path: Path) -> None:
    kernel = LabKernel("7.3.4+deb13-amd64", tmp_path / "vmlinux", tmp_path / "i.cpio", tmp_path)
    job = tmp_path / "job.sh"
    common = {"cpus": 2, "cores": 2, "threads": 1, "memory_mb": 512}
    argv = qemu_command(kernel, tmp_path, job, [], kernel_args=["isolcpus=1"], **common)
    assert " isolcpus=1 " in argv[argv.index("-append") + 1]
    with pytest.raises(LabError, match="kernel argument"):
        qemu_command(kernel, tmp_path, job, [], kernel_args=["init=/bin/sh; x"], **common)


def test_cli_share_syntax() -> None:
    assert parse_share("/work/repo") == (Path("/work/repo"), False)
    assert parse_share("/work/out:rw") == (Path("/work/out"), True)
    assert parse_share("/work/a:b") == (Path("/work/a:b"), False)


def _no_network(*args: object, **kwargs: object) -> NoReturn:
    raise AssertionError("provisioning a ready release must not touch the network")


def test_a_ready_release_is_returned_without_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = "7.3.4+deb13-amd64"
    ready = tmp_path / "kernels" / release
    (ready / "modules").mkdir(parents=True)
    for name in ("netfs", "9pnet", "9pnet_virtio", "9p"):
        (ready / "modules" / f"{name}.ko").write_bytes(b"\x7fELF")
    (ready / "vmlinux").write_bytes(b"\x7fELF")
    (ready / "config").write_text("CONFIG_SCHED_CLASS_EXT=y\n")
    (ready / "ready").write_text("now\n")
    qemu = ready_qemu(tmp_path)
    monkeypatch.setattr("urllib.request.urlopen", _no_network)
    monkeypatch.setenv(PIN_ENV, release)

    kernel = provision_kernel(lambda line: None, cache=tmp_path)

    assert kernel.release == release
    assert kernel.vmlinux == ready / "vmlinux"
    assert kernel.initrd.parent == ready
    assert kernel.initrd.stat().st_size > 1_000_000  # busybox-static and the rest, as newc cpio
    assert kernel.accel.qemu == str(qemu / "usr/bin/qemu-system-x86_64")


def test_a_killed_runner_takes_its_guest_with_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "from temper.host.scheduler import die_with_parent\n"
            "child = subprocess.Popen(['sleep', '60'], preexec_fn=die_with_parent)\n"
            f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
            "time.sleep(60)\n",
        ]
    )
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the runner never started its child"
        time.sleep(0.05)
    child = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    while Path(f"/proc/{child}").exists() and "Z" not in _state(child):
        assert time.monotonic() < deadline, "the child outlived its killed parent"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_a_jobs_logs_are_copied_beside_its_output(tmp_path: Path) -> None:
    work, share = tmp_path / "work", tmp_path / "share"
    work.mkdir()
    share.mkdir()
    (work / "agent.log").write_text("planned\n")
    (work / "pods").mkdir()  # not a log
    keep_logs(work, share / "guest.json")
    assert [p.name for p in (share / "logs").iterdir()] == ["agent.log"]
    assert (share / "logs" / "agent.log").read_text() == "planned\n"


def test_a_job_that_reports_beside_the_emulators_oops_is_its_fault_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An int3 oops in process context kills a task, not the kernel: the job still reports."""

    def qemu(_command: list[str], run_dir: Path, *_args: object, **_kw: object) -> object:
        (run_dir / "qemu.log").write_text("")
        (run_dir / "console").write_bytes(_STALE_INT3)
        (run_dir / "result").write_bytes(b"scx_layered died\n__LAB_RC__=1\n")
        return 0, {}

    monkeypatch.setattr(vm, "lab_cache", lambda: tmp_path)
    monkeypatch.setattr(vm, "qemu_command", lambda *_a, **_kw: ["qemu"])
    monkeypatch.setattr(vm, "_run_qemu", qemu)
    kernel = cast(LabKernel, SimpleNamespace(accel=SimpleNamespace(tcg_threads="multi")))
    with pytest.raises(EmulatorFault, match="the job exited 1 beside a kernel oops"):
        run_in_guest(kernel, "true\n", cpus=2, cores=2, threads=1, emulator_retries=0)
    monkeypatch.setattr(vm, "emulator_fault", lambda _console: None)
    assert run_in_guest(kernel, "true\n", cpus=2, cores=2, threads=1).returncode == 1


def test_the_agents_extra_flags_come_after_its_own(tmp_path: Path) -> None:
    argv = agent_argv(tmp_path, Path("/scx"), extra=["--observe=off"])
    assert argv[-1] == "--observe=off"
    assert argv[argv.index("--pods-dir") + 1] == str(tmp_path / "pods")
