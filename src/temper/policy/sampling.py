"""Which threads to sample in a round, within a budget of reads per second.

Problem
-------
Reading one thread from `/proc` costs ~10 us of CPU in Python even with kept-open files
(bench/reports/observe-overhead.md), and the whole observation layer must stay near 0.13% of
one core (docs/performance.md#observation-budget). A node has thousands of threads. So reads are
rationed: the threads that matter most are read most often, and the ration is a hard ceiling.

Approach
--------
Rounds run every `critical_interval_s`. In each, a thread is due when its interval has passed
since its last sample: `critical_interval_s` for the critical tier, `other_interval_s` for the
rest. Due threads are taken critical first, then the longest-waiting, until the round's budget
(`budget_per_s` x the round's length) is spent; the rest are deferred and counted. A new thread
gets a phase from its tid, so a thousand threads found at once spread over the interval instead
of all falling due in the same round.

Invariants (tests/unit/test_sampling.py)
----------
- A round never takes more than its budget.
- Critical threads are taken before any other.
- With budget to spare, every thread is read at least once per its interval (plus one round).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from temper.policy.errors import InputError
from temper.policy.tiers import Tier

_PHASE_PRIME = 2_654_435_761  # Knuth's multiplicative hash: tids spread evenly over [0, 1)


@dataclass(frozen=True)
class SamplingSettings:
    # Reads per second at most: ~10 us each, so 200/s is ~0.2% of a core when all are used;
    # enough for 100 critical threads each second and 3,000 others every 30 s.
    budget_per_s: float = 200.0
    # Critical threads are what the product protects; a second is PSI's own resolution too.
    critical_interval_s: float = 1.0
    # Everything else at least this often: enough to see a pod sitting in the wrong place.
    other_interval_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("budget_per_s", "critical_interval_s", "other_interval_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"sampling setting {name} must be a positive number, not {value}")

    def interval_s(self, tier: Tier) -> float:
        return self.critical_interval_s if tier is Tier.CRITICAL else self.other_interval_s


@dataclass(frozen=True)
class Round:
    chosen: tuple[int, ...]  # tids to read now, in order
    deferred: int  # due but over budget


def first_sample_at(tid: int, tier: Tier, found_at: float, settings: SamplingSettings) -> float:
    """When a newly found thread is first due: spread over one interval by its tid."""
    phase = (tid * _PHASE_PRIME % 2**32) / 2**32
    return found_at + phase * settings.interval_s(tier)


def plan_round(
    threads: Mapping[int, tuple[Tier, float]],
    now: float,
    settings: SamplingSettings,
) -> Round:
    """The threads to read now. `threads` maps tid -> (tier, when it is next due)."""
    due = [(tier is not Tier.CRITICAL, at, tid) for tid, (tier, at) in threads.items() if at <= now]
    budget = max(1, int(settings.budget_per_s * settings.critical_interval_s))
    if len(due) > budget:
        due.sort()
    chosen = tuple(tid for _, _, tid in due[:budget])
    return Round(chosen, max(0, len(due) - budget))


def next_due(tier: Tier, sampled_at: float, settings: SamplingSettings) -> float:
    return sampled_at + settings.interval_s(tier)
