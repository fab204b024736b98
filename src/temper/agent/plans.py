"""The plan state: the newest pod snapshot, the operator's tier assignments, the plan made of
them, and what enforcement wants from it.

`PlanState` plans when asked and decides nothing else. The control loop
(`temper.agent.loop`) gives it each new snapshot, asks it to plan, and hands `wanted` to the
supervisor; the API (`temper.agent.control`) plans with changed assignments first
(`plan_with`) and adopts them only with a plan that succeeded. A snapshot that cannot be
planned wants nothing and says why (`Wanted.problems`), while `plan` keeps the newest plan that
did succeed, for status and observation.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from temper.agent.events import log_event
from temper.agent.supervisor import Wanted
from temper.policy.assignments import PodKey, planner_assignments
from temper.policy.errors import PolicyError
from temper.policy.machine import MachineShape
from temper.policy.planner import Plan, PlanSettings, needs_enforcement, plan_node
from temper.policy.pods import PodSnapshot
from temper.policy.profiles import Profile
from temper.policy.tiers import Tier


class PlanState:
    def __init__(
        self,
        shape: MachineShape,
        profiles: Sequence[Profile],
        settings: PlanSettings,
        assignments: Mapping[PodKey, Tier],
    ) -> None:
        self.shape = shape
        self.profiles = tuple(profiles)
        self.settings = settings
        self.assignments = dict(assignments)  # the operator's, as kept in the data dir
        self.snapshot: PodSnapshot | None = None  # None until the first pod list
        self.plan: Plan | None = None  # the newest plan that planned, enforced or not
        self.wanted = Wanted(None, nothing_reason="no pod list yet")

    def replan(self) -> None:
        """Plan the newest snapshot now; enforcement picks the plan up on its next step."""
        started = time.perf_counter()
        try:
            self._take(self.plan_with(self.assignments))
        except PolicyError as exc:
            self.wanted = Wanted(None, problems=(str(exc),))
        log_event(
            "planned",
            pods=len(self.snapshot.pods) if self.snapshot else 0,
            took_ms=round((time.perf_counter() - started) * 1000, 2),
            enforce=self.wanted.plan is not None,
        )

    def plan_with(self, assignments: Mapping[PodKey, Tier]) -> Plan:
        """The newest snapshot planned with `assignments`; PolicyError when it cannot be."""
        pods = self.snapshot.pods if self.snapshot else ()
        return plan_node(
            pods, self.shape, self.profiles, self.settings, planner_assignments(assignments)
        )

    def adopt(self, assignments: Mapping[PodKey, Tier], plan: Plan) -> None:
        """Take an operator's changed assignments and the plan made with them."""
        self.assignments = dict(assignments)
        self._take(plan)
        log_event("assignments", count=len(self.assignments))

    def _take(self, plan: Plan) -> None:
        self.plan = plan
        self.wanted = Wanted(plan if needs_enforcement(plan) else None)
