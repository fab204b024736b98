"""`Coalescer`: one run at a time, and every caller answered by a run that started after it called.

The fake `work` numbers its runs as they start and waits for the test to release each one, so
every interleaving here is chosen by the test, never by a clock.
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from temper.agent.control import Coalescer

T = TypeVar("T")


class Work:
    """A fake `work` coroutine: run n returns n, once released (at once when not `gated`)."""

    def __init__(self, *, gated: bool = True) -> None:
        self.gated = gated
        self.started = 0  # runs begun
        self.running = 0  # runs in progress now
        self.most_running = 0
        self.cancelled: list[int] = []
        self.failures: dict[int, Exception] = {}  # run number -> what that run raises
        self._release: dict[int, asyncio.Event] = {}
        self._began: dict[int, asyncio.Event] = {}
        self._ended: dict[int, asyncio.Event] = {}

    async def __call__(self) -> int:
        self.started += 1
        run = self.started
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        self._event(self._began, run).set()
        try:
            if self.gated:
                await self._event(self._release, run).wait()
            failure = self.failures.pop(run, None)  # dropped: only the run's callers hold it
            if failure is not None:
                raise failure
            return run
        except asyncio.CancelledError:
            self.cancelled.append(run)
            raise
        finally:
            self.running -= 1
            self._event(self._ended, run).set()

    def release(self, run: int) -> None:
        self._event(self._release, run).set()

    async def began(self, run: int) -> None:
        await self._event(self._began, run).wait()

    async def ended(self, run: int) -> None:
        await self._event(self._ended, run).wait()

    @staticmethod
    def _event(events: dict[int, asyncio.Event], run: int) -> asyncio.Event:
        return events.setdefault(run, asyncio.Event())


async def call(coalescer: Coalescer[int], work: Work) -> tuple[int, int, int]:
    """(runs begun when this call was made, the run that answered it, how many it answered)."""
    seen = work.started
    run, count = await coalescer()
    return seen, run, count


async def settle() -> None:
    """Let every ready task run until it waits on something the test controls."""
    for _ in range(10):
        await asyncio.sleep(0)


def run(scenario: Coroutine[Any, Any, T], *, collect: bool = True) -> T:
    """Run `scenario` on a fresh loop that fails the test on anything asyncio would log;
    `collect` first collects garbage, so an unretrieved exception is logged (it costs time)."""

    async def checked() -> T:
        logged: list[str] = []
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, context: logged.append(context["message"])
        )
        result = await scenario
        if collect:  # a future whose exception nobody retrieved is logged when collected
            gc.collect()
            await settle()
        assert logged == []
        return result

    return asyncio.run(checked())


def test_one_caller_gets_one_run() -> None:
    async def scenario() -> tuple[tuple[int, int], int]:
        work = Work(gated=False)
        answer = await Coalescer(work)()
        return answer, work.started

    assert run(scenario()) == ((1, 1), 1)


def test_sequential_callers_each_get_a_fresh_run() -> None:
    async def scenario() -> list[tuple[int, int]]:
        coalescer = Coalescer(Work(gated=False))
        return [await coalescer() for _ in range(3)]

    assert run(scenario()) == [(1, 1), (2, 1), (3, 1)]


def test_a_hundred_callers_at_once_cost_at_most_two_runs() -> None:
    async def scenario() -> tuple[list[tuple[int, int, int]], Work]:
        work = Work(gated=False)
        coalescer = Coalescer(work)
        answers = await asyncio.gather(*(call(coalescer, work) for _ in range(100)))
        return answers, work

    answers, work = run(scenario())
    counts = {answer_run: count for _, answer_run, count in answers}
    assert 1 <= work.started <= 2
    assert sorted(counts) == list(range(1, work.started + 1))
    assert sum(counts.values()) == 100
    assert Counter(answer_run for _, answer_run, _ in answers) == counts
    assert all(answer_run > seen for seen, answer_run, _ in answers)


def test_callers_during_a_run_are_answered_by_the_next_run() -> None:
    async def scenario() -> tuple[list[tuple[int, int, int]], Work]:
        work = Work()
        coalescer = Coalescer(work)
        first = asyncio.create_task(call(coalescer, work))
        await work.began(1)
        late = [asyncio.create_task(call(coalescer, work)) for _ in range(5)]
        await settle()
        assert work.started == 1  # no second run while the first is in progress
        assert not any(task.done() for task in [first, *late])
        work.release(1)
        await first
        assert not any(task.done() for task in late)  # run 1 began before they called
        await work.began(2)
        work.release(2)
        answers = await asyncio.gather(first, *late)
        return answers, work

    answers, work = run(scenario())
    assert answers == [(0, 1, 1)] + [(1, 2, 5)] * 5
    assert (work.started, work.most_running) == (2, 1)


# Each step: a new caller arrives, the run in progress (if any) finishes, or the loop turns.
steps = st.lists(st.sampled_from(["call", "call", "finish", "turn"]), max_size=40)


@settings(max_examples=200, deadline=None)
@given(steps)
def test_any_interleaving_answers_each_caller_with_a_later_run(schedule: list[str]) -> None:
    async def scenario() -> tuple[list[tuple[int, int, int]], Work]:
        work = Work()
        coalescer = Coalescer(work)
        callers: list[asyncio.Task[tuple[int, int, int]]] = []
        for step in schedule:
            if step == "call":
                callers.append(asyncio.create_task(call(coalescer, work)))
            elif step == "finish" and work.running:
                work.release(work.started)
            await settle()
        while not all(task.done() for task in callers):  # then let every run finish
            work.release(work.started)
            await settle()
        return [task.result() for task in callers], work

    answers, work = run(scenario(), collect=False)  # no run fails here
    assert all(answer_run > seen for seen, answer_run, _ in answers)
    assert work.most_running <= 1
    answered = Counter(answer_run for _, answer_run, _ in answers)
    assert sorted(answered) == list(range(1, work.started + 1))  # no run without a caller
    assert all(count == answered[answer_run] for _, answer_run, count in answers)


def test_an_error_reaches_every_caller_of_its_run_and_the_next_call_runs_afresh() -> None:
    async def scenario() -> tuple[list[object], tuple[int, int]]:
        work = Work(gated=False)
        work.failures[1] = RuntimeError("the scheduler would not load")
        coalescer = Coalescer(work)
        outcomes = await asyncio.gather(*(coalescer() for _ in range(3)), return_exceptions=True)
        return outcomes, await coalescer()

    outcomes, after = run(scenario())
    assert [type(o) for o in outcomes] == [RuntimeError] * 3
    assert all(o is outcomes[0] for o in outcomes)
    assert str(outcomes[0]) == "the scheduler would not load"
    assert after == (2, 1)


def test_a_cancelled_caller_does_not_cancel_the_run_for_the_others() -> None:
    async def scenario() -> tuple[list[tuple[int, int]], Work]:
        work = Work()
        coalescer = Coalescer(work)
        callers = [asyncio.create_task(coalescer()) for _ in range(3)]
        await work.began(1)
        callers[0].cancel()
        await settle()
        assert callers[0].cancelled()
        work.release(1)
        return list(await asyncio.gather(*callers[1:])), work

    answers, work = run(scenario())
    assert answers == [(1, 3), (1, 3)]  # the count is of calls made, the cancelled one too
    assert (work.started, work.cancelled) == (1, [])


@pytest.mark.parametrize("fails", [False, True])
def test_a_run_whose_callers_all_left_is_finished_and_nothing_is_logged(fails: bool) -> None:
    """Its outcome, an exception too, is retrieved: asyncio logs nothing (`run` checks)."""

    async def scenario() -> Work:
        work = Work()
        if fails:
            work.failures[1] = RuntimeError("nobody is listening")
        coalescer = Coalescer(work)
        callers = [asyncio.create_task(coalescer()) for _ in range(2)]
        await work.began(1)
        for caller in callers:
            caller.cancel()
        await settle()
        work.release(1)
        await work.ended(1)
        await settle()
        assert all(caller.cancelled() for caller in callers)
        return work

    work = run(scenario())
    assert (work.started, work.cancelled) == (1, [])


def test_cancel_stops_the_runner_and_a_later_call_runs_afresh() -> None:
    async def scenario() -> tuple[Work, tuple[int, int]]:
        work = Work()
        coalescer = Coalescer(work)
        stranded = asyncio.create_task(coalescer())
        await work.began(1)
        coalescer.cancel()
        await work.ended(1)
        assert work.cancelled == [1]
        # Its run was cancelled under it: the caller hears so, rather than waiting forever.
        with pytest.raises(asyncio.CancelledError):
            await stranded
        work.release(2)
        return work, await coalescer()

    work, after = run(scenario())
    assert after == (2, 1)
    assert work.cancelled == [1]


def test_cancel_without_a_run_does_nothing() -> None:
    async def scenario() -> tuple[int, int]:
        coalescer = Coalescer(Work(gated=False))
        coalescer.cancel()
        answer = await coalescer()
        coalescer.cancel()  # the runner is done: nothing to stop
        return answer

    assert run(scenario()) == (1, 1)
