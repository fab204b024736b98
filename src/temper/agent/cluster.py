"""The agent's link to its cluster: the kill switch in, state, tier load and Events out.

`ClusterLink` belongs to one agent on one node. It starts with the kill switch remembered on
the host (unknown when nothing was kept), watches the Node for changes and remembers each,
turns every transition into an Event, and keeps `temper.io/state` and `temper.io/tier-load`
current through the `NodePublisher`, which never makes enforcement wait.

It reaches the API server through the `Kube` port, reads the kernel's sched_ext state through
the function it is given (the agent's one reader), and sees the scheduler only as the
`SchedulerState` it publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Protocol

from temper.agent.events import log_event
from temper.agent.supervisor import Transition
from temper.host.errors import HostError
from temper.host.podcgroups import read_cpu_usage_usec
from temper.host.sched_ext import SchedExtStatus
from temper.kube.api import Kube, KubeError, rfc3339
from temper.kube.nodewatch import KillSwitchFile, WatchedNode, watch_node
from temper.kube.publish import NodePublisher
from temper.policy.contract import (
    SAFE_MODE_KEY,
    STATE_KEY,
    TIER_LOAD_KEY,
    AgentState,
    KillSwitch,
    contract_mode,
    tier_load,
    tier_load_json,
)
from temper.policy.lifecycle import Mode
from temper.policy.planner import Plan


def agent_version() -> str:
    try:
        return version("temper")
    except PackageNotFoundError:
        return "unknown"


_EVENT_REASONS = {
    "observing": "TemperObserving",
    "enforcing": "TemperEnforcing",
    "safe-mode": "TemperSafeMode",
    "refused": "TemperRefused",
    "parked": "TemperParked",
}


class SchedulerState(Protocol):
    """What the Node is told about the scheduler (`temper.agent.supervisor.Supervisor`)."""

    @property
    def last(self) -> tuple[Mode, str] | None: ...
    def running_digest(self) -> str | None: ...


class ClusterLink:
    def __init__(
        self,
        kube: Kube,
        node: str,
        *,
        state_dir: Path,
        host_root: Path,
        read_sched_ext: Callable[[], SchedExtStatus],
    ) -> None:
        self.kube = kube
        self.node = node
        self.host_root = host_root  # pods' cgroups, for their CPU use
        self.read_sched_ext = read_sched_ext
        self.publisher = NodePublisher(
            kube, node, on_error=self.api_error("publish"), on_ok=lambda: self.api_ok("publish")
        )
        self.file = KillSwitchFile(state_dir)
        remembered = self.file.read()
        self.kill_switch: KillSwitch | None = (
            dataclasses.replace(remembered, reason="kill switch on (remembered on this host)")
            if remembered is not None
            else None
        )
        # Set once the kill switch has a value, remembered or read from the Node.
        self.known = asyncio.Event()
        if self.kill_switch is not None:
            self.known.set()
        self._noted: str | None = None
        self._updated = rfc3339()
        self._usage: dict[str, tuple[int, float]] = {}  # pod uid -> (usage_usec, monotonic s)
        self._used: dict[str, int] = {}  # pod uid -> millicpu over the last sample interval
        self._errors: dict[str, str] = {}

    async def watch_kill_switch(self, changed: Callable[[], None]) -> None:
        async for view in watch_node(self.kube, self.node, on_error=self.api_error("node")):
            self.api_ok("node")
            self._take(view)
            changed()

    def _take(self, view: WatchedNode) -> None:
        self.publisher.node_uid = view.uid
        switch = view.kill_switch
        if switch.note and switch.note != self._noted:
            log_event("kill-switch-value", reason=switch.note)
            self.publisher.event("TemperSafeModeValue", switch.note, warning=True)
        self._noted = switch.note
        shown = "absent" if view.raw is None else repr(view.raw)
        self.known.set()
        self.kill_switch = dataclasses.replace(
            switch, reason=f"safe mode: {SAFE_MODE_KEY} {shown} on Node {self.node}"
        )
        try:
            if self.file.read() != switch:
                self.file.write(view.raw)
        except OSError as exc:
            log_event("state-write-error", reason=f"{self.file.path}: {exc}")

    def transition(self, transition: Transition) -> None:
        mode = contract_mode(transition.mode)
        self._updated = rfc3339()
        warning = transition.mode in (Mode.REFUSED, Mode.PARKED)
        self.publisher.event(_EVENT_REASONS[mode], transition.reason, warning=warning)

    def audit(self, record: Mapping[str, object]) -> None:
        """An operator's call through the API, as an Event on the Node."""
        caller = record.get("caller") or {}
        who = caller.get("user") or caller.get("subject") if isinstance(caller, dict) else None
        outcome = record.get("outcome")
        message = f"{record.get('method')} by {who or 'unknown'}: {outcome}"
        details = record.get("message") or record.get("request")
        if details:
            message += f" ({details})"
        self.publisher.event("TemperOperatorAction", message[:1024], warning=outcome != "OK")

    def publish(self, scheduler: SchedulerState, plan: Plan | None) -> None:
        """Ask for the current state and tier load to be on the Node (CPU use as last sampled)."""
        annotations = {STATE_KEY: self._state(scheduler).to_json()}
        if plan is not None:
            annotations[TIER_LOAD_KEY] = tier_load_json(tier_load(plan, self._used))
        self.publisher.publish(annotations)

    async def goodbye(self, scheduler: SchedulerState, timeout_s: float = 3.0) -> None:
        """On shutdown: publish where the node was left, if the API server takes it in time."""
        self.publisher.publish({STATE_KEY: self._state(scheduler).to_json()})
        with contextlib.suppress(TimeoutError, KubeError):
            await asyncio.wait_for(self.publisher.flush(), timeout_s)

    def _state(self, scheduler: SchedulerState) -> AgentState:
        mode, reason = scheduler.last or (Mode.STOCK, "starting")
        try:
            status = self.read_sched_ext()
            ops, seq = status.ops, status.enable_seq
        except HostError:
            ops, seq = None, None
        return AgentState(
            mode=mode,
            reason=reason,
            ops=ops,
            enable_seq=seq,
            config_sha256=scheduler.running_digest(),
            agent_version=agent_version(),
            updated=self._updated,
        )

    def sample_usage(self, plan: Plan | None) -> None:
        """Millicpu each pod used since the last sample, from its cgroup's cpu.stat."""
        if plan is None:
            return
        now = time.monotonic()
        used: dict[str, int] = {}
        seen: dict[str, tuple[int, float]] = {}
        for placement in plan.placements:
            uid = placement.pod.uid
            try:
                usage = read_cpu_usage_usec(self.host_root, placement.cgroup_path)
            except HostError:
                usage = None
            if usage is None:
                continue
            seen[uid] = (usage, now)
            if uid in self._usage:
                before, then = self._usage[uid]
                if now > then and usage >= before:
                    used[uid] = round((usage - before) / (now - then) / 1000)
        self._usage = seen
        self._used = used

    def api_error(self, what: str) -> Callable[[KubeError], None]:
        def note(exc: KubeError) -> None:
            text = str(exc)
            if self._errors.get(what) != text:  # once per distinct error, not per retry
                self._errors[what] = text
                log_event("api-error", watch=what, reason=text)

        return note

    def api_ok(self, what: str) -> None:
        """`what` reached the API server again: the same error after this is news, logged."""
        self._errors.pop(what, None)
