"""Properties of the planner over arbitrary pod sets, machine shapes and both cgroup drivers."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builders import make_pod, pod_sets
from temper.policy.cgroups import CgroupDriver, container_cgroup_path, pod_cgroup_path
from temper.policy.machine import MachineShape, synthetic_shape
from temper.policy.planner import Plan, PlanSettings, plan_node
from temper.policy.pods import Pod
from temper.policy.profiles import Profile, Selector, ThreadGroup
from temper.policy.scx import (
    MAX_CGROUP_REGEXES,
    MAX_LAYERS,
    MAX_OR_BLOCKS,
    LayerKind,
    Rule,
    check_config,
    place,
)
from temper.policy.tiers import DEFAULT_QOS_TIERS, QosClass, Tier

SHAPES = [
    synthetic_shape(1, 2, 1, 1),
    synthetic_shape(1, 2, 2, 1),
    synthetic_shape(1, 8, 2, 1),
    synthetic_shape(2, 8, 1, 2),
    synthetic_shape(2, 48, 2, 2),
]
GC = Profile(
    name="gc",
    selector=Selector(match_labels=(("app", "checkout"),)),
    thread_groups=(ThreadGroup("gc", "GC Thread", Tier.BACKGROUND),),
    source="test",
)
shapes = st.sampled_from(SHAPES)
drivers = st.sampled_from(CgroupDriver)
COMMON = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _plan(pods: list[Pod], shape: MachineShape, driver: CgroupDriver) -> Plan:
    return plan_node(pods, shape, [GC], PlanSettings(cgroup_driver=driver))


@COMMON
@given(pod_sets(), shapes, drivers)
def test_every_container_of_every_pod_lands_in_its_tier(
    pods: list[Pod], shape: MachineShape, driver: CgroupDriver
) -> None:
    plan = _plan(pods, shape, driver)
    assert sorted(p.pod.uid for p in plan.placements) == sorted(p.uid for p in pods)
    for placement in plan.placements:
        pod_path = pod_cgroup_path(placement.pod.qos, placement.pod.uid, driver)
        for container in ("sandbox0", "app1", "sidecar2"):
            path = container_cgroup_path(pod_path, container, driver)
            layer = place(plan.layers, path, "worker")
            assert layer is not None
            assert layer.tier is placement.tier
            assert layer.name == placement.layer


@COMMON
@given(pod_sets(), shapes, drivers)
def test_config_respects_scx_layered_limits(
    pods: list[Pod], shape: MachineShape, driver: CgroupDriver
) -> None:
    layers = _plan(pods, shape, driver).layers
    assert check_config(layers) == []
    assert len(layers) <= MAX_LAYERS
    assert layers[-1].matches == ((),)
    assert all(len(layer.matches) <= MAX_OR_BLOCKS for layer in layers)
    regexes = [
        m for layer in layers for b in layer.matches for m in b if m.rule is Rule.CGROUP_REGEX
    ]
    assert len(regexes) <= MAX_CGROUP_REGEXES


@COMMON
@given(pod_sets(), shapes, drivers, st.randoms(use_true_random=False))
def test_output_is_byte_identical_whatever_the_pod_order(
    pods: list[Pod], shape: MachineShape, driver: CgroupDriver, rnd: random.Random
) -> None:
    shuffled = list(pods)
    rnd.shuffle(shuffled)
    first, second = _plan(pods, shape, driver), _plan(shuffled, shape, driver)
    assert first.config_json() == second.config_json()
    assert first.placements == second.placements
    assert first.warnings == second.warnings


@COMMON
@given(pod_sets(), shapes, drivers, st.sampled_from(QosClass))
def test_a_new_pod_at_its_qos_default_needs_no_new_config(
    pods: list[Pod], shape: MachineShape, driver: CgroupDriver, qos: QosClass
) -> None:
    layers = _plan(pods, shape, driver).layers
    newcomer = make_pod("newcomer", qos, uid="0f0f0f0f-aaaa-bbbb-cccc-123456789abc")
    path = container_cgroup_path(pod_cgroup_path(qos, newcomer.uid, driver), "c1", driver)
    layer = place(layers, path, None)
    assert layer is not None
    assert layer.tier is DEFAULT_QOS_TIERS[qos]


@COMMON
@given(pod_sets(), shapes, drivers)
def test_cpu_ranges_fit_the_machine_in_whole_cores(
    pods: list[Pod], shape: MachineShape, driver: CgroupDriver
) -> None:
    layers = _plan(pods, shape, driver).layers
    tpc = shape.threads_per_core
    sized = [layer for layer in layers if layer.cpus_range is not None]
    for layer in sized:
        low, high = layer.cpus_range or (0, 0)
        assert 0 <= low <= high <= shape.nr_cpus
        assert low % tpc == 0
        assert high % tpc == 0
    for layer in sized:
        if layer.kind is LayerKind.CONFINED:
            assert layer.protected
            assert layer.exclusive
            assert (layer.cpus_range or (0, 0))[1] <= (shape.nr_cores - 1) * tpc
    assert sum((layer.cpus_range or (0, 0))[0] for layer in sized) <= shape.nr_cpus


@COMMON
@given(pod_sets(), shapes, drivers)
def test_shared_cpus_serve_tiers_in_rank_order_host_after_high(
    pods: list[Pod], shape: MachineShape, driver: CgroupDriver
) -> None:
    """scx_layered --layer-order-by-weight serves layers by weight, then config order."""
    layers = _plan(pods, shape, driver).layers
    order = sorted(range(len(layers)), key=lambda i: (-layers[i].weight, i))
    rank = {layers[i].name: position for position, i in enumerate(order)}
    tiered = [layer for layer in layers if layer.tier is not None]
    for upper in tiered:
        for lower in tiered:
            if upper.tier is not None and lower.tier is not None and upper.tier.above(lower.tier):
                assert rank[upper.name] < rank[lower.name], (upper.name, lower.name)
            if lower.tier is not None and Tier.HIGH.above(lower.tier):
                assert rank["host"] < rank[lower.name], lower.name
        if upper.tier in (Tier.CRITICAL, Tier.HIGH):
            assert rank[upper.name] < rank["host"], upper.name


@COMMON
@given(pod_sets(), shapes, drivers)
def test_layer_kinds_follow_tiers(
    pods: list[Pod], shape: MachineShape, driver: CgroupDriver
) -> None:
    kinds = {
        Tier.CRITICAL: LayerKind.CONFINED,
        Tier.HIGH: LayerKind.GROUPED,
        Tier.NORMAL: LayerKind.GROUPED,
        Tier.LOW: LayerKind.OPEN,
        Tier.BACKGROUND: LayerKind.OPEN,
    }
    plan = _plan(pods, shape, driver)
    for layer in plan.layers:
        if layer.tier is not None:
            assert layer.kind is kinds[layer.tier]
    tiers_in_use = {p.tier for p in plan.placements}
    names = {layer.name for layer in plan.layers}
    assert {tier.value for tier in tiers_in_use} <= names


@COMMON
@given(pod_sets(), shapes, drivers)
def test_profile_threads_go_down_never_up(
    pods: list[Pod], shape: MachineShape, driver: CgroupDriver
) -> None:
    plan = _plan(pods, shape, driver)
    for placement in plan.placements:
        path = pod_cgroup_path(placement.pod.qos, placement.pod.uid, driver)
        gc_layer = place(plan.layers, path + "c/", "GC Thread#3")
        assert gc_layer is not None
        assert gc_layer.tier is not None
        selected = placement.pod.labels.get("app") == "checkout"
        if selected and placement.tier.above(Tier.BACKGROUND):
            assert gc_layer.tier is Tier.BACKGROUND
        else:
            assert gc_layer.tier is placement.tier
