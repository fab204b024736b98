"""Planner output, read back by the real scx_layered with `--print-and-exit`.

`--print-and-exit` parses the config, fills in defaults and prints it before its own limit checks
(docs/scx-layered.md#the-config-file). Comparing what it printed with what we wrote catches parse
errors and any field the scheduler would have dropped silently; `check_config` covers the limits.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from builders import make_pod
from temper.host.scheduler import check_scheduler
from temper.policy.cgroups import CgroupDriver
from temper.policy.machine import synthetic_shape
from temper.policy.planner import PlanSettings, plan_node
from temper.policy.pods import Pod
from temper.policy.profiles import Profile, Selector, ThreadGroup
from temper.policy.tiers import QosClass, Tier

G, B, BE = QosClass.GUARANTEED, QosClass.BURSTABLE, QosClass.BEST_EFFORT
GC = Profile(
    name="checkout-gc",
    selector=Selector(match_labels=(("app", "checkout"),)),
    thread_groups=(
        ThreadGroup("gc", "GC Thread", Tier.BACKGROUND),
        ThreadGroup("compactor", "compactor-15byt", Tier.LOW),
    ),
    source="test",
)


def print_and_exit(binary: Path, config: str, tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "layers.json"
    path.write_text(config)
    done = subprocess.run(
        [str(binary), "--print-and-exit", f"f:{path}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    _, _, body = done.stdout.partition("specs=")
    assert body, f"no specs= in output: {done.stdout[:500]}"
    parsed: list[dict[str, Any]] = json.loads(body)
    return parsed


def dropped_or_changed(ours: list[dict[str, Any]], parsed: list[dict[str, Any]]) -> list[str]:
    """Every field we wrote that scx_layered did not keep as written."""
    problems = []
    if [s["name"] for s in ours] != [s["name"] for s in parsed]:
        return [f"layer names/order differ: {[s['name'] for s in parsed]}"]
    for mine, theirs in zip(ours, parsed, strict=True):
        where = mine["name"]
        if mine["matches"] != theirs["matches"]:
            problems.append(f"{where}: matches differ")
        (kind, body), (their_kind, their_body) = *mine["kind"].items(), *theirs["kind"].items()
        if kind != their_kind:
            problems.append(f"{where}: kind {kind} read as {their_kind}")
        for field, value in body.items():
            if field not in their_body:
                problems.append(f"{where}: field {field} dropped")
            elif their_body[field] != value:
                problems.append(f"{where}: {field}={value!r} read as {their_body[field]!r}")
    return problems


def _node_pods() -> list[Pod]:
    return [
        make_pod("proxy", B, namespace="kube-system", priority_class="system-node-critical"),
        make_pod(
            "checkout",
            G,
            namespace="shop",
            request=2500,
            limit=2500,
            priority_class="temper-critical",
            labels={"app": "checkout"},
        ),
        make_pod("cart", G, namespace="shop", request=1000, limit=1000),
        make_pod(
            "search",
            B,
            namespace="shop",
            request=1500,
            limit=3000,
            priority_class="temper-high",
            labels={"app": "checkout"},
        ),
        make_pod("frontend", B, namespace="web", request=250, limit=1000),
        make_pod("etl", B, namespace="analytics", request=2000, priority_class="temper-background"),
        make_pod(
            "trainer", G, namespace="ml", request=4000, limit=4000, priority_class="temper-low"
        ),
        make_pod("report", BE, namespace="batch"),
    ]


def _crowd(count: int) -> list[Pod]:
    classes = [None, "temper-critical", "temper-low", "temper-background", "temper-high"]
    return [
        make_pod(
            f"p{i}",
            (G, B, BE)[i % 3],
            namespace="crowd",
            request=0 if i % 3 == 2 else 50,
            limit=50 if i % 3 == 0 else None,
            priority_class=classes[i % len(classes)],
            labels={"app": "checkout"},
        )
        for i in range(count)
    ]


CASES = {
    "lab-4cpu-smt-systemd": (synthetic_shape(1, 2, 2, 1), _node_pods(), CgroupDriver.SYSTEMD),
    "16cpu-cgroupfs": (synthetic_shape(1, 8, 2, 1), _node_pods(), CgroupDriver.CGROUPFS),
    "192cpu-numa-300-pods": (synthetic_shape(2, 48, 2, 2), _crowd(300), CgroupDriver.SYSTEMD),
    "8cpu-no-smt-empty": (synthetic_shape(1, 8, 1, 1), [], CgroupDriver.SYSTEMD),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_scx_layered_reads_the_plan_as_written(
    scx_layered: Path, tmp_path: Path, case: str
) -> None:
    shape, pods, driver = CASES[case]
    plan = plan_node(pods, shape, [GC], PlanSettings(cgroup_driver=driver))
    ours = json.loads(plan.config_json())
    parsed = print_and_exit(scx_layered, plan.config_json(), tmp_path)
    assert dropped_or_changed(ours, parsed) == []
    assert parsed[-1]["matches"] == [[]]


def test_the_comparison_catches_a_field_scx_layered_drops(
    scx_layered: Path, tmp_path: Path
) -> None:
    plan = plan_node(_node_pods(), synthetic_shape(1, 8, 2, 1))
    ours = json.loads(plan.config_json())
    ours[0]["kind"]["Confined"]["protectd"] = True  # a typo scx_layered would ignore
    parsed = print_and_exit(scx_layered, json.dumps(ours), tmp_path)
    assert dropped_or_changed(ours, parsed) == ["critical: field protectd dropped"]


def test_scx_layered_rejects_a_malformed_config(scx_layered: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[{"name": "x", "matches": [[]], "kind": {"Sideways": {}}}]')
    done = subprocess.run(
        [str(scx_layered), "--print-and-exit", f"f:{path}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0


def test_the_agent_accepts_the_pinned_build_as_patched(scx_layered: Path) -> None:
    """temper-agent refuses an scx_layered without our flags; the pinned build has them."""
    check_scheduler(str(scx_layered))
