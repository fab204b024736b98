"""Waiting in tests: poll a condition until it holds, or fail naming what never happened.

`wait_until` blocks (a test waiting on a subprocess, a file, an API server); `until` awaits,
so the event loop it polls from keeps running the code under test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    check: Callable[[], T], timeout_s: float, what: str, *, interval_s: float = 0.05
) -> T:
    """Poll `check` until it returns something true, and return that; AssertionError naming
    `what` and the last answer if it does not within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached in {timeout_s:g} s (last: {last!r})")
        time.sleep(interval_s)


async def until(
    check: Callable[[], object], timeout_s: float = 5.0, what: str = "condition"
) -> None:
    """Yield to the event loop until `check()` is true; AssertionError naming `what` if it is
    not within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached in {timeout_s:g} s")
        await asyncio.sleep(0.005)
