"""The supervisor against a fake kernel (fake sysfs) and the fake scx_layered child.

Covers the reliability rows a fake can produce deterministically: A2 load failure, A3 stall,
A6 SysRq-S, A8 foreign scheduler, A10 flapping, A12 ignored SIGTERM, B1 agent death, B6
identical config, B7 invalid config; the lab tier repeats the ones a real kernel can produce.
"""

from __future__ import annotations

import asyncio
import functools
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from builders import make_pod
from temper.agent.supervisor import Supervisor, SupervisorSettings, Transition, Wanted
from temper.host.sched_ext import SchedState, read_sched_ext
from temper.host.scheduler import SchedulerCommand
from temper.policy.lifecycle import Action, Lifecycle, LifecycleSettings, Mode
from temper.policy.machine import synthetic_shape
from temper.policy.planner import Plan, plan_node
from temper.policy.tiers import QosClass
from temper_testing.host.fakesys import write_fake_kernel, write_fake_sched_ext
from waiting import wait_until

T = TypeVar("T")
SHAPE = synthetic_shape(1, 2, 2, 1)
FAST = SupervisorSettings(start_timeout_s=10, stop_grace_s=0.5, kill_wait_s=5, poll_s=0.01)


def run(coro: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(coro(), 60))  # type: ignore[arg-type]


def critical_plan(name: str = "checkout") -> Plan:
    pod = make_pod(name, QosClass.BURSTABLE, request=500, priority_class="temper-critical")
    return plan_node([pod], SHAPE)


def with_promoted_pod(plan: Plan) -> Plan:
    """The same pods plus a Burstable one promoted to high: the running config misplaces it."""
    search = make_pod("search", QosClass.BURSTABLE, priority_class="temper-high")
    return plan_node([*[p.pod for p in plan.placements], search], SHAPE)


def fake_command(root: Path, mode: str = "ok", after_s: float = 0.5) -> SchedulerCommand:
    fake = (sys.executable, "-m", "temper_testing.host.fakescx", "--root", str(root))
    return SchedulerCommand((*fake, "--mode", mode, "--after-s", str(after_s)))


def supervisor(
    root: Path, mode: str = "ok", after_s: float = 0.5, **life: float
) -> tuple[Supervisor, list[Transition]]:
    command = fake_command(root, mode, after_s)
    seen: list[Transition] = []
    lifecycle = Lifecycle(LifecycleSettings(**life)) if life else None  # type: ignore[arg-type]
    sup = Supervisor(
        host_root=root,
        read_sched_ext=functools.partial(read_sched_ext, root),
        state_dir=root / "state",
        command=command,
        report=seen.append,
        lifecycle=lifecycle,
        settings=FAST,
    )
    return sup, seen


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_fake_kernel(tmp_path / "host")


def test_start_enforce_and_stop(root: Path) -> None:
    sup, seen = supervisor(root)
    plan = critical_plan()

    async def scenario() -> None:
        assert (await sup.reconcile(Wanted(plan))).action is Action.START
        assert read_sched_ext(root).is_ours()
        assert (root / "state" / "layers.json").read_text() == plan.config_json()
        again = await sup.reconcile(Wanted(plan))
        assert (again.mode, again.action) == (Mode.ENFORCING, None)
        off = await sup.reconcile(Wanted(None))
        assert (off.mode, off.action) == (Mode.STOCK, Action.STOP)
        assert read_sched_ext(root).state is SchedState.DISABLED
        assert sup.child is None

    run(scenario)
    assert [t.mode for t in seen] == [Mode.STOCK, Mode.ENFORCING, Mode.STOCK]


def test_b6_identical_config_keeps_the_same_child(root: Path) -> None:
    sup, _ = supervisor(root)

    async def scenario() -> None:
        await sup.reconcile(Wanted(critical_plan()))
        assert sup.child is not None
        pid = sup.child.pid
        for _ in range(3):
            await sup.reconcile(Wanted(critical_plan()))
        assert sup.child is not None
        assert sup.child.pid == pid
        await sup.stop()

    run(scenario)


def test_a_new_config_restarts_only_if_the_running_one_misplaces_pods(root: Path) -> None:
    sup, _ = supervisor(root)
    first = critical_plan("checkout")
    more = plan_node(
        [*[p.pod for p in first.placements], make_pod("cart", QosClass.BURSTABLE, request=300)],
        SHAPE,
    )
    promoted = with_promoted_pod(first)

    async def scenario() -> None:
        await sup.reconcile(Wanted(first))
        assert sup.child is not None
        pid = sup.child.pid
        # A Burstable pod at its QoS default lands right under the running config.
        assert (await sup.reconcile(Wanted(more))).action is None
        # A promoted pod would be misplaced: the new config replaces the running one.
        seq = sup.attached_seq
        assert (await sup.reconcile(Wanted(promoted))).action is Action.REPLACE
        assert sup.child is not None
        assert sup.child.pid != pid
        assert sup.running_plan is promoted
        assert sup.attached_seq is not None
        assert seq is not None
        assert sup.attached_seq > seq
        assert read_sched_ext(root).is_ours()
        assert (await sup.reconcile(Wanted(promoted))).action is None
        await sup.stop()

    run(scenario)


def test_a_replacement_that_fails_to_load_leaves_the_running_scheduler(root: Path) -> None:
    sup, seen = supervisor(root)
    first = critical_plan("checkout")
    promoted = with_promoted_pod(first)

    async def scenario() -> None:
        await sup.reconcile(Wanted(first))
        assert sup.child is not None
        pid = sup.child.pid
        sup.command = fake_command(root, "fail-fast")
        assert (await sup.reconcile(Wanted(promoted))).action is Action.REPLACE
        assert sup.child is not None
        assert sup.child.pid == pid
        assert sup.running_plan is first
        assert read_sched_ext(root).is_ours()
        await sup.stop()

    run(scenario)
    assert seen[-1].mode is Mode.ENFORCING


def test_a2_a10_load_failures_park_the_node(root: Path) -> None:
    sup, seen = supervisor(root, mode="fail-fast", max_failures=3, failure_window_s=300)

    async def scenario() -> None:
        starts = 0
        for _ in range(6):
            decision = await sup.reconcile(Wanted(critical_plan()))
            starts += decision.action is Action.START
        assert starts == 3
        assert decision.mode is Mode.PARKED
        assert "load_failed" in decision.reason

    run(scenario)
    assert read_sched_ext(root).enable_seq == 0
    assert seen[-1].mode is Mode.PARKED


def test_a3_a_stall_is_a_failure_and_loads_again_within_budget(root: Path) -> None:
    sup, _ = supervisor(root, mode="stall", after_s=0.2)

    async def scenario() -> None:
        await sup.reconcile(Wanted(critical_plan()))
        await asyncio.sleep(0.6)
        decision = await sup.reconcile(Wanted(critical_plan()))
        assert decision.action is Action.START
        assert decision.reason == "scx_layered exited (stall); loading it again"
        assert sup.lifecycle.last_failure == "stall"
        await sup.stop()

    run(scenario)


def test_a12_ignored_sigterm_escalates_to_sigkill_then_sysrq(root: Path) -> None:
    sup, _ = supervisor(root, mode="ignore-term")

    async def scenario() -> None:
        await sup.reconcile(Wanted(critical_plan()))
        child = sup.child
        assert child is not None
        started = time.monotonic()
        await sup.stop()
        assert not child.running
        assert child.returncode == -9
        assert time.monotonic() - started >= FAST.stop_grace_s

    run(scenario)
    # The fake kernel still shows our scheduler after SIGKILL, so SysRq-S was sent.
    assert (root / "proc" / "sysrq-trigger").read_text() == "S"


def test_a6_sysrq_ends_the_child_and_starts_a_cool_down(root: Path) -> None:
    sup, seen = supervisor(root)

    async def scenario() -> None:
        await sup.reconcile(Wanted(critical_plan()))
        write_fake_sched_ext(root, state="disabled", ops=None, enable_seq=1)  # someone's SysRq-S
        await asyncio.sleep(0.5)  # the child notices and exits, as scx_layered does
        for _ in range(3):
            assert (await sup.reconcile(Wanted(critical_plan()))).action is None
        assert sup.child is None
        assert sup.lifecycle.failures == []

    run(scenario)
    assert "SysRq" in seen[-1].reason


def test_a8_a_foreign_scheduler_is_left_alone(root: Path) -> None:
    write_fake_sched_ext(root, state="enabled", ops="lavd_1.0.3", enable_seq=4)
    sup, _ = supervisor(root)
    decision = run(lambda: sup.reconcile(Wanted(critical_plan())))
    assert (decision.mode, decision.action) == (Mode.FOREIGN, None)
    assert sup.child is None
    assert read_sched_ext(root).ops == "lavd_1.0.3"
    assert not (root / "proc" / "sysrq-trigger").read_text()


def test_a1_no_sched_ext_refuses_loudly(tmp_path: Path) -> None:
    root = write_fake_kernel(tmp_path / "host", sched_ext=False, release="6.1.0-28-amd64")
    sup, seen = supervisor(root)
    decision = run(lambda: sup.reconcile(Wanted(critical_plan())))
    assert (decision.mode, decision.action) == (Mode.REFUSED, None)
    assert "6.12" in decision.reason
    assert "sched_ext" in decision.reason
    assert [t.mode for t in seen] == [Mode.REFUSED]


def test_b7_an_invalid_new_config_keeps_the_running_one(root: Path) -> None:
    sup, _ = supervisor(root)

    async def scenario() -> None:
        await sup.reconcile(Wanted(critical_plan()))
        kept = await sup.reconcile(Wanted(None, problems=("profile jvm.toml: unknown tier",)))
        assert (kept.mode, kept.action) == (Mode.ENFORCING, None)
        assert sup.child is not None
        await sup.stop()

    run(scenario)


def test_b1_the_child_dies_with_the_agent(root: Path) -> None:
    program = (
        "import asyncio, os, sys\n"
        "from pathlib import Path\n"
        "from temper.host.scheduler import SchedulerCommand, SchedulerProcess\n"
        "async def main():\n"
        f"    cmd = SchedulerCommand(({sys.executable!r}, '-m', 'temper_testing.host.fakescx',\n"
        f"                            '--root', {str(root)!r}))\n"
        f"    Path({str(root / 'c.json')!r}).write_text('[]')\n"
        f"    child = await SchedulerProcess.start(cmd, Path({str(root / 'c.json')!r}))\n"
        "    print(child.pid, flush=True)\n"
        "    await asyncio.sleep(0.5)\n"
        "    os._exit(9)\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=30, check=False
    )
    pid = int(done.stdout.split()[0])
    wait_until(lambda: not _alive(pid), 5, f"scheduler pid {pid} gone")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text().split()
    return stat[2] != "Z"


def test_the_old_scheduler_failing_during_a_replacement_counts_and_the_new_one_takes_over(
    root: Path,
) -> None:
    sup, _ = supervisor(root, mode="stall", after_s=1.0)
    first = critical_plan("checkout")
    promoted = with_promoted_pod(first)

    async def scenario() -> None:
        await sup.reconcile(Wanted(first))
        old = sup.child
        assert old is not None
        sup.command = fake_command(root, "slow-start", after_s=2.0)  # loads for 2 s
        assert (await sup.reconcile(Wanted(promoted))).action is Action.REPLACE
        assert sup.child is not None
        assert sup.child is not old
        assert sup.running_plan is promoted
        assert read_sched_ext(root).is_ours()
        await sup.stop()

    run(scenario)
    assert sup.lifecycle.last_failure == "stall"
    assert len(sup.lifecycle.failures) == 1


def test_a_start_cancelled_by_shutdown_leaves_no_scheduler_behind(root: Path) -> None:
    sup, _ = supervisor(root, mode="slow-start", after_s=1.5)

    async def scenario() -> None:
        task = asyncio.create_task(sup.reconcile(Wanted(critical_plan())))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await sup.stop()
        await asyncio.sleep(2.5)  # past the moment an orphan would have attached

    run(scenario)
    assert read_sched_ext(root).state is SchedState.DISABLED
