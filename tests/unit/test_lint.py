"""The placement linter: every rule fires on its planted fault and stays quiet without it."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from builders import make_pod
from temper.policy.lifecycle import Mode
from temper.policy.lint import (
    MAX_EVIDENCE,
    RULES,
    STALL_PCT,
    ContainerCpuset,
    LintInput,
    OutsideLayer,
    SmtShare,
    lint,
)
from temper.policy.machine import MachineShape, synthetic_shape
from temper.policy.observe import LayerView, RuleResult, Verdict
from temper.policy.planner import Plan, plan_node
from temper.policy.pods import Pod
from temper.policy.tiers import QosClass, Tier

SMT = synthetic_shape(1, 4, 2, 1)  # 8 CPUs; core k is CPUs (k, k+4)
NO_SMT = synthetic_shape(1, 4, 1, 1)  # 4 CPUs, one thread per core
TWO_NODES = synthetic_shape(2, 2, 2, 1)  # 8 CPUs; node 0 is CPUs 0,1,4,5 and node 1 is 2,3,6,7


def pods(*, api_class: str | None = "temper-critical", api_limit: int | None = None) -> list[Pod]:
    qos = QosClass.GUARANTEED if api_limit is not None else QosClass.BURSTABLE
    return [
        make_pod(
            "api", qos, namespace="shop", request=1000, limit=api_limit, priority_class=api_class
        ),
        make_pod("etl", QosClass.BEST_EFFORT, namespace="batch", request=0),
    ]


PLAN = plan_node(pods(), SMT)  # shop/api critical, batch/etl background; no CPU limits
# The same pods planned when shop/api had no PriorityClass: its pod is in no critical layer.
OLD_PLAN = plan_node(pods(api_class=None), SMT)
LIMITED_PLAN = plan_node(pods(api_limit=1000), SMT)


def facts(plan: Plan = PLAN, **changes: object) -> LintInput:
    """What observation saw on an enforcing node running `plan`, with nothing wrong."""
    base = LintInput(
        shape=plan.shape,
        mode=Mode.ENFORCING,
        mode_reason="scx_layered is loaded and places every pod",
        placements=plan.placements,
        running_layers=plan.layers,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def result(name: str, facts: LintInput) -> RuleResult:
    [found] = [r for r in lint(facts) if r.rule == name]
    return found


def critical_layer(plan: Plan = PLAN) -> str:
    [name] = [layer.name for layer in plan.layers if layer.tier is Tier.CRITICAL]
    return name


def ceiling_view(tier: Tier = Tier.CRITICAL, cpus: tuple[int, ...] = (0, 4)) -> LayerView:
    return LayerView(tier.value, tier, "Confined", 4, 200.0, cpus, max_cpus=2)


SHARE = SmtShare((1, 5), "shop/api tid 101 (worker) on CPU 1", "batch/etl tid 202 (etl)", Tier.LOW)
OUTSIDE = OutsideLayer("shop/api tid 103 (gc)", Tier.CRITICAL, "critical", 3, (0, 4))


@dataclass(frozen=True)
class Case:
    fault: LintInput
    clean: LintInput
    named: tuple[str, ...]  # what the evidence of the fault must mention
    clean_verdict: Verdict = Verdict.PASS


CASES: dict[str, Case] = {
    "critical-smt-shared": Case(
        fault=facts(smt_shares=(SHARE,)),
        clean=facts(),
        named=("core 1,5", "shop/api tid 101", "batch/etl tid 202", "low"),
    ),
    "pod-wrong-layer": Case(
        fault=facts(running_layers=OLD_PLAN.layers),
        clean=facts(),
        named=("shop/api", "critical"),
    ),
    "partial-cpu-affinity": Case(
        fault=facts(shape=TWO_NODES, cpusets=(ContainerCpuset("shop/api", "app", (0, 1)),)),
        clean=facts(
            shape=TWO_NODES, cpusets=(ContainerCpuset("shop/api", "app", tuple(range(8))),)
        ),
        named=("shop/api", "app", "0-1", "0-7"),
    ),
    "cpu-limit-not-enforced": Case(
        fault=facts(LIMITED_PLAN),
        clean=facts(LIMITED_PLAN, mode=Mode.STOCK),
        named=("shop/api", "1000m"),
    ),
    "protected-layer-at-ceiling": Case(
        fault=facts(layers=(ceiling_view(),), tier_stall_pct={Tier.CRITICAL: (2.0, 15.0)}),
        clean=facts(layers=(ceiling_view(),), tier_stall_pct={Tier.CRITICAL: (15.0, 12.0)}),
        named=("'critical'", "2 of at most 2", "2.0%", "15.0%"),
    ),
    "node-not-enforcing": Case(
        fault=facts(
            mode=Mode.REFUSED, mode_reason="the kernel has no sched_ext", running_layers=()
        ),
        clean=facts(),
        named=("refused", "the kernel has no sched_ext"),
    ),
}
RULE = {rule.name: rule for rule in RULES}


def test_rule_names_are_unique() -> None:
    names = [rule.name for rule in RULES]
    assert len(names) == len(set(names))


def test_every_rule_has_a_planted_fault_here() -> None:
    assert set(CASES) == set(RULE)


def test_results_come_in_rule_order_with_the_rules_summaries() -> None:
    results = lint(facts())
    assert [r.rule for r in results] == [rule.name for rule in RULES]
    assert [r.summary for r in results] == [rule.summary for rule in RULES]


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_fails_on_its_planted_fault_naming_it(name: str) -> None:
    case = CASES[name]
    found = result(name, case.fault)
    assert found.verdict is Verdict.FAIL
    text = "\n".join(found.evidence)
    for needle in case.named:
        assert needle in text
    assert found.hint == RULE[name].hint
    assert found.hint


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_is_quiet_without_its_fault_and_gives_no_hint(name: str) -> None:
    case = CASES[name]
    found = result(name, case.clean)
    assert found.verdict is case.clean_verdict
    assert found.hint == ""


def test_a_clean_enforcing_node_passes_every_rule() -> None:
    observed = facts(layers=(ceiling_view(),), tier_stall_pct={Tier.CRITICAL: (1.0, 2.0)})
    assert [r.verdict for r in lint(observed)] == [Verdict.PASS] * len(RULES)


def test_lint_runs_only_the_rules_it_is_given() -> None:
    [only] = lint(facts(), [RULE["node-not-enforcing"]])
    assert only.rule == "node-not-enforcing"


# -- critical-smt-shared ----------------------------------------------------------------------


def test_smt_sharing_cannot_happen_without_smt_and_says_so() -> None:
    found = result("critical-smt-shared", facts(shape=NO_SMT, smt_shares=(SHARE,)))
    assert found.verdict is Verdict.PASS
    assert any("no SMT" in line for line in found.evidence)


# -- pod-wrong-layer ----------------------------------------------------------------------------


def test_wrong_layer_is_unknown_when_no_scheduler_of_ours_runs() -> None:
    found = result("pod-wrong-layer", facts(mode=Mode.STOCK, running_layers=()))
    assert found.verdict is Verdict.UNKNOWN
    assert found.evidence == ("no scheduler of ours runs (mode stock)",)
    assert found.hint == ""


def test_wrong_layer_names_only_the_misplaced_pod() -> None:
    found = result("pod-wrong-layer", facts(running_layers=OLD_PLAN.layers))
    assert len(found.evidence) == 1
    assert "batch/etl" not in found.evidence[0]


def test_a_thread_outside_its_confined_layer_is_a_finding() -> None:
    outside = replace(OUTSIDE, layer=critical_layer())
    found = result("pod-wrong-layer", facts(outside_layer=(outside,)))
    assert found.verdict is Verdict.FAIL
    [line] = found.evidence
    assert "shop/api tid 103 (gc)" in line
    assert "CPU 3" in line
    assert f"{critical_layer()!r}" in line
    assert "CPUs 0,4" in line


def test_a_thread_outside_a_layer_the_running_config_lacks_is_ignored() -> None:
    outside = replace(OUTSIDE, layer="no-such-layer")
    assert result("pod-wrong-layer", facts(outside_layer=(outside,))).verdict is Verdict.PASS


# -- partial-cpu-affinity -----------------------------------------------------------------------


def node_cpus(shape: MachineShape, index: int) -> tuple[int, ...]:
    return tuple(sorted(shape.nodes[index]))


@pytest.mark.parametrize("node", [0, 1])
def test_an_affinity_of_whole_numa_nodes_is_kept_in_its_layer(node: int) -> None:
    cpuset = ContainerCpuset("shop/api", "app", node_cpus(TWO_NODES, node))
    found = result("partial-cpu-affinity", facts(shape=TWO_NODES, cpusets=(cpuset,)))
    assert found.verdict is Verdict.PASS


def test_an_affinity_of_a_node_and_a_bit_is_partial() -> None:
    cpus = (*node_cpus(TWO_NODES, 0), node_cpus(TWO_NODES, 1)[0])
    cpuset = ContainerCpuset("shop/api", "app", tuple(sorted(cpus)))
    found = result("partial-cpu-affinity", facts(shape=TWO_NODES, cpusets=(cpuset,)))
    assert found.verdict is Verdict.FAIL


def test_only_the_partial_containers_are_named() -> None:
    cpusets = (
        ContainerCpuset("shop/api", "full", tuple(range(8))),
        ContainerCpuset("shop/api", "pinned", (2,)),
    )
    found = result("partial-cpu-affinity", facts(shape=TWO_NODES, cpusets=cpusets))
    [line] = found.evidence
    assert "container pinned" in line


# -- cpu-limit-not-enforced ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", [m for m in Mode if m is not Mode.ENFORCING])
def test_cpu_limits_are_the_kernels_business_off_enforcement(mode: Mode) -> None:
    found = result("cpu-limit-not-enforced", facts(LIMITED_PLAN, mode=mode))
    assert found.verdict is Verdict.PASS
    assert found.evidence == (f"mode {mode.value}: CPU limits are enforced by the kernel",)


def test_pods_without_a_limit_are_not_named() -> None:
    found = result("cpu-limit-not-enforced", facts(LIMITED_PLAN))
    assert not any("batch/etl" in line for line in found.evidence)


# -- protected-layer-at-ceiling -----------------------------------------------------------------


def test_ceiling_is_unknown_without_scx_layered_statistics() -> None:
    found = result("protected-layer-at-ceiling", facts(layers=()))
    assert found.verdict is Verdict.UNKNOWN
    assert found.hint == ""


@pytest.mark.parametrize("tier", [Tier.CRITICAL, Tier.HIGH])
def test_a_protected_layer_at_its_ceiling_with_rising_stall_fails(tier: Tier) -> None:
    found = result(
        "protected-layer-at-ceiling",
        facts(layers=(ceiling_view(tier),), tier_stall_pct={tier: (1.0, 5.0, STALL_PCT)}),
    )
    assert found.verdict is Verdict.FAIL
    assert f"layer {tier.value!r}" in found.evidence[0]


@pytest.mark.parametrize(
    ("view", "stalls"),
    [
        pytest.param(ceiling_view(), (STALL_PCT, STALL_PCT), id="flat"),
        pytest.param(ceiling_view(), (30.0, 20.0), id="falling"),
        pytest.param(ceiling_view(), (1.0, STALL_PCT - 0.1), id="rising-below-threshold"),
        pytest.param(ceiling_view(), (50.0,), id="one-reading"),
        pytest.param(ceiling_view(), (), id="no-readings"),
        pytest.param(ceiling_view(cpus=(0,)), (1.0, 50.0), id="below-ceiling"),
        pytest.param(replace(ceiling_view(), max_cpus=None), (1.0, 50.0), id="no-ceiling"),
    ],
)
def test_a_protected_layer_passes_unless_at_its_ceiling_and_stalling_more(
    view: LayerView, stalls: tuple[float, ...]
) -> None:
    found = result(
        "protected-layer-at-ceiling", facts(layers=(view,), tier_stall_pct={Tier.CRITICAL: stalls})
    )
    assert found.verdict is Verdict.PASS


@pytest.mark.parametrize("tier", [Tier.NORMAL, Tier.LOW, Tier.BACKGROUND, None])
def test_unprotected_layers_at_their_ceiling_are_not_findings(tier: Tier | None) -> None:
    view = replace(ceiling_view(), name="other", tier=tier)
    stalls = dict.fromkeys(Tier, (1.0, 50.0))
    found = result("protected-layer-at-ceiling", facts(layers=(view,), tier_stall_pct=stalls))
    assert found.verdict is Verdict.PASS


# -- node-not-enforcing -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [Mode.REFUSED, Mode.PARKED])
def test_a_refused_or_parked_node_fails_with_its_reason(mode: Mode) -> None:
    found = result("node-not-enforcing", facts(mode=mode, mode_reason="three exits in 10 min"))
    assert found.verdict is Verdict.FAIL
    assert found.evidence == (f"mode {mode.value}: three exits in 10 min",)


@pytest.mark.parametrize("mode", [Mode.STOCK, Mode.ENFORCING, Mode.FOREIGN, Mode.SAFE_MODE])
def test_other_modes_are_not_a_failure_to_enforce(mode: Mode) -> None:
    assert result("node-not-enforcing", facts(mode=mode)).verdict is Verdict.PASS


# -- evidence -----------------------------------------------------------------------------------


def shares(count: int) -> tuple[SmtShare, ...]:
    return tuple(replace(SHARE, critical=f"shop/api tid {tid} (w)") for tid in range(count))


def test_evidence_is_capped_with_a_count_of_the_rest() -> None:
    found = result("critical-smt-shared", facts(smt_shares=shares(MAX_EVIDENCE + 5)))
    assert len(found.evidence) == MAX_EVIDENCE + 1
    assert found.evidence[-1] == "... and 5 more"
    assert "shop/api tid 0 (w)" in found.evidence[0]
    assert f"shop/api tid {MAX_EVIDENCE - 1} (w)" in found.evidence[MAX_EVIDENCE - 1]


def test_evidence_at_the_cap_is_shown_whole() -> None:
    found = result("critical-smt-shared", facts(smt_shares=shares(MAX_EVIDENCE)))
    assert len(found.evidence) == MAX_EVIDENCE
    assert not any("more" in line for line in found.evidence)
