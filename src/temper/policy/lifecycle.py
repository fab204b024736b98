"""The scheduler lifecycle: when the node runs scx_layered, when it goes back to the stock one.

Problem
-------
A BPF scheduler that misbehaves costs a node its latency or, in the worst case, stalls threads
until the kernel's watchdog throws it out. The stock scheduler is always safe. So the agent must
load `scx_layered` only when everything says yes, stop it the moment anything says no, never
fight another scheduler, and never turn a failure into a restart storm
(docs/reliability.md#the-scheduler-lifecycle; docs/reliability.md rows A1-A15, B1-B8).

Approach
--------
`Lifecycle.step` is a pure function of what the agent observed (the kernel gate, the kill
switch, `/sys/kernel/sched_ext`, our child process, the config it wants) and of a small memory
(recent failures, a SysRq cool-down). It returns the node's mode, the reason in one sentence,
and at most one action for the driver (`temper.agent.supervisor`) to carry out: START a config,
REPLACE the running one (the new scheduler loads while ours runs, and takes over once ready), or
STOP the running one. Checks run in priority order and the first that applies decides:

1. the kernel gate failed          -> REFUSED, stop anything of ours
2. another scheduler is loaded     -> FOREIGN, touch nothing
3. kill switch on or unknown       -> SAFE_MODE, stop
4. the kernel is mid-transition    -> wait (no action) until it settles
5. SysRq-S cool-down               -> STOCK, stop
6. restart budget spent            -> PARKED, stop, until failures age out of the window
7. the new config is invalid       -> keep what runs (ENFORCING) or stay STOCK
8. nothing to enforce              -> STOCK, stop
9. ours is loaded                  -> ENFORCING; REPLACE only if the running config would
                                      misplace a pod (never for identical bytes), or on an
                                      operator's reload
10. our child runs, detached        -> wait `reattach_grace_s` (CPU hotplug re-attaches in
                                      process; SysRq-S makes it exit), then STOP as a failure
11. otherwise                      -> START the wanted config

Invariants (tests/unit/test_lifecycle.py)
----------
- Never START or REPLACE while the gate fails, the kill switch is not known off, a foreign
  scheduler is loaded, the kernel is mid-transition, the budget is spent or a cool-down runs.
- Never STOP a scheduler that is not ours.
- At most `max_failures` STARTs fail within any `failure_window_s`.
- The kernel's state decides, never the agent's memory of what it did.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

OUR_OPS_PREFIX = "layered"


class Mode(enum.Enum):
    STOCK = "stock"  # the stock scheduler, by choice
    ENFORCING = "enforcing"  # our scx_layered is loaded
    REFUSED = "refused"  # the kernel gate failed; nothing is ever loaded
    FOREIGN = "foreign"  # another sched_ext scheduler is loaded; never fought
    PARKED = "parked"  # repeated failures; the stock scheduler until they age out
    SAFE_MODE = "safe-mode"  # the kill switch is on, or not known yet: the stock scheduler


class Action(enum.Enum):
    START = "start"
    STOP = "stop"
    # Start a scheduler on the wanted config that loads while ours runs, stop ours once the new
    # one is ready, and let it attach at once: the node sits on the stock scheduler only for
    # the detach-to-attach gap, not for a whole load (bench/reports/restart-gap.md).
    REPLACE = "replace"


@dataclass(frozen=True)
class ChildExit:
    """How our scx_layered process ended, as the driver saw it."""

    returncode: int | None
    output_tail: str = ""  # the last lines it printed
    requested: bool = False  # we stopped it


@dataclass(frozen=True)
class Observation:
    now_s: float  # a monotonic clock
    gate_reasons: tuple[str, ...] = ()  # empty: the kernel gate passed
    kill_switch: bool | None = False  # None: not known yet
    kill_switch_reason: str = ""  # why it is on: where the value came from
    kernel_state: str = "disabled"  # /sys/kernel/sched_ext/state, or "absent"
    kernel_ops: str | None = None  # /sys/kernel/sched_ext/root/ops
    child_running: bool = False
    child_config: str | None = None  # digest of the config our running child was given
    child_exit: ChildExit | None = None  # set once, on the step after our child ended
    wanted_config: str | None = None  # digest of the config to run; None: nothing to enforce
    nothing_reason: str = "no pod on this node has a Temper tier"
    config_problems: tuple[str, ...] = ()  # why the newest config was rejected
    misplaces_pods: bool = False  # the running config would put some pod in the wrong tier
    reload_requested: bool = False  # an operator asked for a restart (temper-cli reload)

    @property
    def foreign(self) -> bool:
        """A scheduler is loaded and it is not our child's: another tool's, or another
        scx_layered's (the ops name alone cannot tell two scx_layered instances apart)."""
        loaded = self.kernel_state in ("enabled", "enabling") and bool(self.kernel_ops)
        return loaded and not (self.child_running and self._our_ops)

    @property
    def ours(self) -> bool:
        return self.kernel_state == "enabled" and self.child_running and self._our_ops

    @property
    def _our_ops(self) -> bool:
        return (self.kernel_ops or "").startswith(OUR_OPS_PREFIX)


@dataclass(frozen=True)
class Decision:
    mode: Mode
    reason: str
    action: Action | None = None


@dataclass(frozen=True)
class LifecycleSettings:
    """Restart budget and cool-downs; each default with its reason."""

    # The scx systemd unit allows 2 starts per 30 s (services/scx.service StartLimitBurst);
    # three failures in five minutes say the config or the kernel is wrong, not bad luck.
    max_failures: int = 3
    failure_window_s: float = 300.0
    # SysRq-S is an operator's "off": honour it for a while before loading again.
    sysrq_cooldown_s: float = 600.0
    # After CPU hotplug the kernel detaches scx_layered, which re-attaches within its own process
    # (docs/scx-layered.md#stopping-exit-codes-and-exit-reasons); a SysRq-S makes it exit. Either
    # way the child settles quickly; one still detached after this is hung and is stopped as a
    # failure.
    reattach_grace_s: float = 60.0


@dataclass
class Lifecycle:
    settings: LifecycleSettings = field(default_factory=LifecycleSettings)
    failures: list[float] = field(default_factory=list)
    cooldown_until_s: float = 0.0
    last_failure: str = ""
    detached_since_s: float | None = None
    # Why our child ended on its own, until the next start reports it.
    exit_note: str | None = None

    def step(self, obs: Observation) -> Decision:
        if obs.child_exit is not None:
            self._record_exit(obs.child_exit, obs.now_s)
        stop = Action.STOP if obs.child_running else None
        for check in (self._gate, self._foreign, self._kill_switch, self._transition):
            decision = check(obs, stop)
            if decision is not None:
                return decision
        return self._after_preconditions(obs, stop)

    # -- precondition checks, in priority order ----------------------------------------------

    def _gate(self, obs: Observation, stop: Action | None) -> Decision | None:
        if not obs.gate_reasons:
            return None
        return Decision(Mode.REFUSED, "kernel gate failed: " + " ".join(obs.gate_reasons), stop)

    def _foreign(self, obs: Observation, stop: Action | None) -> Decision | None:
        if not obs.foreign:
            return None
        return Decision(Mode.FOREIGN, f"another scheduler is loaded ({obs.kernel_ops}); not ours")

    def _kill_switch(self, obs: Observation, stop: Action | None) -> Decision | None:
        if obs.kill_switch is False:
            return None
        if obs.kill_switch is None:
            reason = "kill switch not known yet (API unreachable, nothing persisted); not loading"
        else:
            reason = obs.kill_switch_reason or "kill switch on"
        return Decision(Mode.SAFE_MODE, reason, stop)

    def _transition(self, obs: Observation, stop: Action | None) -> Decision | None:
        if obs.kernel_state not in ("enabling", "disabling"):
            return None
        mode = Mode.ENFORCING if obs.child_running else Mode.STOCK
        return Decision(mode, f"sched_ext is {obs.kernel_state}; waiting for it to settle")

    # -- the rest -------------------------------------------------------------------------------

    def _after_preconditions(self, obs: Observation, stop: Action | None) -> Decision:
        now = obs.now_s
        if now < self.cooldown_until_s:
            cooldown = self.settings.sysrq_cooldown_s
            return Decision(
                Mode.STOCK, f"disabled by SysRq-S; cooling down for {cooldown:.0f} s", stop
            )
        recent = [t for t in self.failures if now - t < self.settings.failure_window_s]
        self.failures = recent
        if len(recent) >= self.settings.max_failures:
            window = self.settings.failure_window_s
            reason = (
                f"{len(recent)} failures within {window:.0f} s (last: {self.last_failure}); "
                "on the stock scheduler until they age out"
            )
            return Decision(Mode.PARKED, reason, stop)
        return self._run(obs, stop)

    def _run(self, obs: Observation, stop: Action | None) -> Decision:
        if obs.config_problems:
            problems = "; ".join(obs.config_problems)
            if obs.child_running and obs.ours:
                return Decision(
                    Mode.ENFORCING, f"new config rejected, keeping the running one: {problems}"
                )
            return Decision(Mode.STOCK, f"config rejected: {problems}")
        if obs.wanted_config is None:
            return Decision(Mode.STOCK, obs.nothing_reason, stop)
        if obs.child_running:
            return self._running(obs)
        note, self.exit_note = self.exit_note, None
        reason = f"scx_layered exited ({note}); loading it again" if note else "loading scx_layered"
        return Decision(Mode.STOCK, reason, Action.START)

    def _running(self, obs: Observation) -> Decision:
        if not obs.ours:
            return self._detached(obs)
        self.detached_since_s = None
        if obs.child_config != obs.wanted_config and obs.misplaces_pods:
            reason = "the running config would misplace pods; replacing it"
            return Decision(Mode.ENFORCING, reason, Action.REPLACE)
        if obs.reload_requested:
            return Decision(
                Mode.ENFORCING, "reload requested; replacing the scheduler", Action.REPLACE
            )
        return Decision(Mode.ENFORCING, "scx_layered is loaded and places every pod")

    def _detached(self, obs: Observation) -> Decision:
        """Our child runs but the kernel runs no scheduler: wait for it to re-attach or exit."""
        since = self.detached_since_s = self.detached_since_s or obs.now_s
        if obs.now_s - since < self.settings.reattach_grace_s:
            reason = "scx_layered is detached; waiting for it to re-attach (CPU hotplug) or exit"
            return Decision(Mode.STOCK, reason)
        self.detached_since_s = None
        self.failures.append(obs.now_s)
        self.last_failure = "detached and hung"
        return Decision(Mode.STOCK, "scx_layered stayed detached; stopping it", Action.STOP)

    def _record_exit(self, exit_: ChildExit, now: float) -> None:
        self.detached_since_s = None
        if exit_.requested:
            return
        reason = classify_exit(exit_)
        if reason == "sysrq":
            self.cooldown_until_s = now + self.settings.sysrq_cooldown_s
            return
        self.failures.append(now)
        self.last_failure = self.exit_note = reason


# The kernel's exit reasons as scx_layered prints them
# (docs/scx-layered.md#stopping-exit-codes-and-exit-reasons).
_EXIT_REASONS = (
    ("runnable task stall", "stall"),
    ("scx_bpf_error", "bpf_error"),
    ("disabled by sysrq", "sysrq"),
    ("another sched_ext scheduler is already running", "foreign"),
    ("failed to load", "load_failed"),
    ("verifier", "load_failed"),
    ("runtime error", "runtime_error"),
)


def classify_exit(exit_: ChildExit) -> str:
    """A short reason for an unrequested exit, from what scx_layered printed last."""
    text = exit_.output_tail.lower()
    for needle, reason in _EXIT_REASONS:
        if needle in text:
            return reason
    if exit_.returncode is not None and exit_.returncode < 0:
        return f"killed by signal {-exit_.returncode}"
    return f"exited with code {exit_.returncode}"
