"""The audit log's bound on refused calls (temper.serve.api.RefusalBudget)."""

from __future__ import annotations

from temper.serve.api import RefusalBudget


def test_a_minute_records_at_most_its_budget_and_counts_the_rest() -> None:
    budget = RefusalBudget(per_minute=3)
    taken = [budget.take(now_s=10.0 + i) for i in range(5)]
    assert taken == [True, True, True, False, False]
    assert budget.suppressed == 2


def test_the_next_minute_records_again() -> None:
    budget = RefusalBudget(per_minute=1)
    assert budget.take(0.0)
    assert not budget.take(59.9)
    assert budget.take(60.0)
    assert budget.suppressed == 1  # kept until a record carries it
