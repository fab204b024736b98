"""`POST /trace` (temper.agent.tracing): reliability row F7, trace capture abuse.

Requests beyond the bounds, unknown tiers, callers off the node, a second capture while one
runs, and names that try to choose the output path are each answered with the right status,
and nothing is captured or written where the caller asked. The capture itself is a fake here
(the real one is tested against tracefs in test_tracefs.py and end to end in
test_observe_host.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from temper.agent.tracing import TraceService
from temper.host.errors import TraceBusy
from temper.host.tracefs import TraceCapture
from temper.policy.tiers import Tier
from temper.serve.http import Request, Response

TRACE_TEXT = (
    "# tracer: nop\n"
    "#\n"
    "  w-1  [000] d..2. 100.000000: sched_wakeup: comm=w pid=7 prio=120 target_cpu=000\n"
    "  <idle>-0 [000] d..2. 100.000050: sched_switch: prev_comm=swapper/0 prev_pid=0 "
    "prev_prio=120 prev_state=R ==> next_comm=w next_pid=7 next_prio=120\n"
)


class Threads:
    """The observer's side: which threads are in which tier."""

    def __init__(self, tiers: dict[int, Tier]) -> None:
        self.tiers = tiers

    def tier_of_threads(self, tiers: frozenset[Tier] | None = None) -> dict[int, Tier]:
        return {t: tier for t, tier in self.tiers.items() if tiers is None or tier in tiers}


class FakeCapture:
    """Records each call and writes a small trace where the service says."""

    def __init__(self, busy: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.busy = busy
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, tracefs: Path, out: Path, **options: Any) -> TraceCapture:
        self.calls.append({"tracefs": tracefs, "out": out, **options})
        if self.busy:
            raise TraceBusy(tracefs / "instances" / "temper")
        self.gate.wait(10)
        out.write_text(TRACE_TEXT)
        return TraceCapture(out, len(TRACE_TEXT), 2, False, 0, options["seconds"])


def service(tmp_path: Path, capture: FakeCapture, keep: int = 5) -> TraceService:
    threads = Threads({7: Tier.CRITICAL, 8: Tier.LOW})
    return TraceService(tmp_path / "tracefs", tmp_path / "traces", threads, keep, capture)  # type: ignore[arg-type]


def post(
    trace: TraceService, query: str, *, loopback: bool = True, method: str = "POST"
) -> Response:
    params: dict[str, list[str]] = {}
    for part in filter(None, query.split("&")):
        name, _, value = part.partition("=")
        params.setdefault(name, []).append(value)
    return asyncio.run(trace(Request(method, "/trace", params, loopback)))


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("seconds=61", "seconds"),
        ("seconds=0", "seconds"),
        ("seconds=-5", "seconds"),
        ("seconds=nan", "seconds"),
        ("seconds=inf", "seconds"),
        ("seconds=1e308", "seconds"),
        ("seconds=five", "seconds"),
        ("max_mb=65", "max_bytes"),
        ("max_mb=0", "max_bytes"),
        ("max_mb=100000000", "max_bytes"),
        ("tiers=critical,platinum", "tiers"),
        ("tiers=../../etc", "tiers"),
    ],
)
def test_requests_beyond_the_bounds_are_refused_and_capture_nothing(
    tmp_path: Path, query: str, field: str
) -> None:
    capture = FakeCapture()
    answer = post(service(tmp_path, capture), query)
    assert answer.status == 400
    assert field in answer.body.decode()
    assert capture.calls == []
    assert not (tmp_path / "traces").exists()


def test_the_output_path_is_the_agents_choice_whatever_the_caller_sends(tmp_path: Path) -> None:
    capture = FakeCapture()
    query = "tiers=critical&seconds=1&path=/etc/passwd&out=../../escape&name=..%2F..%2Fx"
    answer = post(service(tmp_path, capture), query)
    assert answer.status == 200
    written = Path(json.loads(answer.body)["path"])
    assert written.parent == tmp_path / "traces"
    assert written.name.startswith("sched-")
    assert written.name.endswith("-critical.trace.txt")
    assert [c["out"] for c in capture.calls] == [written]
    assert not (tmp_path.parent / "escape").exists()


def test_a_capture_asks_for_the_chosen_tiers_threads_within_the_bounds(tmp_path: Path) -> None:
    capture = FakeCapture()
    answer = post(service(tmp_path, capture), "tiers=critical&seconds=2.5&max_mb=1")
    assert answer.status == 200
    [call] = capture.calls
    assert (call["seconds"], call["max_bytes"], dict(call["pids"])) == (
        2.5,
        1024 * 1024,
        {7: Tier.CRITICAL},
    )
    body = json.loads(answer.body)
    assert body["tiers"] == ["critical"]
    assert body["wake_to_run"][0]["count"] == 1
    assert body["wake_to_run"][0]["p50_us"] == 50.0


def test_defaults_are_five_seconds_and_64_mib(tmp_path: Path) -> None:
    capture = FakeCapture()
    assert post(service(tmp_path, capture), "").status == 200
    assert (capture.calls[0]["seconds"], capture.calls[0]["max_bytes"]) == (5.0, 64 << 20)


def test_callers_off_the_node_and_other_methods_are_refused(tmp_path: Path) -> None:
    capture = FakeCapture()
    trace = service(tmp_path, capture)
    assert post(trace, "tiers=critical", loopback=False).status == 403
    assert post(trace, "tiers=critical", method="GET").status == 405
    assert capture.calls == []


def test_a_second_capture_while_one_runs_is_a_conflict(tmp_path: Path) -> None:
    answer = post(service(tmp_path, FakeCapture(busy=True)), "tiers=critical")
    assert answer.status == 409
    assert "already running" in answer.body.decode() or "busy" in answer.body.decode().lower()


def test_no_threads_in_the_tiers_is_a_conflict_not_a_whole_node_trace(tmp_path: Path) -> None:
    capture = FakeCapture()
    answer = post(service(tmp_path, capture), "tiers=background")
    assert answer.status == 409
    assert capture.calls == []


def test_only_the_newest_traces_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    capture = FakeCapture()
    trace = service(tmp_path, capture, keep=2)
    stamps = iter(f"20261128T0000{n:02d}Z" for n in range(10))
    monkeypatch.setattr("temper.agent.tracing.time.strftime", lambda *_: next(stamps))
    for _ in range(4):
        assert post(trace, "tiers=critical&seconds=1").status == 200
    kept = sorted(p.name for p in (tmp_path / "traces").iterdir())
    assert len(kept) == 2
    assert kept[-1].startswith("sched-20261128T000003Z")
