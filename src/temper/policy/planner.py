"""The planner: the pods on a node and the machine's shape in, an `scx_layered` config out.

Problem
-------
Each pod on a node belongs to one of five tiers, and the kernel should enforce them: critical
pods on exclusive whole cores that nobody else may borrow, high and normal pods on CPU sets sized
to their requests, low and background pods on whatever is idle. `scx_layered` can do all of that,
but it knows nothing of pods. It sorts each thread into the first layer, in file order, whose
match rules fit the thread's cgroup path and name; it holds at most 16 layers with at most 32 OR
blocks each; and it cannot reload, so every new config costs a stop, a window on the stock
scheduler, and a start.

Approach
--------
1. Decide each pod's tier (`tiers.decide_tier`): operator assignment, else priority, else the
   QoS-class default.
2. Lay out the match rules. Most pods sit at their QoS class's default tier, and kubelet puts
   each QoS class under its own cgroup prefix (`cgroups.qos_prefix`), so one *base rule* per
   class places all of them, including pods created after the config was written. Only pods
   whose tier differs from their class's default get an *explicit rule*: a prefix on the pod's
   own cgroup, which covers every container of the pod, the sandbox included.
   Layers go in tier order, critical first, each holding its explicit rules and the base rules
   of the classes that default to it. First match wins, so a base rule must come after every
   explicit rule for a pod of its class. Promotions (a Burstable pod at critical) satisfy that
   by tier order; a demotion (a Guaranteed pod at low) does not, and then the class's base rule
   moves to a layer of the same tier at the end (`<tier>-default`, or plain `<tier>` when the
   tier has no other layer). Thread groups of workload profiles come first of all, each its own
   layer matching (pod cgroup AND comm prefix). The host's own work takes the last layer,
   the catch-all.
   When a layer's explicit rules would overflow its 32 OR blocks, they fold into one
   `CgroupRegex` rule naming all of the pods' cgroups.
3. Place every pod with the scheduler's own first-match rule (`scx.place`) and check it lands in
   its tier: the layout is verified, not trusted.
4. Size each layer from what was placed in it and from the machine:
   - critical: Confined, exclusive, preempting and `protected`: its idle CPUs are never lent,
     so a critical wake-up finds its CPU free instead of waiting for a batch task to be
     preempted (docs/lab.md has the experiments); a 1 ms slice, since it never preempts its
     own tasks and a waking critical thread waits out a sibling's slice; its CPU range is
     whole cores, at least enough cores to run its pods' requests (an exclusive core runs one
     critical thread at a time, its SMT sibling idle), at most what the pods' limits need,
     never more than all cores but one;
   - high and normal: Grouped; at least the cores their requests need, at most what their
     limits need or everything critical does not hold;
   - low and background: Open, with a 5 ms slice instead of scx_layered's 20 ms: only critical
     preempts, so the batch slice bounds how long a waking high or normal task waits for a CPU
     a batch task holds;
   - utilization bands: a per-tier target ceiling, lowered in proportion to how far the pods
     may burst above their requests (limits over requests), and divided by the SMT width for an
     exclusive layer, whose idle siblings cap its per-CPU utilization;
   - weights: each tier weighs its share of the machine's CPUs that its pods request, and at
     least `tier_weight_step` times the tier below, so a higher tier never weighs less. The
     agent runs scx_layered with `--layer-order-by-weight` (our patch, docs/adr/0003): on a
     CPU that several layers share, they are served in descending weight, config order on
     ties, so a tier's weight is its rank there. The host layer weighs as high and follows it:
     node daemons starved behind a busy normal pod would take the node down with them.
5. Check the result against scx_layered's limits (`scx.check_config`).

Invariants (tests/unit/test_planner_properties.py checks them with hypothesis)
----------
- Every planned pod lands in exactly one layer, of its own tier; a new pod at its QoS class's
  default tier lands right without a new config.
- The config respects every scx_layered limit, whatever the number of pods.
- The same pods, in any order, give byte-identical JSON.
- CPU ranges never exceed the machine; at least one core stays outside critical.
- A higher tier never has a lower weight than a lower one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from temper.policy.cgroups import CgroupDriver, any_path_regex, pod_cgroup_path, qos_prefix
from temper.policy.errors import InputError, PlanError
from temper.policy.machine import MachineShape
from temper.policy.pods import Pod
from temper.policy.profiles import Profile, ThreadGroup
from temper.policy.scx import (
    MAX_OR_BLOCKS,
    MAX_WEIGHT,
    AndBlock,
    LayerKind,
    LayerSpec,
    Match,
    Placer,
    Rule,
    check_config,
    render_config,
)
from temper.policy.tiers import TIERS, QosClass, Tier, TierSettings, TierSource, decide_tier

HOST_LAYER = "host"
KIND_OF_TIER: Mapping[Tier, LayerKind] = {
    Tier.CRITICAL: LayerKind.CONFINED,
    Tier.HIGH: LayerKind.GROUPED,
    Tier.NORMAL: LayerKind.GROUPED,
    Tier.LOW: LayerKind.OPEN,
    Tier.BACKGROUND: LayerKind.OPEN,
}


@dataclass(frozen=True)
class PlanSettings:
    """Planner settings; each default carries its reason."""

    tiers: TierSettings = field(default_factory=TierSettings)
    cgroup_driver: CgroupDriver = CgroupDriver.SYSTEMD
    # A tier whose pods request the whole machine weighs this much; 1000 leaves a factor of 10
    # below scx_layered's ceiling of 10000 for the tier steps above it.
    weight_scale: int = 1000
    # Each tier weighs at least twice the tier below: under contention between two adjacent
    # tiers, the higher one gets at least two thirds of the CPU.
    tier_weight_step: float = 2.0
    # Per-CPU utilization a layer grows past, for pods that never burst above their requests.
    # Lower for latency tiers: spare capacity in the layer is what keeps queueing delay short.
    util_targets: Mapping[Tier, float] = field(
        default_factory=lambda: {Tier.CRITICAL: 0.6, Tier.HIGH: 0.75, Tier.NORMAL: 0.85}
    )
    # No band goes below this ceiling, however bursty the pods: a layer must still be able to
    # shrink when idle.
    util_floor: float = 0.2
    # The batch tiers run 5 ms slices, not scx_layered's 20 ms. Only critical preempts, so a
    # high or normal task that wakes onto a CPU a batch task holds waits out the rest of its
    # slice; the slice bounds that wait. In the lab 5 ms also gave the critical pod the lower
    # p99 of the two, and batch kept its share with either (docs/lab.md).
    batch_slice_us: int = 5000
    # The critical tier runs 1 ms slices. A preempting layer never preempts its own tasks, so a
    # critical thread that wakes while another of its layer holds the CPU waits out the rest of
    # that thread's slice: the slice bounds the critical pod's own head-of-line wait, as
    # EEVDF's base slice (0.75 ms, scaled up to 3 ms with the CPU count) does for the stock
    # scheduler. A thread alone on its CPU loses nothing: scx_layered renews an expired slice
    # when nothing else waits. In the lab 1 ms cut the light profile's tail (docs/lab.md).
    critical_slice_us: int = 1000


@dataclass(frozen=True)
class Placement:
    """Where one pod's threads go (other than threads a profile's thread group claims)."""

    pod: Pod
    tier: Tier
    source: TierSource
    layer: str
    cgroup_path: str


@dataclass(frozen=True)
class Plan:
    shape: MachineShape
    layers: tuple[LayerSpec, ...]
    placements: tuple[Placement, ...]
    warnings: tuple[str, ...]

    def config_json(self) -> str:
        """Exactly the config scx_layered is given."""
        return render_config(self.layers)


@dataclass(frozen=True)
class _Tiered:
    pod: Pod
    tier: Tier
    source: TierSource
    path: str


def plan_node(
    pods: Iterable[Pod],
    shape: MachineShape,
    profiles: Sequence[Profile] = (),
    settings: PlanSettings | None = None,
    assignments: Mapping[str, Tier] | None = None,
) -> Plan:
    """Plan one node. `assignments` maps "namespace/name" to an operator-assigned tier."""
    settings = settings or PlanSettings()
    warnings: list[str] = []
    tiered = _decide_tiers(_node_pods(pods, warnings), settings, assignments or {}, warnings)
    layers = _layout(tiered, profiles, settings, warnings)
    placements = _place_pods(layers, tiered)
    layers = _size_layers(
        layers,
        placements=placements,
        tiered=tiered,
        shape=shape,
        settings=settings,
        warnings=warnings,
    )
    problems = check_config(layers)
    if problems:
        raise PlanError("the plan breaks scx_layered's limits: " + "; ".join(problems))
    return Plan(shape, tuple(layers), placements, tuple(warnings))


# -- 1. which pods, which tiers ------------------------------------------------------------------


def _node_pods(pods: Iterable[Pod], warnings: list[str]) -> list[Pod]:
    """The pods to plan, in a canonical order: running or pending pods of one node.

    Pods without `spec.nodeName` are unscheduled and left out, unless no pod names a node at all
    (hand-written manifests, a static pod directory), where all of them are the node's.
    """
    live = [pod for pod in pods if not pod.finished]
    nodes = sorted({pod.node_name for pod in live if pod.node_name})
    if len(nodes) > 1:
        raise InputError(
            f"the pods are on {len(nodes)} nodes ({_some(nodes)}); plan one node's "
            "pods: kubectl get pods -A --field-selector spec.nodeName=NODE -o json"
        )
    uids = [pod.uid for pod in live]
    if len(set(uids)) != len(uids):
        duplicate = next(uid for uid in uids if uids.count(uid) > 1)
        raise InputError(f"pod uid {duplicate} appears more than once")
    scheduled = [pod for pod in live if pod.node_name or not nodes]
    if len(scheduled) < len(live):
        unscheduled = len(live) - len(scheduled)
        warnings.append(f"{unscheduled} pods are not scheduled to a node and are not planned")
    return sorted(scheduled, key=lambda pod: (pod.namespace, pod.name, pod.uid))


def _some(names: Sequence[str], shown: int = 3) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _decide_tiers(
    pods: Sequence[Pod],
    settings: PlanSettings,
    assignments: Mapping[str, Tier],
    warnings: list[str],
) -> list[_Tiered]:
    tiered = []
    for pod in pods:
        decision = decide_tier(
            pod.qos, pod.priority_class, pod.priority, settings.tiers, assignments.get(pod.key)
        )
        if pod.priority_class and decision.source is TierSource.QOS_DEFAULT:
            warnings.append(
                f"pod {pod.key}: PriorityClass {pod.priority_class!r} without spec.priority; "
                "using its QoS-class default"
            )
        path = pod_cgroup_path(pod.qos, pod.cgroup_uid, settings.cgroup_driver)
        tiered.append(_Tiered(pod, decision.tier, decision.source, path))
    unknown = sorted(set(assignments) - {t.pod.key for t in tiered})
    if unknown:
        warnings.append(f"tier assignments for pods not on this node: {', '.join(unknown)}")
    return tiered


# -- 2. match rules ------------------------------------------------------------------------------


def _layout(
    tiered: Sequence[_Tiered],
    profiles: Sequence[Profile],
    settings: PlanSettings,
    warnings: list[str],
) -> list[LayerSpec]:
    qos_tiers = settings.tiers.qos_tiers
    explicit = [t for t in tiered if t.tier is not qos_tiers[t.pod.qos]]
    demoted = {t.pod.qos for t in explicit if qos_tiers[t.pod.qos].above(t.tier)}
    layers = _profile_layers(tiered, profiles, warnings)
    for tier in TIERS:
        paths = [t.path for t in explicit if t.tier is tier]
        bases = [q for q in QosClass if qos_tiers[q] is tier and q not in demoted]
        if paths or bases:
            layers.append(_draft(tier.value, tier, _rule_blocks(paths, bases, settings)))
    for tier in TIERS:
        bases = [q for q in QosClass if qos_tiers[q] is tier and q in demoted]
        if bases:
            taken = any(layer.name == tier.value for layer in layers)
            name = f"{tier.value}-default" if taken else tier.value
            layers.append(_draft(name, tier, _rule_blocks([], bases, settings)))
    layers.append(_draft(HOST_LAYER, None, ((),)))
    return layers


def _rule_blocks(
    pod_paths: Sequence[str], bases: Sequence[QosClass], settings: PlanSettings
) -> tuple[AndBlock, ...]:
    driver = settings.cgroup_driver
    base_blocks = [(Match(Rule.CGROUP_PREFIX, qos_prefix(q, driver)),) for q in bases]
    room = MAX_OR_BLOCKS - len(base_blocks)
    return (*_pod_blocks(pod_paths, (), room), *base_blocks)


def _pod_blocks(paths: Sequence[str], extra: AndBlock, room: int) -> list[AndBlock]:
    """One prefix block per pod cgroup; one regex block for all of them when they overflow."""
    if len(paths) <= room:
        return [(Match(Rule.CGROUP_PREFIX, path), *extra) for path in sorted(paths)]
    return [(Match(Rule.CGROUP_REGEX, any_path_regex(paths)), *extra)]


def _profile_layers(
    tiered: Sequence[_Tiered], profiles: Sequence[Profile], warnings: list[str]
) -> list[LayerSpec]:
    layers = []
    for profile in profiles:
        selected = [t for t in tiered if profile.selector.selects(t.pod.namespace, t.pod.labels)]
        if not selected:
            warnings.append(f"profile {profile.name!r} selects no pod on this node")
        for group in profile.thread_groups:
            paths = _group_paths(profile, group, selected, warnings)
            if paths:
                comm = (Match(Rule.COMM_PREFIX, group.comm_prefix),)
                name = f"{group.tier.value}.{profile.name}.{group.name}"
                blocks = tuple(_pod_blocks(paths, comm, MAX_OR_BLOCKS))
                note = (
                    f"profile {profile.name}: threads {group.comm_prefix!r}* of {len(paths)} pods"
                )
                layers.append(replace(_draft(name, group.tier, blocks), comment=note))
    return layers


def _group_paths(
    profile: Profile, group: ThreadGroup, selected: Sequence[_Tiered], warnings: list[str]
) -> list[str]:
    """Cgroups of the selected pods this group moves down; it never moves threads up."""
    raised = [t.pod.key for t in selected if group.tier.above(t.tier)]
    if raised:
        warnings.append(
            f"profile {profile.name!r} thread group {group.name!r} would raise threads above "
            f"their pod's tier in {', '.join(raised)}; not applied there"
        )
    return [t.path for t in selected if t.tier.above(group.tier)]


def _draft(name: str, tier: Tier | None, matches: tuple[AndBlock, ...]) -> LayerSpec:
    kind = KIND_OF_TIER[tier] if tier is not None else LayerKind.OPEN
    return LayerSpec(name=name, tier=tier, kind=kind, matches=matches, weight=1)


# -- 3. placement --------------------------------------------------------------------------------


def _place_pods(layers: Sequence[LayerSpec], tiered: Sequence[_Tiered]) -> tuple[Placement, ...]:
    placer = Placer(layers)
    placements = []
    for t in tiered:
        layer = placer.place(t.path, None)
        if layer is None or layer.tier is not t.tier:
            got = "no layer" if layer is None else f"layer {layer.name!r}"
            raise PlanError(f"internal: pod {t.pod.key} ({t.tier.value}) would land in {got}")
        placements.append(Placement(t.pod, t.tier, t.source, layer.name, t.path))
    return tuple(placements)


def misplaced(layers: Sequence[LayerSpec], placements: Iterable[Placement]) -> list[Placement]:
    """The pods these layers (say, a running config) would put outside their tier."""
    placer = Placer(layers)
    wrong = []
    for placement in placements:
        layer = placer.place(placement.cgroup_path, None)
        if layer is None or layer.tier is not placement.tier:
            wrong.append(placement)
    return wrong


def needs_enforcement(plan: Plan) -> bool:
    """Whether any pod asked for Temper: an operator's assignment, a temper-* PriorityClass or
    the critical tier. Until one does, the node stays on the stock scheduler
    (docs/observe.md#observation-first)."""
    return any(
        p.source is TierSource.OPERATOR
        or (p.pod.priority_class or "").startswith("temper-")
        or p.tier is Tier.CRITICAL
        for p in plan.placements
    )


# -- 4. sizing -----------------------------------------------------------------------------------


def _size_layers(
    layers: Sequence[LayerSpec],
    *,
    placements: Sequence[Placement],
    tiered: Sequence[_Tiered],
    shape: MachineShape,
    settings: PlanSettings,
    warnings: list[str],
) -> list[LayerSpec]:
    weights = _tier_weights(tiered, shape, settings)
    budget = _CoreBudget(shape, warnings)
    sized: dict[str, LayerSpec] = {}
    # Critical layers claim their exclusive cores before anyone else is sized.
    for layer in sorted(layers, key=lambda layer: layer.kind is not LayerKind.CONFINED):
        pods = [p.pod for p in placements if p.layer == layer.name]
        # The host's own work (kubelet, the runtime, kernel threads) ranks right after high.
        weight = weights[layer.tier or Tier.HIGH]
        sized[layer.name] = _size_layer(
            layer, pods, weight=weight, budget=budget, shape=shape, settings=settings
        )
    return [sized[layer.name] for layer in layers]


def _size_layer(
    layer: LayerSpec,
    pods: Sequence[Pod],
    *,
    weight: int,
    budget: _CoreBudget,
    shape: MachineShape,
    settings: PlanSettings,
) -> LayerSpec:
    if layer.kind is LayerKind.OPEN:
        batch = layer.tier in (Tier.LOW, Tier.BACKGROUND)
        slice_us = settings.batch_slice_us if batch else None
        return replace(layer, weight=weight, slice_us=slice_us, comment=_comment(layer, pods))
    exclusive = layer.kind is LayerKind.CONFINED
    cores = budget.claim(layer.name, pods, exclusive)
    tpc = shape.threads_per_core
    cpus_range = (cores[0] * tpc, cores[1] * tpc)
    util_range = _util_range(layer, pods, cpus_range[1], settings, tpc if exclusive else 1)
    return replace(
        layer,
        weight=weight,
        cpus_range=cpus_range,
        util_range=util_range,
        protected=exclusive,  # critical never lends its idle CPUs (the essay, docs/lab.md)
        exclusive=exclusive,
        preempt=exclusive,
        slice_us=settings.critical_slice_us if exclusive else None,
        comment=_comment(layer, pods),
    )


class _CoreBudget:
    """Hands out whole cores: critical first and exclusive, one core always left over."""

    def __init__(self, shape: MachineShape, warnings: list[str]) -> None:
        self.shape = shape
        self.warnings = warnings
        self.free_cores = shape.nr_cores  # not held by an exclusive (critical) minimum
        self.unreserved = shape.nr_cores  # not promised to any layer's minimum

    def claim(self, name: str, pods: Sequence[Pod], exclusive: bool) -> tuple[int, int]:
        """(min, max) cores for a layer with these pods."""
        available = self.free_cores - 1 if exclusive else self.free_cores
        if available < 1:
            raise PlanError(
                f"layer {name!r} needs exclusive cores, but this machine has "
                f"{self.shape.nr_cores} core(s) and one must stay for everything else"
            )
        wanted = self._cores(sum(p.cpu_request_millis for p in pods), exclusive)
        wanted = max(wanted, 1) if exclusive else wanted
        least = min(wanted, available if exclusive else self.unreserved)
        if least < wanted:
            self.warnings.append(
                f"layer {name!r}: its pods' requests need {wanted} cores, capped at {least} "
                f"so that {'one core stays' if exclusive else 'the machine is not overcommitted'}"
            )
        most = available
        limits = [p.cpu_limit_millis for p in pods]
        if pods and all(limit is not None for limit in limits):
            most = min(available, max(least, self._cores(sum(filter(None, limits)), exclusive)))
        if exclusive:
            self.free_cores -= least
        self.unreserved -= least
        return least, max(most, least)

    def _cores(self, millis: int, exclusive: bool) -> int:
        """Cores to run `millis` of CPU: an exclusive core runs one thread, others all siblings."""
        per_core = 1000 if exclusive else 1000 * self.shape.threads_per_core
        return math.ceil(millis / per_core)


def _util_range(
    layer: LayerSpec,
    pods: Sequence[Pod],
    max_cpus: int,
    settings: PlanSettings,
    smt_divisor: int,
) -> tuple[float, float]:
    assert layer.tier is not None
    target = settings.util_targets[layer.tier]
    requested = sum(p.cpu_request_millis for p in pods)
    ceiling = sum(max(p.cpu_request_millis, p.cpu_limit_millis or max_cpus * 1000) for p in pods)
    headroom = requested / ceiling if requested else 1.0
    high = max(settings.util_floor, target * headroom) / smt_divisor
    return round(high / 2, 3), round(high, 3)


def _tier_weights(
    tiered: Sequence[_Tiered], shape: MachineShape, settings: PlanSettings
) -> dict[Tier, int]:
    capacity = shape.nr_cpus * 1000
    weights: dict[Tier, int] = {}
    below = 0.0
    for tier in reversed(TIERS):
        requested = sum(t.pod.cpu_request_millis for t in tiered if t.tier is tier)
        # Requests beyond the machine weigh as the whole machine: the clamp at MAX_WEIGHT must
        # never tie two tiers, since the weight is a tier's serving rank.
        own = max(1, round(settings.weight_scale * min(requested / capacity, 1.0)))
        weight = min(MAX_WEIGHT, max(own, math.ceil(below * settings.tier_weight_step)))
        weights[tier] = weight
        below = weight
    return weights


def _comment(layer: LayerSpec, pods: Sequence[Pod]) -> str:
    """A note for people reading the config; scx_layered ignores `comment`."""
    if layer.comment:
        return layer.comment
    if layer.tier is None:
        return "host: everything outside pods (node daemons, kernel threads)"
    requested = sum(p.cpu_request_millis for p in pods)
    return f"tier {layer.tier.value}: {len(pods)} pods, {requested}m CPU requested"
