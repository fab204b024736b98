"""`NodeControl` in process: what each API call answers and changes, over fakes of its ports.

The plan state is the real `PlanState` (planning is pure); the scheduler, the control loop, the
kernel's sched_ext state, observation, traces and the assignments file are fakes that record
what they were asked and answer what the test set.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from builders import full_snapshot, make_pod
from temper.agent.control import NodeControl
from temper.agent.plans import PlanState
from temper.agent.tracing import NoThreads, TraceResult
from temper.api.v1 import agent_pb2 as pb
from temper.host.errors import HostError, TraceBusy
from temper.host.kernel import GateResult
from temper.host.sched_ext import SchedExtStatus, SchedState
from temper.policy.assignments import PodKey
from temper.policy.lifecycle import Mode
from temper.policy.machine import MachineShape, synthetic_shape
from temper.policy.observe import RuleResult, Snapshot, Verdict
from temper.policy.planner import Plan, PlanSettings
from temper.policy.pods import Pod, PodSnapshot
from temper.policy.tiers import Tier
from temper.serve.api import CallRefused, Refusal

T = TypeVar("T")
WEB = PodKey("shop", "web")
CHECKOUT = PodKey("shop", "checkout")
OURS = SchedExtStatus(SchedState.ENABLED, "layered_1.1.2_x86_64", 7)
WEB_POD = make_pod("web", namespace="shop", request=500)  # Burstable: normal
CHECKOUT_POD = make_pod("checkout", namespace="shop", request=500, priority_class="temper-critical")


@dataclass
class FakeScheduler:
    """The supervisor's state as the API reads it; digests are the config's length."""

    last: tuple[Mode, str] | None = None
    gate: GateResult | None = None
    child: object | None = None
    running_plan: Plan | None = None

    def running_digest(self) -> str | None:
        return self.digest(self.running_plan)

    def digest(self, plan: Plan | None) -> str | None:
        return f"len-{len(plan.config_json())}" if plan is not None else None


@dataclass
class FakeLoop:
    """Takes changes into the real plan state; a reload waits for `release` when gated."""

    plans: PlanState
    adopted: list[dict[PodKey, Tier]] = field(default_factory=list)
    reloads: int = 0
    release: asyncio.Event | None = None

    def adopt(self, assignments: Mapping[PodKey, Tier], plan: Plan) -> None:
        self.adopted.append(dict(assignments))
        self.plans.adopt(assignments, plan)

    async def reload(self) -> None:
        self.reloads += 1
        if self.release is not None:
            await self.release.wait()


@dataclass
class FakeStore:
    written: list[dict[PodKey, Tier]] = field(default_factory=list)
    failure: HostError | None = None

    def write(self, assignments: Mapping[PodKey, Tier]) -> None:
        if self.failure is not None:
            raise self.failure
        self.written.append(dict(assignments))


@dataclass
class FakeTracer:
    """A capture that cannot start, for the reason the test set."""

    failure: Exception | None = None

    def start(
        self, tiers: list[Tier], seconds: float, max_bytes: int | None
    ) -> tuple[float, asyncio.Task[TraceResult]]:
        if self.failure is not None:
            raise self.failure
        raise AssertionError("no capture expected")


@dataclass
class Rig:
    control: NodeControl
    plans: PlanState
    scheduler: FakeScheduler
    loop: FakeLoop
    store: FakeStore
    tracer: FakeTracer
    kernel: list[SchedExtStatus | HostError]
    observed: list[Snapshot | None]


def rig(
    shape: MachineShape | None = None,
    assignments: Mapping[PodKey, Tier] | None = None,
    *,
    pods: tuple[Pod, ...] | None = (WEB_POD, CHECKOUT_POD),
) -> Rig:
    """A control over these pods (None: no pod list yet), on 4 CPUs unless `shape` says."""
    plans = PlanState(shape or synthetic_shape(1, 2, 2, 1), (), PlanSettings(), assignments or {})
    if pods is not None:
        plans.snapshot = PodSnapshot(pods, (), "test")
        plans.replan()
    scheduler = FakeScheduler()
    loop = FakeLoop(plans)
    store = FakeStore()
    tracer = FakeTracer()
    kernel: list[SchedExtStatus | HostError] = [OURS]
    observed: list[Snapshot | None] = [None]

    def read_kernel() -> SchedExtStatus:
        status = kernel[0]
        if isinstance(status, HostError):
            raise status
        return status

    control = NodeControl(
        plans=plans,
        loop=loop,
        scheduler=scheduler,
        read_sched_ext=read_kernel,
        observed=lambda: observed[0],
        traces=tracer,
        store=store,
        node_name="node-a",
        version="9.9.9",
    )
    return Rig(control, plans, scheduler, loop, store, tracer, kernel, observed)


def run(call: Awaitable[T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(call, 5)

    return asyncio.run(bounded())


def refusal(call: Callable[[], Awaitable[Any]]) -> tuple[Refusal, str]:
    with pytest.raises(CallRefused) as caught:
        run(call())
    return caught.value.kind, str(caught.value)


# -- status --------------------------------------------------------------------------------------


def test_status_before_any_decision_says_starting() -> None:
    status = rig(pods=None).control.status()
    assert (status.mode, status.reason) == ("starting", "starting: no decision yet")
    assert not status.kernel_gate.passed
    assert status.kernel_gate.reason == "not read yet"
    assert list(status.tiers) == []
    assert (status.node_name, status.agent_version) == ("node-a", "9.9.9")


def test_status_reports_mode_gate_scheduler_config_tiers_and_assignments() -> None:
    r = rig(assignments={WEB: Tier.HIGH})
    r.scheduler.last = (Mode.ENFORCING, "scx_layered is loaded and places every pod")
    r.scheduler.gate = GateResult(passed=True, kernel="6.12.0", reasons=())
    r.scheduler.child = object()
    r.scheduler.running_plan = r.plans.plan
    status = r.control.status()
    assert (status.mode, status.reason) == ("enforcing", r.scheduler.last[1])
    assert status.kernel_gate == pb.KernelGate(passed=True, reason="")
    assert status.scheduler == pb.Scheduler(
        state="enabled", ops="layered_1.1.2_x86_64", enable_seq=7, ours=True
    )
    assert status.config_sha256 == r.scheduler.running_digest()
    assert {(t.tier, t.pods) for t in status.tiers} == {(pb.TIER_CRITICAL, 1), (pb.TIER_HIGH, 1)}
    assert [(a.pod.name, a.tier) for a in status.assignments] == [("web", pb.TIER_HIGH)]


def test_the_kernels_scheduler_is_ours_only_while_we_run_a_child() -> None:
    r = rig()
    assert not r.control.status().scheduler.ours  # layered is loaded, but not by us
    r.kernel[0] = SchedExtStatus(SchedState.ABSENT, None, None)
    assert r.control.status().scheduler == pb.Scheduler()
    r.kernel[0] = HostError("sched_ext unreadable")
    assert r.control.status().scheduler == pb.Scheduler()


def test_a_failed_gate_gives_every_reason() -> None:
    r = rig()
    r.scheduler.gate = GateResult(passed=False, kernel="5.15", reasons=("Too old.", "No BTF."))
    assert r.control.status().kernel_gate == pb.KernelGate(passed=False, reason="Too old. No BTF.")


def test_lint_counts_come_from_the_newest_observation() -> None:
    r = rig()
    assert r.control.status().lint == pb.LintSummary()  # observation off
    lint = (
        RuleResult("smt-siblings", Verdict.FAIL, "critical shares cores"),
        RuleResult("cpu-manager", Verdict.PASS, "static CPU manager is off"),
        RuleResult("outside-layer", Verdict.FAIL, "threads outside their layer"),
        RuleResult("stalls", Verdict.UNKNOWN, "no pressure read yet"),
        RuleResult("cpuset", Verdict.PASS, "no pinned container"),
        RuleResult("limits", Verdict.PASS, "no CPU limit below a core"),
    )
    r.observed[0] = dataclasses.replace(full_snapshot(), lint=lint)
    assert r.control.status().lint == pb.LintSummary(
        passed=3, failed=2, unknown=1, failing=["smt-siblings", "outside-layer"]
    )


# -- AssignTier and ClearTier ----------------------------------------------------------------------


def test_assign_plans_writes_and_adopts_and_answers_the_previous_tier() -> None:
    r = rig()
    answer = run(r.control.assign_tier(WEB, Tier.HIGH))
    assert answer.previous_tier == pb.TIER_NORMAL
    assert answer.assignment.tier == pb.TIER_HIGH
    assert r.store.written == [{WEB: Tier.HIGH}]
    assert r.loop.adopted == [{WEB: Tier.HIGH}]
    placed = {p.pod.name: p.tier for p in r.plans.plan.placements} if r.plans.plan else {}
    assert placed == {"web": Tier.HIGH, "checkout": Tier.CRITICAL}


def test_assigning_a_pod_not_on_the_node_is_not_found_and_changes_nothing() -> None:
    r = rig()
    kind, message = refusal(lambda: r.control.assign_tier(PodKey("shop", "gone"), Tier.HIGH))
    assert kind is Refusal.NOT_FOUND
    assert "shop/gone" in message
    assert (r.store.written, r.loop.adopted) == ([], [])


def test_a_tier_that_cannot_be_planned_is_refused_before_anything_is_written() -> None:
    r = rig(synthetic_shape(1, 1, 2, 1), pods=(WEB_POD,))  # one core: none to give critical
    before = r.plans.plan
    kind, message = refusal(lambda: r.control.assign_tier(WEB, Tier.CRITICAL))
    assert kind is Refusal.PRECONDITION
    assert message.startswith(f"assigning {WEB} to critical cannot be planned")
    assert (r.store.written, r.loop.adopted) == ([], [])
    assert r.plans.plan is before
    assert r.plans.assignments == {}


def test_an_assignment_that_cannot_be_kept_is_refused_and_not_adopted() -> None:
    r = rig()
    r.store.failure = HostError("/var/lib/temper/assignments.json: cannot write: disk full")
    kind, message = refusal(lambda: r.control.assign_tier(WEB, Tier.HIGH))
    assert kind is Refusal.PRECONDITION
    assert "disk full" in message
    assert r.loop.adopted == []
    assert r.plans.assignments == {}


def test_clear_removes_only_that_assignment_and_answers_the_tier_it_falls_back_to() -> None:
    r = rig(assignments={WEB: Tier.HIGH, CHECKOUT: Tier.CRITICAL})
    answer = run(r.control.clear_tier(WEB))
    assert answer.tier == pb.TIER_NORMAL  # its QoS default, in the plan made without it
    assert r.store.written == [{CHECKOUT: Tier.CRITICAL}]
    assert r.plans.assignments == {CHECKOUT: Tier.CRITICAL}


def test_clearing_a_pod_without_an_assignment_is_not_found() -> None:
    r = rig()
    kind, _ = refusal(lambda: r.control.clear_tier(WEB))
    assert kind is Refusal.NOT_FOUND
    assert r.store.written == []


# -- Reload --------------------------------------------------------------------------------------


def test_reload_before_the_first_pod_list_is_not_ready() -> None:
    r = rig(pods=None)
    kind, _ = refusal(r.control.reload)
    assert kind is Refusal.NOT_READY
    assert r.loop.reloads == 0


def test_reload_asks_the_loop_once_and_answers_where_it_left_the_node() -> None:
    r = rig()
    r.scheduler.last = (Mode.ENFORCING, "reload requested; replacing the scheduler")
    answer = run(r.control.reload())
    assert r.loop.reloads == 1
    assert (answer.mode, answer.enable_seq, answer.coalesced) == ("enforcing", 7, 1)


def test_concurrent_reloads_are_answered_by_at_most_two_runs() -> None:
    r = rig()
    r.loop.release = asyncio.Event()

    async def many() -> list[pb.ReloadResponse]:
        assert r.loop.release is not None
        first = asyncio.ensure_future(r.control.reload())
        await asyncio.sleep(0.01)  # its run has begun: later callers wait for the next run
        later = [asyncio.ensure_future(r.control.reload()) for _ in range(9)]
        await asyncio.sleep(0.01)
        r.loop.release.set()
        return await asyncio.gather(first, *later)

    answers = run(many())
    assert r.loop.reloads == 2
    assert [a.coalesced for a in answers] == [1] + [9] * 9


# -- GetConfig and CaptureTrace ------------------------------------------------------------------


def test_config_shows_running_and_planned_with_their_digests_and_diff() -> None:
    r = rig()
    planned = r.plans.plan
    assert planned is not None
    answer = r.control.config()
    assert (answer.running, answer.running_sha256) == ("", "")
    assert answer.planned == planned.config_json()
    assert answer.planned_sha256 == r.scheduler.digest(planned)
    assert answer.diff.startswith("--- running\n+++ planned\n")
    r.scheduler.running_plan = planned
    assert r.control.config().diff == ""


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        (TraceBusy(Path("/sys/kernel/tracing")), Refusal.BUSY),
        (NoThreads("no threads of tier critical on this node to trace"), Refusal.PRECONDITION),
    ],
)
def test_a_capture_that_cannot_start_is_refused_with_its_kind(
    failure: Exception, kind: Refusal
) -> None:
    r = rig()
    r.tracer.failure = failure
    with pytest.raises(CallRefused) as caught:
        r.control.start_trace([Tier.CRITICAL], 1.0, 1 << 20)
    assert caught.value.kind is kind
    assert str(caught.value) == str(failure)
