"""What the agent does for its API's callers (`temper.serve.api.Control`).

Each answer reads the agent's state as the control loop left it; the two calls that change the
node go through the same paths the control loop uses:

- AssignTier and ClearTier plan first with the changed assignments, and only a plan that
  succeeds is kept: the file is written, the agent takes the plan, and the reconcile loop
  applies it (replacing the scheduler when the running config would misplace the pod). A tier
  that cannot be planned (no room for another critical pod) is refused with nothing changed.
- Reload plans again and restarts the scheduler under the reconcile lock. Concurrent reloads
  are coalesced (`Coalescer`): a caller is answered by the first reload that started after it
  called, so a thousand calls at once cost at most two restarts.

`NodeControl` sees the agent through narrow ports, each a `Protocol` the real part meets: the
plan state (`PlanView`), the control loop that takes changes (`Enforcement`), the supervisor
(`SchedulerView`), trace captures (`Tracer`), the assignments file (`AssignmentStore`), and two
functions: the kernel's sched_ext state and the newest observation. Tests give it fakes.
"""

from __future__ import annotations

import asyncio
import difflib
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from temper.agent.tracing import NoThreads, TraceResult
from temper.api.v1 import agent_pb2 as pb
from temper.api.wire import pod_to_wire, tier_to_wire
from temper.host.errors import HostError, TraceBusy
from temper.host.kernel import GateResult
from temper.host.sched_ext import SchedExtStatus, SchedState
from temper.policy.assignments import PodKey
from temper.policy.errors import PolicyError
from temper.policy.lifecycle import Mode
from temper.policy.observe import Snapshot, Verdict
from temper.policy.planner import Plan
from temper.policy.pods import PodSnapshot
from temper.policy.tiers import Tier
from temper.serve.api import CallRefused, Refusal, TraceRun

T = TypeVar("T")


class PlanView(Protocol):
    """The plan state, as the API reads it (`temper.agent.plans.PlanState`)."""

    @property
    def snapshot(self) -> PodSnapshot | None: ...
    @property
    def plan(self) -> Plan | None: ...
    @property
    def assignments(self) -> Mapping[PodKey, Tier]: ...
    def plan_with(self, assignments: Mapping[PodKey, Tier]) -> Plan: ...


class Enforcement(Protocol):
    """Where the API's changes go (`temper.agent.loop.ControlLoop`)."""

    def adopt(self, assignments: Mapping[PodKey, Tier], plan: Plan) -> None: ...
    async def reload(self) -> None: ...


class SchedulerView(Protocol):
    """The scheduler, as the API reports it (`temper.agent.supervisor.Supervisor`)."""

    @property
    def last(self) -> tuple[Mode, str] | None: ...
    @property
    def gate(self) -> GateResult | None: ...
    @property
    def child(self) -> object | None: ...
    @property
    def running_plan(self) -> Plan | None: ...
    def running_digest(self) -> str | None: ...
    def digest(self, plan: Plan | None) -> str | None: ...


class Tracer(Protocol):
    """Starts a capture (`temper.agent.tracing.TraceService`)."""

    def start(
        self, tiers: list[Tier], seconds: float, max_bytes: int | None
    ) -> tuple[float, asyncio.Task[TraceResult]]: ...


class AssignmentStore(Protocol):
    """Keeps the assignments (`temper.host.operator.AssignmentFile`)."""

    def write(self, assignments: Mapping[PodKey, Tier]) -> None: ...


class Coalescer(Generic[T]):
    """Runs `work` on behalf of callers, one run at a time. A caller is answered by a run that
    started after it called, together with every caller that arrived before that run began."""

    def __init__(self, work: Callable[[], Awaitable[T]]) -> None:
        self._work = work
        self._next: asyncio.Future[tuple[T, int]] | None = None
        self._waiting = 0
        self._runner: asyncio.Task[None] | None = None

    async def __call__(self) -> tuple[T, int]:
        """The result of the run that answered this call, and how many calls it answered."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._next.add_done_callback(_retrieve)
            self._waiting = 0
        self._waiting += 1
        future = self._next
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="reload")
        return await asyncio.shield(future)

    def cancel(self) -> None:
        if self._runner is not None:
            self._runner.cancel()

    async def _run(self) -> None:
        while self._next is not None:
            future, count, self._next = self._next, self._waiting, None
            try:
                result = await self._work()
            except Exception as exc:
                future.set_exception(exc)
            except BaseException:  # cancelled (the agent stops): nobody is left waiting
                future.cancel()
                if self._next is not None:
                    self._next.cancel()
                    self._next = None
                raise
            else:
                future.set_result((result, count))


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Callers may all have gone (cancelled): the outcome is still looked at, so asyncio does
    not log an exception nobody retrieved."""
    if not future.cancelled():
        future.exception()


@dataclass
class NodeControl:
    plans: PlanView
    loop: Enforcement
    scheduler: SchedulerView
    read_sched_ext: Callable[[], SchedExtStatus]
    observed: Callable[[], Snapshot | None]  # None with observation off
    traces: Tracer
    store: AssignmentStore
    node_name: str
    version: str

    def __post_init__(self) -> None:
        self.reloads: Coalescer[pb.ReloadResponse] = Coalescer(self._reload_once)

    def status(self) -> pb.Status:
        mode, reason = self.scheduler.last or (None, "starting: no decision yet")
        gate = self.scheduler.gate
        plan = self.plans.plan
        counts = Counter(p.tier for p in plan.placements) if plan else Counter()
        return pb.Status(
            mode=mode.value if mode else "starting",
            reason=reason,
            kernel_gate=pb.KernelGate(
                passed=bool(gate and gate.passed),
                reason=" ".join(gate.reasons) if gate else "not read yet",
            ),
            scheduler=self._scheduler(),
            config_sha256=self.scheduler.running_digest() or "",
            tiers=[pb.TierCount(tier=tier_to_wire(t), pods=counts[t]) for t in Tier if counts[t]],
            lint=self._lint(),
            assignments=[
                pb.Assignment(pod=pod_to_wire(key), tier=tier_to_wire(tier))
                for key, tier in sorted(self.plans.assignments.items())
            ],
            agent_version=self.version,
            node_name=self.node_name,
        )

    async def assign_tier(self, pod: PodKey, tier: Tier) -> pb.AssignTierResponse:
        before = self._placement_tier(pod)
        if before is None:
            raise CallRefused(Refusal.NOT_FOUND, f"pod {pod} is not on this node")
        self._change({**self.plans.assignments, pod: tier}, f"assigning {pod} to {tier.value}")
        assignment = pb.Assignment(pod=pod_to_wire(pod), tier=tier_to_wire(tier))
        return pb.AssignTierResponse(assignment=assignment, previous_tier=tier_to_wire(before))

    async def clear_tier(self, pod: PodKey) -> pb.ClearTierResponse:
        if pod not in self.plans.assignments:
            raise CallRefused(Refusal.NOT_FOUND, f"pod {pod} has no tier assignment on this node")
        rest = {key: tier for key, tier in self.plans.assignments.items() if key != pod}
        self._change(rest, f"clearing the assignment of {pod}")
        return pb.ClearTierResponse(tier=tier_to_wire(self._placement_tier(pod)))

    async def reload(self) -> pb.ReloadResponse:
        answer, calls = await self.reloads()
        return pb.ReloadResponse(
            mode=answer.mode,
            reason=answer.reason,
            config_sha256=answer.config_sha256,
            enable_seq=answer.enable_seq,
            coalesced=calls,
        )

    def config(self) -> pb.GetConfigResponse:
        running = self.scheduler.running_plan
        planned = self.plans.plan
        running_text = running.config_json() if running else ""
        planned_text = planned.config_json() if planned else ""
        diff = difflib.unified_diff(
            running_text.splitlines(keepends=True),
            planned_text.splitlines(keepends=True),
            "running",
            "planned",
        )
        return pb.GetConfigResponse(
            running=running_text,
            running_sha256=self.scheduler.running_digest() or "",
            planned=planned_text,
            planned_sha256=self.scheduler.digest(planned) or "",
            diff="".join(diff),
        )

    def start_trace(self, tiers: list[Tier], seconds: float, max_bytes: int) -> TraceRun:
        try:
            duration_s, capture = self.traces.start(tiers, seconds, max_bytes)
        except TraceBusy as exc:
            raise CallRefused(Refusal.BUSY, str(exc)) from exc
        except NoThreads as exc:
            raise CallRefused(Refusal.PRECONDITION, str(exc)) from exc
        return TraceRun(duration_s, asyncio.ensure_future(_summary(capture)))

    def _change(self, assignments: dict[PodKey, Tier], what: str) -> None:
        """Keep `assignments` if the node can be planned with them; else refuse, unchanged."""
        try:
            plan = self.plans.plan_with(assignments)
        except PolicyError as exc:
            raise CallRefused(Refusal.PRECONDITION, f"{what} cannot be planned: {exc}") from exc
        try:
            self.store.write(assignments)
        except HostError as exc:
            raise CallRefused(Refusal.PRECONDITION, f"{what}: {exc}") from exc
        self.loop.adopt(assignments, plan)

    def _placement_tier(self, pod: PodKey) -> Tier | None:
        plan = self.plans.plan
        key = str(pod)
        for placement in plan.placements if plan else ():
            if f"{placement.pod.namespace}/{placement.pod.name}" == key:
                return placement.tier
        return None

    async def _reload_once(self) -> pb.ReloadResponse:
        if self.plans.snapshot is None:
            raise CallRefused(Refusal.NOT_READY, "the agent has no pod list yet; try again shortly")
        await self.loop.reload()
        answer = self.status()
        return pb.ReloadResponse(
            mode=answer.mode,
            reason=answer.reason,
            config_sha256=answer.config_sha256,
            enable_seq=answer.scheduler.enable_seq,
        )

    def _scheduler(self) -> pb.Scheduler:
        try:
            status = self.read_sched_ext()
        except HostError:
            return pb.Scheduler()
        ours = self.scheduler.child is not None and status.is_ours()
        return pb.Scheduler(
            state="" if status.state is SchedState.ABSENT else status.state.value,
            ops=status.ops or "",
            enable_seq=status.enable_seq or 0,
            ours=ours,
        )

    def _lint(self) -> pb.LintSummary:
        snapshot = self.observed()
        results = snapshot.lint if snapshot else ()
        counts = Counter(r.verdict for r in results)
        return pb.LintSummary(
            passed=counts[Verdict.PASS],
            failed=counts[Verdict.FAIL],
            unknown=counts[Verdict.UNKNOWN],
            failing=[r.rule for r in results if r.verdict is Verdict.FAIL],
        )


async def _summary(capture: Awaitable[TraceResult]) -> tuple[Path, pb.TraceSummary]:
    try:
        result = await capture
    except TraceBusy as exc:
        raise CallRefused(Refusal.BUSY, str(exc)) from exc
    except HostError as exc:  # tracefs missing or refusing: the node lacks what tracing needs
        raise CallRefused(Refusal.PRECONDITION, f"trace capture failed: {exc}") from exc
    trace = result.capture
    return trace.path, pb.TraceSummary(
        file=str(trace.path),
        size_bytes=trace.size_bytes,
        events=trace.events,
        truncated=trace.truncated,
        lost_events=trace.lost_events,
        threads=result.threads,
        wake_to_run=[
            pb.WakeToRun(
                tier=tier_to_wire(Tier(row.tier)),
                count=row.count,
                p50_us=row.p50_us or 0.0,
                p90_us=row.p90_us or 0.0,
                p99_us=row.p99_us or 0.0,
                max_us=row.max_us or 0.0,
                never_ran=row.unmatched,
            )
            for row in result.wake_to_run
        ],
    )
