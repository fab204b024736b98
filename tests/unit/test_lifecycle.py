"""The scheduler lifecycle decisions: the A and B rows of docs/reliability.md that are decisions."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from temper.policy.lifecycle import (
    Action,
    ChildExit,
    Lifecycle,
    LifecycleSettings,
    Mode,
    Observation,
    classify_exit,
)

OURS = "layered_1.1.2_x86_64-unknown-linux-gnu"
READY = Observation(now_s=100.0, wanted_config="cfg-a")
RUNNING = replace(
    READY, child_running=True, child_config="cfg-a", kernel_state="enabled", kernel_ops=OURS
)


def test_a_ready_node_loads_the_wanted_config() -> None:
    decision = Lifecycle().step(READY)
    assert (decision.mode, decision.action) == (Mode.STOCK, Action.START)


def test_a_loaded_scheduler_of_ours_is_enforcing() -> None:
    decision = Lifecycle().step(RUNNING)
    assert (decision.mode, decision.action) == (Mode.ENFORCING, None)


def test_a1_a13_gate_failure_refuses_and_stops_ours() -> None:
    reasons = ("kernel 6.1 is older than 6.12", "isolcpus= on the kernel command line")
    idle = Lifecycle().step(replace(READY, gate_reasons=reasons))
    assert (idle.mode, idle.action) == (Mode.REFUSED, None)
    assert "isolcpus" in idle.reason
    assert "6.12" in idle.reason
    running = Lifecycle().step(replace(RUNNING, gate_reasons=reasons))
    assert running.action is Action.STOP


def test_a8_a_foreign_scheduler_is_never_fought() -> None:
    decision = Lifecycle().step(replace(READY, kernel_state="enabled", kernel_ops="lavd_1.0.3"))
    assert (decision.mode, decision.action) == (Mode.FOREIGN, None)
    assert "lavd" in decision.reason


def test_a8_another_scx_layered_without_our_child_is_foreign_too() -> None:
    decision = Lifecycle().step(replace(READY, kernel_state="enabled", kernel_ops=OURS))
    assert (decision.mode, decision.action) == (Mode.FOREIGN, None)


def test_kill_switch_on_or_unknown_means_safe_mode() -> None:
    for switch, word in ((True, "on"), (None, "not known")):
        decision = Lifecycle().step(replace(RUNNING, kill_switch=switch))
        assert (decision.mode, decision.action) == (Mode.SAFE_MODE, Action.STOP)
        assert word in decision.reason


def test_kill_switch_reason_names_its_source() -> None:
    obs = replace(RUNNING, kill_switch=True, kill_switch_reason="safe mode set on the Node")
    assert Lifecycle().step(obs).reason == "safe mode set on the Node"


def test_a9_waits_while_the_kernel_is_mid_transition() -> None:
    for state in ("disabling", "enabling"):
        decision = Lifecycle().step(replace(READY, kernel_state=state))
        assert decision.action is None
        assert state in decision.reason


def test_b6_identical_config_never_restarts() -> None:
    decision = Lifecycle().step(replace(RUNNING, misplaces_pods=True))
    assert decision.action is None


def test_a_new_config_restarts_only_when_pods_would_be_misplaced() -> None:
    changed = replace(RUNNING, wanted_config="cfg-b")
    assert Lifecycle().step(changed).action is None
    assert Lifecycle().step(replace(changed, misplaces_pods=True)).action is Action.REPLACE


def test_b7_an_invalid_config_keeps_the_running_scheduler() -> None:
    decision = Lifecycle().step(replace(RUNNING, config_problems=("17 layers",)))
    assert (decision.mode, decision.action) == (Mode.ENFORCING, None)
    assert "17 layers" in decision.reason
    idle = Lifecycle().step(replace(READY, config_problems=("17 layers",)))
    assert (idle.mode, idle.action) == (Mode.STOCK, None)


def test_nothing_to_enforce_means_stock() -> None:
    decision = Lifecycle().step(replace(RUNNING, wanted_config=None))
    assert (decision.mode, decision.action) == (Mode.STOCK, Action.STOP)
    assert "Temper tier" in decision.reason


def test_a10_repeated_failures_park_the_node_then_age_out() -> None:
    life = Lifecycle(LifecycleSettings(max_failures=3, failure_window_s=300))
    crash = ChildExit(returncode=1, output_tail="EXIT: runnable task stall")
    now = 0.0
    for _ in range(3):
        assert life.step(replace(READY, now_s=now)).action is Action.START
        now += 10
        life.step(replace(READY, now_s=now, child_exit=crash))
    parked = life.step(replace(READY, now_s=now))
    assert (parked.mode, parked.action) == (Mode.PARKED, None)
    assert "stall" in parked.reason
    later = life.step(replace(READY, now_s=now + 300))
    assert later.action is Action.START


def test_a6_sysrq_starts_a_cool_down() -> None:
    life = Lifecycle(LifecycleSettings(sysrq_cooldown_s=600))
    exit_ = ChildExit(returncode=1, output_tail="EXIT: disabled by sysrq-S")
    cooling = life.step(replace(READY, now_s=0, child_exit=exit_))
    assert (cooling.mode, cooling.action) == (Mode.STOCK, None)
    assert "SysRq" in cooling.reason
    assert life.failures == []
    assert life.step(replace(READY, now_s=601)).action is Action.START


def test_a7_a_detached_child_gets_time_to_reattach_after_hotplug() -> None:
    life = Lifecycle(LifecycleSettings(reattach_grace_s=60))
    detached = replace(RUNNING, kernel_state="disabled", kernel_ops=None)
    waiting = life.step(detached)
    assert (waiting.mode, waiting.action) == (Mode.STOCK, None)
    assert "re-attach" in waiting.reason
    back = life.step(replace(RUNNING, now_s=RUNNING.now_s + 5))
    assert (back.mode, back.action) == (Mode.ENFORCING, None)
    assert life.failures == []


def test_a11_a_child_that_stays_detached_is_stopped_as_a_failure() -> None:
    life = Lifecycle(LifecycleSettings(reattach_grace_s=60))
    detached = replace(RUNNING, kernel_state="disabled", kernel_ops=None)
    assert life.step(detached).action is None
    stopped = life.step(replace(detached, now_s=detached.now_s + 61))
    assert stopped.action is Action.STOP
    assert life.failures == [detached.now_s + 61]


def test_requested_stops_are_not_failures() -> None:
    life = Lifecycle()
    life.step(replace(READY, child_exit=ChildExit(returncode=0, requested=True)))
    assert life.failures == []


def test_exit_classification() -> None:
    assert classify_exit(ChildExit(1, "EXIT: runnable task stall (watchdog)")) == "stall"
    assert classify_exit(ChildExit(1, "Error: scx_bpf_error")) == "bpf_error"
    assert classify_exit(ChildExit(1, "libbpf: failed to load object")) == "load_failed"
    assert classify_exit(ChildExit(-9, "")) == "killed by signal 9"
    assert classify_exit(ChildExit(3, "")) == "exited with code 3"


observations = st.builds(
    Observation,
    now_s=st.floats(0, 10_000),
    gate_reasons=st.sampled_from([(), ("no sched_ext",)]),
    kill_switch=st.sampled_from([False, True, None]),
    kernel_state=st.sampled_from(["disabled", "enabled", "enabling", "disabling", "absent"]),
    kernel_ops=st.sampled_from([None, OURS, "lavd_1.0"]),
    child_running=st.booleans(),
    child_config=st.sampled_from([None, "cfg-a", "cfg-b"]),
    child_exit=st.sampled_from([None, ChildExit(1, "stall"), ChildExit(0, "", requested=True)]),
    wanted_config=st.sampled_from([None, "cfg-a", "cfg-b"]),
    config_problems=st.sampled_from([(), ("bad",)]),
    misplaces_pods=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(observations, min_size=1, max_size=30))
def test_safety_invariants_hold_for_any_sequence(seq: list[Observation]) -> None:
    life = Lifecycle()
    seq = sorted(seq, key=lambda o: o.now_s)
    for obs in seq:
        decision = life.step(obs)
        if decision.action in (Action.START, Action.REPLACE):
            assert not obs.gate_reasons
            assert obs.kill_switch is False
            assert not obs.foreign
            assert obs.kernel_state not in ("enabling", "disabling")
            assert obs.wanted_config is not None
            assert not obs.config_problems
        if decision.action is Action.START:
            assert not obs.child_running
        if decision.action in (Action.STOP, Action.REPLACE):
            assert obs.child_running
        if decision.action is Action.REPLACE:
            assert obs.ours
        if obs.foreign and not obs.child_running:
            assert decision.action is None


# -- operator reloads (temper-cli reload) ---------------------------------------------------------


def test_a_reload_replaces_our_scheduler_even_on_the_same_config() -> None:
    assert RUNNING.child_config == RUNNING.wanted_config
    decision = Lifecycle().step(replace(RUNNING, reload_requested=True))
    assert (decision.mode, decision.action) == (Mode.ENFORCING, Action.REPLACE)
    assert "reload requested" in decision.reason
    unasked = Lifecycle().step(RUNNING)
    assert (unasked.mode, unasked.action) == (Mode.ENFORCING, None)


def test_a_reload_with_no_child_running_starts_as_before() -> None:
    decision = Lifecycle().step(replace(READY, reload_requested=True))
    assert decision == Lifecycle().step(READY)
    assert (decision.mode, decision.action) == (Mode.STOCK, Action.START)


def _parked() -> Lifecycle:
    return Lifecycle(LifecycleSettings(max_failures=3), failures=[90.0, 95.0, 99.0])


def _cooling() -> Lifecycle:
    return Lifecycle(cooldown_until_s=RUNNING.now_s + 10)


# (observation, memory) where a reload must load nothing: it decides as if nobody had asked.
NO_RELOAD = {
    "refused, idle": (replace(READY, gate_reasons=("no sched_ext",)), Lifecycle),
    "refused, running": (replace(RUNNING, gate_reasons=("no sched_ext",)), Lifecycle),
    "safe mode, idle": (replace(READY, kill_switch=True), Lifecycle),
    "safe mode, running": (replace(RUNNING, kill_switch=True), Lifecycle),
    "kill switch unknown": (replace(RUNNING, kill_switch=None), Lifecycle),
    "foreign": (replace(READY, kernel_state="enabled", kernel_ops="lavd_1.0.3"), Lifecycle),
    "mid-transition": (replace(RUNNING, kernel_state="enabling"), Lifecycle),
    "parked": (RUNNING, _parked),
    "sysrq cool-down": (RUNNING, _cooling),
    "config rejected": (replace(RUNNING, config_problems=("17 layers",)), Lifecycle),
    "nothing to enforce": (replace(RUNNING, wanted_config=None), Lifecycle),
    "detached": (replace(RUNNING, kernel_state="disabled", kernel_ops=None), Lifecycle),
}


def test_a_reload_loads_nothing_when_the_node_must_not_enforce() -> None:
    for situation, (obs, memory) in NO_RELOAD.items():
        decision = memory().step(replace(obs, reload_requested=True))
        assert decision == memory().step(obs), situation
        assert decision.action in (None, Action.STOP), situation


# Half of them with our scheduler loaded, where a reload has something to replace.
reload_moments = observations | observations.map(
    lambda o: replace(o, child_running=True, kernel_state="enabled", kernel_ops=OURS)
)


@settings(max_examples=200, deadline=None)
@given(st.lists(observations, max_size=10), reload_moments)
def test_a_reload_only_turns_a_quiet_enforcing_step_into_a_replace(
    history: list[Observation], last: Observation
) -> None:
    plain, reloading = Lifecycle(), Lifecycle()
    for obs in sorted(history, key=lambda o: o.now_s):
        assert plain.step(obs) == reloading.step(obs)
    last = replace(last, now_s=max([o.now_s for o in history], default=0.0) + last.now_s)
    unasked = plain.step(last)
    asked = reloading.step(replace(last, reload_requested=True))
    quiet = (unasked.mode, unasked.action) == (Mode.ENFORCING, None)
    replaces = quiet and last.ours and not last.config_problems
    assert (asked != unasked) == replaces
    if replaces:
        assert (asked.mode, asked.action) == (Mode.ENFORCING, Action.REPLACE)
        assert last.wanted_config is not None
