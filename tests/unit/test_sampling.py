"""The sampler's rationing: a round keeps to its budget, critical threads first, nobody starves."""

from __future__ import annotations

import collections
import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from temper.policy.errors import InputError
from temper.policy.sampling import (
    Round,
    SamplingSettings,
    first_sample_at,
    next_due,
    plan_round,
)
from temper.policy.tiers import Tier

Threads = dict[int, tuple[Tier, float]]

settings_st = st.builds(
    SamplingSettings,
    budget_per_s=st.floats(0.1, 100.0),
    critical_interval_s=st.floats(0.01, 3.0),
    other_interval_s=st.floats(0.5, 60.0),
)
threads_st = st.dictionaries(
    st.integers(1, 4_000_000),
    st.tuples(st.sampled_from(Tier), st.floats(0.0, 100.0)),
    max_size=300,
)
now_st = st.floats(0.0, 100.0)


def budget(settings: SamplingSettings) -> int:
    return max(1, int(settings.budget_per_s * settings.critical_interval_s))


def due(threads: Threads, now: float) -> set[int]:
    return {tid for tid, (_, at) in threads.items() if at <= now}


def critical(threads: Threads, tid: int) -> bool:
    return threads[tid][0] is Tier.CRITICAL


@given(threads_st, now_st, settings_st)
def test_a_round_never_exceeds_its_budget(
    threads: Threads, now: float, settings: SamplingSettings
) -> None:
    assert len(plan_round(threads, now, settings).chosen) <= budget(settings)


@given(threads_st, now_st, settings_st)
def test_only_due_threads_are_chosen_each_once(
    threads: Threads, now: float, settings: SamplingSettings
) -> None:
    chosen = plan_round(threads, now, settings).chosen
    assert len(set(chosen)) == len(chosen)
    assert set(chosen) <= due(threads, now)


@given(threads_st, now_st, settings_st)
def test_deferred_counts_the_due_threads_left_out(
    threads: Threads, now: float, settings: SamplingSettings
) -> None:
    planned = plan_round(threads, now, settings)
    assert planned.deferred == len(due(threads, now)) - len(planned.chosen)
    if len(due(threads, now)) <= budget(settings):
        assert set(planned.chosen) == due(threads, now)


@given(threads_st, now_st, settings_st)
def test_critical_due_threads_are_taken_before_any_other(
    threads: Threads, now: float, settings: SamplingSettings
) -> None:
    chosen = plan_round(threads, now, settings).chosen
    left_out = due(threads, now) - set(chosen)
    if any(not critical(threads, tid) for tid in chosen):
        assert not any(critical(threads, tid) for tid in left_out)
    if len(due(threads, now)) > budget(settings):  # sorted: critical ones lead the list
        kinds = [critical(threads, tid) for tid in chosen]
        assert kinds == sorted(kinds, reverse=True)


@given(threads_st, now_st, settings_st)
def test_among_the_rest_the_longest_waiting_go_first(
    threads: Threads, now: float, settings: SamplingSettings
) -> None:
    chosen = plan_round(threads, now, settings).chosen
    left_out = due(threads, now) - set(chosen)
    waited = [threads[t][1] for t in chosen if not critical(threads, t)]
    still_waiting = [threads[t][1] for t in left_out if not critical(threads, t)]
    if waited and still_waiting:
        assert max(waited) <= min(still_waiting)


def test_a_tiny_budget_still_reads_one_thread_a_round() -> None:
    settings = SamplingSettings(budget_per_s=0.1, critical_interval_s=1.0)
    planned = plan_round({1: (Tier.LOW, 0.0), 2: (Tier.LOW, 0.0)}, 0.0, settings)
    assert planned == Round(chosen=(1,), deferred=1)


def test_nothing_due_is_an_empty_round() -> None:
    planned = plan_round({1: (Tier.CRITICAL, 5.0)}, 4.9, SamplingSettings())
    assert planned == Round(chosen=(), deferred=0)


# -- a minute of a busy node --------------------------------------------------------------------

CRITICAL_TIDS = range(10_000, 10_100)
OTHER_TIDS = range(20_000, 20_900)
ROUNDS = 60


def simulate(settings: SamplingSettings) -> tuple[dict[int, list[int]], list[Round]]:
    """Sample 100 critical and 900 other threads found at t=0, one round a second."""
    tiers = dict.fromkeys(CRITICAL_TIDS, Tier.CRITICAL) | dict.fromkeys(OTHER_TIDS, Tier.NORMAL)
    threads: Threads = {
        tid: (tier, first_sample_at(tid, tier, 0.0, settings)) for tid, tier in tiers.items()
    }
    sampled: dict[int, list[int]] = collections.defaultdict(list)
    rounds = []
    for now in range(ROUNDS):
        planned = plan_round(threads, float(now), settings)
        rounds.append(planned)
        for tid in planned.chosen:
            sampled[tid].append(now)
            threads[tid] = (tiers[tid], next_due(tiers[tid], float(now), settings))
    return sampled, rounds


def test_every_critical_thread_is_read_every_round_after_its_first() -> None:
    sampled, _ = simulate(SamplingSettings())
    for tid in CRITICAL_TIDS:
        first = sampled[tid][0]
        assert first <= 1
        assert sampled[tid] == list(range(first, ROUNDS))


def test_every_other_thread_is_read_at_least_once_per_interval_plus_a_round() -> None:
    settings = SamplingSettings()
    sampled, _ = simulate(settings)
    limit = settings.other_interval_s + 1
    for tid in OTHER_TIDS:
        times = [0, *sampled[tid], ROUNDS - 1]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert max(gaps) <= limit, (tid, sampled[tid])


def test_a_minute_with_default_settings_defers_nothing_and_keeps_to_budget() -> None:
    settings = SamplingSettings()
    _, rounds = simulate(settings)
    assert all(r.deferred == 0 for r in rounds)
    assert max(len(r.chosen) for r in rounds) <= budget(settings)


def test_new_threads_spread_over_the_interval_instead_of_falling_due_together() -> None:
    settings = SamplingSettings()
    per_round = collections.Counter(
        math.ceil(first_sample_at(tid, Tier.NORMAL, 0.0, settings)) for tid in OTHER_TIDS
    )
    average = len(OTHER_TIDS) / settings.other_interval_s
    assert max(per_round.values()) <= 2 * average
    assert set(per_round) <= set(range(int(settings.other_interval_s) + 1))


def test_the_others_due_in_a_simulated_round_stay_near_the_average() -> None:
    settings = SamplingSettings()
    _, rounds = simulate(settings)
    critical_tids = set(CRITICAL_TIDS)
    others = [sum(tid not in critical_tids for tid in r.chosen) for r in rounds]
    assert max(others) <= 2 * len(OTHER_TIDS) / settings.other_interval_s


@pytest.mark.parametrize("tier", list(Tier))
def test_a_first_sample_falls_within_one_interval_of_discovery(tier: Tier) -> None:
    settings = SamplingSettings()
    for tid in range(1, 5000, 7):
        at = first_sample_at(tid, tier, 100.0, settings)
        assert 100.0 <= at < 100.0 + settings.interval_s(tier)


@pytest.mark.parametrize("name", ["budget_per_s", "critical_interval_s", "other_interval_s"])
@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_invalid_settings_are_refused(name: str, bad: float) -> None:
    with pytest.raises(InputError, match=name):
        SamplingSettings(**{name: bad})
