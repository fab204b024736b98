"""The placement linter: named rules that say whether the node's placement matches its policy.

Problem
-------
An operator needs to know, before and after enforcement, whether work runs where its tier says, and
if not, why and what to change. No peer answers that (docs/observe.md#the-placement-linter).

Approach
--------
Each rule is a row of `RULES`: a name, what it checks, a fix hint, and a pure check over one
`LintInput` (what observation saw). A check returns a verdict and evidence lines; a rule that
cannot be judged on this node now (no scheduler of ours runs, no SMT) says UNKNOWN or PASS
with the reason rather than guessing. Adding a rule is adding a row and its tests
(tests/unit/test_lint.py: each rule fires on its planted fault and stays quiet without it).

What "ran beside" means. The sampler reads each thread's state and the CPU it last ran on.
Two threads read in state R (on a CPU, or about to be) on the two SMT siblings of one core in
the same round, milliseconds apart, are reported as sharing the core; a thread in state R on a
CPU its confined layer does not own is reported as outside it. Threads not in state R are not
judged: their last CPU may be seconds old. The observer passes only evidence from the last
minute (`ObserveSettings.evidence_window_s`), so a placement that settles stops failing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from temper.policy.lifecycle import Mode
from temper.policy.machine import MachineShape, format_cpu_list
from temper.policy.observe import LayerView, RuleResult, Verdict
from temper.policy.planner import Placement, misplaced
from temper.policy.scx import LayerSpec
from temper.policy.tiers import Tier

MAX_EVIDENCE = 10  # lines per rule; the count of the rest is added
PROTECTED_TIERS = (Tier.CRITICAL, Tier.HIGH)
# A tier whose pods stall this much (PSI some avg10, %) while its layer is at its ceiling is
# short of CPUs, not merely busy.
STALL_PCT = 10.0


@dataclass(frozen=True)
class SmtShare:
    """A critical thread and a lower-tier one seen on the SMT siblings of one core."""

    core: tuple[int, ...]
    critical: str  # "namespace/pod tid 123 (comm) on CPU 2"
    other: str
    other_tier: Tier


@dataclass(frozen=True)
class OutsideLayer:
    """A thread of a confined layer seen on a CPU its layer did not own."""

    thread: str  # "namespace/pod tid 123 (comm)"
    tier: Tier
    layer: str
    last_cpu: int
    layer_cpus: tuple[int, ...]


@dataclass(frozen=True)
class ContainerCpuset:
    pod: str  # namespace/name
    container: str  # cgroup directory name
    cpus: tuple[int, ...]


@dataclass(frozen=True)
class LintInput:
    shape: MachineShape
    mode: Mode
    mode_reason: str
    placements: tuple[Placement, ...] = ()
    running_layers: tuple[LayerSpec, ...] = ()  # the config our scheduler runs; () if none
    layers: tuple[LayerView, ...] = ()  # scx_layered's statistics for them
    smt_shares: tuple[SmtShare, ...] = ()
    outside_layer: tuple[OutsideLayer, ...] = ()
    cpusets: tuple[ContainerCpuset, ...] = ()
    # Per tier, recent CPU stall readings (mean PSI some avg10 of its pods, %), oldest first.
    tier_stall_pct: Mapping[Tier, tuple[float, ...]] = field(default_factory=dict)


Check = Callable[[LintInput], tuple[Verdict, list[str]]]


@dataclass(frozen=True)
class LintRule:
    name: str
    summary: str
    hint: str
    check: Check


def lint(facts: LintInput, rules: Sequence[LintRule] | None = None) -> tuple[RuleResult, ...]:
    """Every rule's verdict on `facts`, in rule order."""
    results = []
    for rule in RULES if rules is None else rules:
        verdict, evidence = rule.check(facts)
        shown = evidence[:MAX_EVIDENCE]
        if len(evidence) > MAX_EVIDENCE:
            shown.append(f"... and {len(evidence) - MAX_EVIDENCE} more")
        hint = rule.hint if verdict is Verdict.FAIL else ""
        results.append(RuleResult(rule.name, verdict, rule.summary, tuple(shown), hint))
    return tuple(results)


def _verdict(evidence: list[str]) -> tuple[Verdict, list[str]]:
    return (Verdict.FAIL if evidence else Verdict.PASS), evidence


def _smt_shared(facts: LintInput) -> tuple[Verdict, list[str]]:
    if facts.shape.threads_per_core == 1:
        return Verdict.PASS, ["no SMT on this machine: no core is shared between threads"]
    return _verdict(
        [
            f"core {format_cpu_list(s.core)}: {s.critical} beside {s.other} ({s.other_tier.value})"
            for s in facts.smt_shares
        ]
    )


def _wrong_layer(facts: LintInput) -> tuple[Verdict, list[str]]:
    if not facts.running_layers:
        return Verdict.UNKNOWN, [f"no scheduler of ours runs (mode {facts.mode.value})"]
    by_name = {layer.name: layer for layer in facts.running_layers}
    evidence = []
    for p in misplaced(facts.running_layers, facts.placements):
        evidence.append(f"pod {p.pod.key} ({p.tier.value}) is not in a {p.tier.value} layer")
    for o in facts.outside_layer:
        if o.layer in by_name:
            evidence.append(
                f"{o.thread} ({o.tier.value}) ran on CPU {o.last_cpu}, outside its confined "
                f"layer {o.layer!r}, which owns CPUs {format_cpu_list(o.layer_cpus) or 'none'}"
            )
    return _verdict(evidence)


def _partial_affinity(facts: LintInput) -> tuple[Verdict, list[str]]:
    online = set(facts.shape.cpus)
    return _verdict(
        [
            f"pod {c.pod} container {c.container} may use only CPUs {format_cpu_list(c.cpus)} "
            f"of {format_cpu_list(sorted(online))}"
            for c in facts.cpusets
            if set(c.cpus) < online and not _whole_nodes(c.cpus, facts.shape)
        ]
    )


def _whole_nodes(cpus: tuple[int, ...], shape: MachineShape) -> bool:
    """scx_layered keeps tasks whose affinity covers whole NUMA nodes in their layer."""
    chosen = set(cpus)
    return all(set(node) <= chosen or not (set(node) & chosen) for node in shape.nodes)


def _cpu_limits(facts: LintInput) -> tuple[Verdict, list[str]]:
    if facts.mode is not Mode.ENFORCING:
        return Verdict.PASS, [f"mode {facts.mode.value}: CPU limits are enforced by the kernel"]
    return _verdict(
        [
            f"pod {p.pod.key} ({p.tier.value}) has a CPU limit of {p.pod.cpu_limit_millis}m"
            for p in facts.placements
            if p.pod.cpu_limit_millis is not None
        ]
    )


def _ceiling_pressure(facts: LintInput) -> tuple[Verdict, list[str]]:
    if not facts.layers:
        return Verdict.UNKNOWN, ["no scx_layered statistics (no scheduler of ours runs)"]
    evidence = []
    for layer in facts.layers:
        if layer.tier not in PROTECTED_TIERS or layer.max_cpus is None:
            continue
        stalls = facts.tier_stall_pct.get(layer.tier, ())
        rising = len(stalls) >= 2 and stalls[-1] > stalls[0] and stalls[-1] >= STALL_PCT
        if len(layer.cpus) >= layer.max_cpus and rising:
            evidence.append(
                f"layer {layer.name!r} holds {len(layer.cpus)} of at most {layer.max_cpus} CPUs "
                f"while its pods' CPU stall rose from {stalls[0]:.1f}% to {stalls[-1]:.1f}%"
            )
    return _verdict(evidence)


def _not_enforcing(facts: LintInput) -> tuple[Verdict, list[str]]:
    if facts.mode in (Mode.REFUSED, Mode.PARKED):
        return Verdict.FAIL, [f"mode {facts.mode.value}: {facts.mode_reason}"]
    return Verdict.PASS, []


RULES: tuple[LintRule, ...] = (
    LintRule(
        "critical-smt-shared",
        "A critical thread and a lower-tier one were on the two SMT siblings of one core at once.",
        "Critical layers get whole cores while Temper enforces; on the stock scheduler nothing "
        "keeps siblings apart. If this persists while enforcing, check that the critical layer "
        "is exclusive and that no pod pins itself across cores (see pod-wrong-layer).",
        _smt_shared,
    ),
    LintRule(
        "pod-wrong-layer",
        "A pod sits in a layer of another tier, or a confined thread ran outside its layer.",
        "The running scheduler config places this pod by an older plan: the agent replaces it "
        "on the next reconcile; if the finding stays, report it with /observe attached.",
        _wrong_layer,
    ),
    LintRule(
        "partial-cpu-affinity",
        "A container may use only some CPUs (static CPU manager or a cpuset).",
        "scx_layered sends a task whose affinity covers neither all CPUs, its layer's CPUs nor "
        "whole NUMA nodes to a low-priority fallback queue, where it runs only on idle CPUs. Give "
        "the pod a profile layer of its own, or use the none CPU manager policy on this node.",
        _partial_affinity,
    ),
    LintRule(
        "cpu-limit-not-enforced",
        "A pod has a CPU limit on a node where Temper enforces.",
        "scx_layered does not enforce cpu.max: the pod's tier ceiling bounds it instead. Drop "
        "the limit, or put the pod in a tier whose layer ceiling matches the limit.",
        _cpu_limits,
    ),
    LintRule(
        "protected-layer-at-ceiling",
        "A protected layer is at its CPU ceiling while its pods' CPU stall rises.",
        "The tier needs more CPUs than its layer may take: move some of its pods to another "
        "node, or raise their CPU requests so the planner gives the layer more CPUs.",
        _ceiling_pressure,
    ),
    LintRule(
        "node-not-enforcing",
        "The node refused sched_ext or parked after repeated scheduler failures.",
        "Read the reason: a refused node needs a kernel with sched_ext (>= 6.12, no isolcpus); "
        "a parked node recovers by itself once failures age out; its scheduler-exit logs say "
        "why it failed.",
        _not_enforcing,
    ),
)
