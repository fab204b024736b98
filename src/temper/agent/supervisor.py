"""The supervisor: carries out the lifecycle's decisions against the kernel and our child.

Each `reconcile` observes (kernel gate, `/sys/kernel/sched_ext`, our child), asks the pure
`Lifecycle` what to do, and does it:

- START writes the config atomically into the state directory, starts scx_layered on it and
  waits until the kernel names our scheduler in `root/ops`, the child exits, or the start
  times out (then it is stopped and counted as a failure);
- STOP escalates SIGTERM, SIGKILL after a grace period, then SysRq-S, the last only if the
  kernel still runs the very scheduler instance our child attached (same `enable_seq`) once
  our child is gone;
- REPLACE starts the new scheduler with `--attach-when-free` while ours runs on: it loads and
  verifies its programs, says so by creating a file, and waits; only then is ours stopped, and
  the new one attaches the moment the kernel is free. A new one that fails to load or attach is
  a failure like any start, and the running one stays until then.

Every change of mode or reason is reported once, as a `Transition`, including where an action
left the node.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from temper.host.errors import HostError
from temper.host.kernel import GateResult, read_kernel_gate
from temper.host.sched_ext import SchedExtStatus, SchedState, trigger_sysrq_reset
from temper.host.scheduler import SchedulerCommand, SchedulerProcess
from temper.policy.contract import OFF, KillSwitch
from temper.policy.lifecycle import Action, ChildExit, Decision, Lifecycle, Mode, Observation
from temper.policy.planner import Plan, misplaced

CONFIG_NAME = "layers.json"
LOADED_NAME = "replacement-loaded"


@dataclass(frozen=True)
class Wanted:
    """What the agent wants running: a plan, or why nothing, or why the new plan was rejected."""

    plan: Plan | None
    nothing_reason: str = "no pod on this node has a Temper tier"
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Transition:
    mode: Mode
    reason: str
    previous: Mode | None
    action: Action | None


@dataclass(frozen=True)
class SupervisorSettings:
    # A TCG guest takes seconds to verify and attach scx_layered's BPF programs; real nodes
    # under a second. Past this the start counts as a failure.
    start_timeout_s: float = 60.0
    # scx_layered exits within milliseconds of SIGTERM; a child that has not after this is hung.
    stop_grace_s: float = 5.0
    kill_wait_s: float = 5.0
    poll_s: float = 0.02


class Supervisor:
    def __init__(
        self,
        *,
        host_root: Path,
        read_sched_ext: Callable[[], SchedExtStatus],
        state_dir: Path,
        command: SchedulerCommand,
        report: Callable[[Transition], None],
        on_exit: Callable[[ChildExit], None] | None = None,
        lifecycle: Lifecycle | None = None,
        settings: SupervisorSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host_root = host_root
        self.read_sched_ext = read_sched_ext  # the host's sched_ext state, now
        self.state_dir = state_dir
        self.command = command
        self.report = report
        self.on_exit = on_exit  # every end of a scheduler child, with its last output
        self.lifecycle = lifecycle or Lifecycle()
        self.settings = settings or SupervisorSettings()
        self.clock = clock
        self.child: SchedulerProcess | None = None
        self.running_plan: Plan | None = None
        self.last: tuple[Mode, str] | None = None
        self._exit: ChildExit | None = None
        # enable_seq when our child attached: the kernel's name for our scheduler instance.
        self.attached_seq: int | None = None
        # The gate's facts (release, config, BTF, cmdline) hold until reboot: read them once.
        self.gate: GateResult | None = None
        self.kill_switch: KillSwitch | None = OFF
        self._digests: list[tuple[Plan, str]] = []

    async def reconcile(
        self, wanted: Wanted, kill_switch: KillSwitch | None = OFF, *, reload: bool = False
    ) -> Decision:
        """One step: observe, decide, act. `kill_switch` None: not known (never loads).
        `reload`: restart a running scheduler even if its config is still right."""
        self.kill_switch = kill_switch
        await self._reap()
        decision = self.lifecycle.step(self._observe(wanted, reload=reload))
        self._report(decision)
        if decision.action in (Action.START, Action.REPLACE) and wanted.plan is not None:
            await self._start(wanted.plan, replace=decision.action is Action.REPLACE)
        elif decision.action is Action.STOP:
            await self.stop()
        if decision.action is not None:
            # Report where the action left the node (enforcing, or the failure) right away;
            # any action this follow-up asks for waits for the next reconcile.
            self._report(self.lifecycle.step(self._observe(wanted)))
        return decision

    def running_digest(self) -> str | None:
        """The sha256 of the config our running scheduler was given."""
        return self.digest(self.running_plan)

    async def stop(self) -> None:
        """Stop our child, escalating; afterwards the kernel runs no scheduler of ours."""
        child, self.child, self.running_plan = self.child, None, None
        code = None
        if child is not None:
            code = await self._terminate(child)
            self._ended(ChildExit(code, child.output_tail(), requested=True))
        status = self.read_sched_ext()
        still_ours = status.state is SchedState.ENABLED and status.enable_seq == self.attached_seq
        if still_ours and self.attached_seq is not None:
            trigger_sysrq_reset(self.host_root)
        self.attached_seq = None

    def digest(self, plan: Plan | None) -> str | None:
        """The sha256 of the plan's config, remembered for the last two plans: a reconcile
        every 2 s would otherwise render both configs again (measured: most of an idle
        agent's CPU with 50 pods, bench/reports/observe-overhead.md)."""
        if plan is None:
            return None
        for known, digest in self._digests:
            if known is plan:
                return digest
        digest = _sha256(plan)
        self._digests = [(plan, digest), *self._digests[:1]]
        return digest

    def _observe(self, wanted: Wanted, *, reload: bool = False) -> Observation:
        status = self.read_sched_ext()
        if self.child is not None and status.is_ours():
            self.attached_seq = status.enable_seq  # re-attached in process (CPU hotplug)
        running = self.running_plan
        misplaces = bool(
            running and wanted.plan and misplaced(running.layers, wanted.plan.placements)
        )
        exit_, self._exit = self._exit, None
        self.gate = self.gate or read_kernel_gate(self.host_root)
        switch = self.kill_switch
        return Observation(
            now_s=self.clock(),
            gate_reasons=self.gate.reasons,
            kill_switch=None if switch is None else switch.on,
            kill_switch_reason=switch.reason if switch is not None else "",
            kernel_state=status.state.value,
            kernel_ops=status.ops,
            child_running=self.child is not None,
            child_config=self.digest(running),
            child_exit=exit_,
            wanted_config=self.digest(wanted.plan),
            nothing_reason=wanted.nothing_reason,
            config_problems=wanted.problems,
            misplaces_pods=misplaces,
            reload_requested=reload,
        )

    async def _reap(self) -> None:
        """Notice that our child ended on its own."""
        child = self.child
        if child is not None and not child.running:
            await child.wait(self.settings.kill_wait_s)
            self.child, self.running_plan = None, None
            self._ended(ChildExit(child.returncode, child.output_tail()))

    async def _start(self, plan: Plan, *, replace: bool = False) -> None:
        loaded = self.state_dir / LOADED_NAME if replace and self.child is not None else None
        try:
            if loaded is not None:
                loaded.unlink(missing_ok=True)
            child = await SchedulerProcess.start(self.command, self._write_config(plan), loaded)
        except (HostError, OSError) as exc:
            self._ended(ChildExit(None, f"could not start: {exc}"))
            return
        try:
            await self._await_attach(child, plan, loaded)
        except asyncio.CancelledError:  # the agent is stopping: leave no half-started scheduler
            await self._terminate(child)
            raise

    async def _await_attach(self, child: SchedulerProcess, plan: Plan, loaded: Path | None) -> None:
        """Adopt `child` once the kernel runs it; a replacement first waits to be `loaded`."""
        deadline = self.clock() + self.settings.start_timeout_s
        while self.clock() < deadline:
            if not child.running:
                await child.wait(self.settings.kill_wait_s)
                self._ended(ChildExit(child.returncode, child.output_tail()))
                return
            if loaded is not None:
                if self.child is None or not self.child.running:  # the old one left by itself
                    await self._reap()
                    loaded = None
                elif loaded.exists():  # the new one is ready: make way for it
                    await self.stop()
                    loaded = None
            elif (status := self.read_sched_ext()).is_ours():
                self.child, self.running_plan = child, plan
                self.attached_seq = status.enable_seq
                return
            await asyncio.sleep(self.settings.poll_s)
        code = await self._terminate(child)
        timeout = f"did not attach within {self.settings.start_timeout_s:.0f} s"
        self._ended(ChildExit(code, f"{child.output_tail()}\n{timeout}"))

    async def _terminate(self, child: SchedulerProcess) -> int | None:
        child.send(signal.SIGTERM)
        code = await child.wait(self.settings.stop_grace_s)
        if code is None:
            child.send(signal.SIGKILL)
            code = await child.wait(self.settings.kill_wait_s)
        return code

    def _ended(self, exit_: ChildExit) -> None:
        """A scheduler child ended (or never started): the lifecycle hears of it next step."""
        self._exit = exit_
        if self.on_exit is not None:
            self.on_exit(exit_)

    def _write_config(self, plan: Plan) -> Path:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / CONFIG_NAME
        partial = path.with_suffix(".partial")
        partial.write_text(plan.config_json())
        partial.replace(path)
        return path

    def _report(self, decision: Decision) -> None:
        current = (decision.mode, decision.reason)
        if current != self.last:
            previous = self.last[0] if self.last else None
            self.report(Transition(decision.mode, decision.reason, previous, decision.action))
            self.last = current


def _sha256(plan: Plan) -> str:
    return hashlib.sha256(plan.config_json().encode()).hexdigest()
