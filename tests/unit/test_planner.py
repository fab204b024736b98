"""The planner on hand-made nodes: layout, sizing, warnings and refusals."""

from __future__ import annotations

import json

import pytest

from builders import make_pod
from temper.policy.cgroups import CgroupDriver, pod_cgroup_path
from temper.policy.errors import InputError, PlanError
from temper.policy.machine import synthetic_shape
from temper.policy.planner import Plan, PlanSettings, plan_node
from temper.policy.pods import Pod
from temper.policy.profiles import Profile, Selector, ThreadGroup
from temper.policy.scx import LayerKind, LayerSpec, Rule, check_config, place
from temper.policy.tiers import QosClass, Tier, TierSource

G, B, BE = QosClass.GUARANTEED, QosClass.BURSTABLE, QosClass.BEST_EFFORT
NODE16 = synthetic_shape(1, 8, 2, 1)  # 16 CPUs, 8 cores x 2 threads


def layer(plan: Plan, name: str) -> LayerSpec:
    found = [spec for spec in plan.layers if spec.name == name]
    assert found, f"no layer {name!r} in {[spec.name for spec in plan.layers]}"
    return found[0]


def names(plan: Plan) -> list[str]:
    return [spec.name for spec in plan.layers]


def test_a_node_without_temper_classes_gets_only_qos_default_layers() -> None:
    pods = [make_pod("a", G, request=1000, limit=1000), make_pod("b", B), make_pod("c", BE)]
    plan = plan_node(pods, NODE16)
    assert names(plan) == ["high", "normal", "background", "host"]
    assert all(p.source is TierSource.QOS_DEFAULT for p in plan.placements)
    # Each tier layer holds exactly one base rule: its QoS class's cgroup prefix.
    assert layer(plan, "high").matches[0][0].value == "kubepods.slice/kubepods-pod"


def test_promotions_need_no_extra_layers() -> None:
    pods = [
        make_pod("proxy", B, priority_class="system-node-critical"),
        make_pod("checkout", B, request=2000, priority_class="temper-critical"),
    ]
    plan = plan_node(pods, NODE16)
    assert names(plan) == ["critical", "high", "normal", "background", "host"]
    assert {p.pod.name: p.layer for p in plan.placements} == {
        "checkout": "critical",
        "proxy": "high",
    }


def test_a_demotion_moves_its_class_base_rule_after_the_explicit_rules() -> None:
    pods = [
        make_pod("trainer", G, request=4000, limit=4000, priority_class="temper-low"),
        make_pod("cart", G, request=1000, limit=1000),
        make_pod("search", B, priority_class="temper-high"),
    ]
    plan = plan_node(pods, NODE16)
    assert names(plan) == ["high", "normal", "low", "background", "high-default", "host"]
    placed = {p.pod.name: p.layer for p in plan.placements}
    assert placed == {"trainer": "low", "cart": "high-default", "search": "high"}


def test_a_moved_base_rule_takes_the_tier_name_when_the_tier_has_no_other_layer() -> None:
    pods = [make_pod("etl", B, request=2000, priority_class="temper-background")]
    plan = plan_node(pods, NODE16)
    assert names(plan) == ["high", "background", "normal", "host"]
    assert plan.placements[0].layer == "background"


def test_critical_gets_whole_exclusive_cores_for_its_requests() -> None:
    pods = [make_pod("checkout", G, request=2500, limit=2500, priority_class="temper-critical")]
    critical = layer(plan_node(pods, NODE16), "critical")
    assert critical.kind is LayerKind.CONFINED
    # Protected: batch never borrows a critical CPU, so a wake-up never waits on preemption.
    assert (critical.protected, critical.exclusive, critical.preempt) == (True, True, True)
    # 2.5 CPUs of exclusive work need 3 cores, i.e. 6 CPUs with their idle siblings.
    assert critical.cpus_range == (6, 6)


def test_critical_and_the_batch_tiers_run_short_slices_and_the_scheduler_is_told() -> None:
    pods = [
        make_pod("checkout", G, request=1000, limit=1000, priority_class="temper-critical"),
        make_pod("trainer", B, request=1000, priority_class="temper-low"),
        make_pod("etl", B, request=1000, priority_class="temper-background"),
    ]
    plan = plan_node(pods, NODE16)
    slices = {spec.name: spec.slice_us for spec in plan.layers}
    assert slices == {
        "critical": 1000,
        "high": None,
        "normal": None,
        "low": 5000,
        "background": 5000,
        "host": None,
    }
    rendered = {spec["name"]: spec["kind"] for spec in json.loads(plan.config_json())}
    assert rendered["low"] == {
        "Open": {"slice_us": 5000, "weight": rendered["low"]["Open"]["weight"]}
    }
    assert rendered["critical"]["Confined"]["slice_us"] == 1000
    assert "slice_us" not in rendered["high"]["Grouped"]


def test_critical_without_limits_may_grow_to_all_cores_but_one() -> None:
    pods = [make_pod("checkout", B, request=1000, priority_class="temper-critical")]
    critical = layer(plan_node(pods, NODE16), "critical")
    assert critical.cpus_range == (2, 14)


def test_critical_requests_beyond_the_machine_are_capped_with_a_warning() -> None:
    pods = [make_pod("huge", G, request=32000, limit=32000, priority_class="temper-critical")]
    plan = plan_node(pods, NODE16)
    assert layer(plan, "critical").cpus_range == (14, 14)
    assert any("capped" in w and "critical" in w for w in plan.warnings)


def test_critical_on_a_one_core_machine_is_refused() -> None:
    pods = [make_pod("checkout", G, request=500, limit=500, priority_class="temper-critical")]
    with pytest.raises(PlanError, match="1 core"):
        plan_node(pods, synthetic_shape(1, 1, 2, 1))


def test_one_core_machine_without_critical_pods_plans() -> None:
    plan = plan_node([make_pod("a", B)], synthetic_shape(1, 1, 1, 1))
    assert check_config(plan.layers) == []


def test_grouped_ranges_follow_requests_and_limits() -> None:
    pods = [make_pod("a", G, request=3000, limit=3000), make_pod("b", G, request=1500, limit=1500)]
    high = layer(plan_node(pods, NODE16), "high")
    # 4.5 CPUs requested: 3 cores of 2 threads; limits are the same, so max equals min.
    assert high.cpus_range == (6, 6)
    assert high.util_range == (0.375, 0.75)


def test_bursty_pods_get_a_lower_utilization_band() -> None:
    steady = layer(plan_node([make_pod("a", B, request=1000, limit=1000)], NODE16), "normal")
    bursty = layer(plan_node([make_pod("a", B, request=1000, limit=4000)], NODE16), "normal")
    assert steady.util_range is not None
    assert bursty.util_range is not None
    assert bursty.util_range[1] < steady.util_range[1]


def test_weights_grow_with_requests_and_keep_tier_order() -> None:
    light = plan_node([make_pod("a", B, request=1000, priority_class="temper-background")], NODE16)
    heavy = plan_node([make_pod("a", B, request=8000, priority_class="temper-background")], NODE16)
    assert layer(heavy, "background").weight > layer(light, "background").weight
    assert layer(heavy, "normal").weight >= 2 * layer(heavy, "background").weight
    assert layer(heavy, "high").weight >= 2 * layer(heavy, "normal").weight


def test_finished_pods_are_not_planned() -> None:
    pods = [make_pod("done", B, phase="Succeeded"), make_pod("failed", B, phase="Failed")]
    assert plan_node(pods, NODE16).placements == ()


def test_pods_of_several_nodes_are_refused() -> None:
    pods = [make_pod("a", B, node="node-a"), make_pod("b", B, node="node-b")]
    with pytest.raises(InputError, match="2 nodes"):
        plan_node(pods, NODE16)


def test_duplicate_uids_are_refused() -> None:
    pods = [make_pod("a", B, uid="same"), make_pod("b", B, uid="same")]
    with pytest.raises(InputError, match="same"):
        plan_node(pods, NODE16)


def test_unknown_priority_class_without_priority_falls_back_with_a_warning() -> None:
    pod = make_pod("a", B, priority_class="team-gold")
    plan = plan_node([pod], NODE16)
    assert plan.placements[0].tier is Tier.NORMAL
    assert any("team-gold" in w for w in plan.warnings)


def test_operator_assignment_overrides_priority() -> None:
    pod = make_pod("a", B, namespace="shop", priority_class="temper-critical")
    plan = plan_node([pod], NODE16, assignments={"shop/a": Tier.LOW, "shop/gone": Tier.HIGH})
    assert (plan.placements[0].tier, plan.placements[0].source) == (Tier.LOW, TierSource.OPERATOR)
    assert any("shop/gone" in w for w in plan.warnings)


def test_labels_cannot_raise_a_tier() -> None:
    pod = make_pod("a", BE, labels={"temper.io/tier": "critical", "priority": "critical"})
    assert plan_node([pod], NODE16).placements[0].tier is Tier.BACKGROUND


def _profile(tier: Tier) -> Profile:
    return Profile(
        name="checkout-gc",
        selector=Selector(namespace="shop", match_labels=(("app", "checkout"),)),
        thread_groups=(ThreadGroup("gc", "GC Thread", tier),),
        source="test.toml",
    )


def test_a_profile_moves_matching_threads_of_selected_pods_only() -> None:
    checkout = make_pod(
        "checkout",
        G,
        namespace="shop",
        request=2000,
        limit=2000,
        priority_class="temper-critical",
        labels={"app": "checkout"},
    )
    other = make_pod("cart", G, namespace="shop", request=1000, limit=1000, labels={"app": "cart"})
    plan = plan_node([checkout, other], NODE16, [_profile(Tier.BACKGROUND)])
    assert names(plan)[0] == "background.checkout-gc.gc"
    path = pod_cgroup_path(G, checkout.uid, CgroupDriver.SYSTEMD) + "cri-containerd-1.scope/"
    assert _tier_at(plan, path, "GC Thread#1") is Tier.BACKGROUND
    assert _tier_at(plan, path, "http-worker") is Tier.CRITICAL
    cart = pod_cgroup_path(G, other.uid, CgroupDriver.SYSTEMD)
    assert _tier_at(plan, cart, "GC Thread#1") is Tier.HIGH


def test_a_profile_cannot_raise_threads_above_their_pod() -> None:
    pod = make_pod("checkout", BE, namespace="shop", labels={"app": "checkout"})
    plan = plan_node([pod], NODE16, [_profile(Tier.HIGH)])
    assert not any(spec.name.startswith("high.") for spec in plan.layers)
    assert any("would raise" in w for w in plan.warnings)
    path = pod_cgroup_path(BE, pod.uid, CgroupDriver.SYSTEMD)
    assert _tier_at(plan, path, "GC Thread#1") is Tier.BACKGROUND


def test_a_profile_selecting_nothing_warns() -> None:
    plan = plan_node([make_pod("a", B)], NODE16, [_profile(Tier.BACKGROUND)])
    assert any("selects no pod" in w for w in plan.warnings)


def _tier_at(plan: Plan, path: str, comm: str | None) -> Tier | None:
    found = place(plan.layers, path, comm)
    assert found is not None
    return found.tier


def _many_pods(count: int) -> list[Pod]:
    """`count` pods spread over every tier and QoS class, most of them explicit exceptions."""
    classes = [
        None,
        "temper-critical",
        "temper-high",
        "temper-normal",
        "temper-low",
        "temper-background",
        "system-cluster-critical",
    ]
    pods = []
    for i in range(count):
        qos = (G, B, BE)[i % 3]
        request = 0 if qos is BE else 100 + 10 * (i % 7)
        limit = request if qos is G else None
        pods.append(
            make_pod(
                f"p{i}",
                qos,
                namespace=f"ns{i % 9}",
                request=request,
                limit=limit,
                priority_class=classes[i % len(classes)],
                labels={"app": "checkout" if i % 4 == 0 else "other"},
            )
        )
    return pods


@pytest.mark.parametrize("driver", list(CgroupDriver))
@pytest.mark.parametrize("count", [250, 600])
def test_hundreds_of_pods_stay_within_the_limits(driver: CgroupDriver, count: int) -> None:
    pods = _many_pods(count)
    plan = plan_node(
        pods,
        synthetic_shape(2, 48, 2, 2),
        [_profile(Tier.BACKGROUND)],
        PlanSettings(cgroup_driver=driver),
    )
    assert check_config(plan.layers) == []
    assert len(plan.placements) == count
    # Explicit rules overflowed 32 OR blocks, so they were folded into regexes.
    assert any(m.rule is Rule.CGROUP_REGEX for s in plan.layers for b in s.matches for m in b)
    for placement in plan.placements:
        path = pod_cgroup_path(placement.pod.qos, placement.pod.uid, driver)
        assert _tier_at(plan, path, None) is placement.tier


def test_plan_json_is_deterministic_for_equal_input() -> None:
    pods = _many_pods(40)
    assert plan_node(pods, NODE16).config_json() == plan_node(pods[::-1], NODE16).config_json()


def test_unscheduled_pods_are_left_out_when_others_name_the_node() -> None:
    pods = [make_pod("placed", B), make_pod("pending", B, node=None)]
    plan = plan_node(pods, NODE16)
    assert [p.pod.name for p in plan.placements] == ["placed"]
    assert any("1 pods are not scheduled" in w for w in plan.warnings)


def test_manifests_without_node_names_are_all_planned() -> None:
    pods = [make_pod("a", B, node=None), make_pod("b", BE, node=None)]
    assert len(plan_node(pods, NODE16).placements) == 2
