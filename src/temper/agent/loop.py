"""The control loop: the newest pods planned, the wanted plan enforced, the kernel re-read.

Its tasks: `watch-pods` keeps the newest snapshot (a burst of events read in one go is one
snapshot), `plan` plans each new one at once, and `reconcile` hands the wanted plan and the
kill switch to the supervisor after every change, and every `interval_s` when nothing changed,
so a foreign scheduler, a SysRq-S or a crashed child is noticed within it. `reconcile` decides
nothing before the first pod list, nor in a cluster before the kill switch is known (it waits
`kill_switch_wait_s` at most). An operator's reload and the loop take turns at the supervisor.

In a cluster every new plan and every step is published on the Node (`ClusterLink.publish`),
and `sample-load` samples the pods' CPU use for the tier load every `publish_interval_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

from temper.agent.config import AgentConfig
from temper.agent.events import log_event
from temper.agent.observer import NodeView
from temper.agent.plans import PlanState
from temper.agent.supervisor import Supervisor
from temper.policy.assignments import PodKey
from temper.policy.contract import OFF, KillSwitch
from temper.policy.planner import Plan
from temper.policy.pods import PodSnapshot
from temper.policy.tiers import Tier

if TYPE_CHECKING:  # loaded in a cluster only: the Kubernetes client is not needed standalone
    from temper.agent.cluster import ClusterLink


class ControlLoop:
    def __init__(
        self,
        config: AgentConfig,
        plans: PlanState,
        supervisor: Supervisor,
        cluster: ClusterLink | None = None,
    ) -> None:
        self.config = config
        self.plans = plans
        self.supervisor = supervisor
        self.cluster = cluster
        self.changed = asyncio.Event()  # something the next reconcile should see
        self._reconciled = False  # a first decision was made
        self._pods_changed = asyncio.Event()  # a new snapshot to plan
        self._enforce = asyncio.Lock()  # one supervisor step at a time: the loop's or a reload's

    async def watch_pods(self, pods: AsyncIterator[PodSnapshot]) -> None:
        async for snapshot in pods:
            for error in snapshot.errors:
                log_event("pod-source-error", reason=error)
            if self.cluster is not None:
                self.cluster.api_ok("pods")
            self.plans.snapshot = snapshot
            self._pods_changed.set()

    async def plan(self) -> None:
        """Plan the newest snapshot whenever it changes. A burst of events that arrive together
        (a rollout) is read in one go by `watch-pods` and planned once, not once per event."""
        while True:
            await self._pods_changed.wait()
            self._pods_changed.clear()
            self.plans.replan()
            self._publish()
            self.changed.set()

    async def reconcile(self) -> None:
        while self.plans.snapshot is None:  # the first pod list, before anything is decided
            await self.changed.wait()
            self.changed.clear()
        if self.cluster is not None:  # and the kill switch, unless the API server is away
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.cluster.known.wait(), self.config.kill_switch_wait_s)
        while True:
            self.changed.clear()
            async with self._enforce:
                await self.supervisor.reconcile(self.plans.wanted, self.kill_switch())
            self._reconciled = True
            self._publish()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), self.config.interval_s)
                await asyncio.sleep(self.config.coalesce_s)

    async def reload(self) -> None:
        """Plan again and restart the scheduler now (an operator's `temper-cli reload`)."""
        self.plans.replan()
        self._publish()
        async with self._enforce:
            await self.supervisor.reconcile(self.plans.wanted, self.kill_switch(), reload=True)

    def adopt(self, assignments: Mapping[PodKey, Tier], plan: Plan) -> None:
        """Take an operator's changed assignments and their plan; the next step enforces it."""
        self.plans.adopt(assignments, plan)
        self._publish()
        self.changed.set()

    async def sample_load(self) -> None:
        """In a cluster: the tier load's CPU use, sampled and published."""
        assert self.cluster is not None
        while True:
            await asyncio.sleep(self.config.publish_interval_s)
            self.cluster.sample_usage(self.plans.plan)
            self._publish()

    def ready(self) -> bool:
        """Readiness: a first decision about the node was made."""
        return self._reconciled

    def kill_switch(self) -> KillSwitch | None:
        return self.cluster.kill_switch if self.cluster is not None else OFF

    def node_view(self) -> NodeView:
        """What observation needs from the control loop, read at the start of each round."""
        mode, reason = self.supervisor.last or (None, "starting: no decision yet")
        running = self.supervisor.running_plan
        plan = self.plans.plan
        return NodeView(
            mode, reason, plan.placements if plan else (), running.layers if running else ()
        )

    async def stop(self) -> None:
        """Put the node back on the stock scheduler, and in a cluster say so on the Node."""
        await self.supervisor.stop()
        log_event("stopped", reason="agent shutting down; node on the stock scheduler")
        if self.cluster is not None:
            await self.cluster.goodbye(self.supervisor)

    def _publish(self) -> None:
        if self.cluster is not None:
            self.cluster.publish(self.supervisor, self.plans.plan)
