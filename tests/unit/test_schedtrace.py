"""Scheduler trace text: the line parser, wake-to-run per tier, and the capture request bounds."""

from __future__ import annotations

import math

import pytest

from temper.policy.errors import TraceRequestError
from temper.policy.schedtrace import (
    MAX_BYTES,
    MAX_SECONDS,
    SchedEvent,
    WakeToRun,
    check_trace_request,
    parse_sched_line,
    parse_sched_trace,
    summarize_wake_to_run,
)

# As printed by 6.18 (five latency flags, the last migrate-disable), copied from a real capture.
WAKEUP_5 = (
    "          <idle>-0       [001] dNh4. 30784.140745: sched_wakeup: "
    "comm=python3 pid=30416 prio=120 target_cpu=001"
)
SWITCH_5 = (
    "           <...>-21      [001] d..2. 30784.141023: sched_switch: prev_comm=migration/1 "
    "prev_pid=21 prev_prio=0 prev_state=S ==> next_comm=python3 next_pid=30416 next_prio=120"
)
# As printed by 4.x/5.x kernels before migrate-disable (four flags), with `success=` in wakeups.
WAKEUP_4 = (
    "     kworker/0:1-12    [000] d...  5075.958079: sched_wakeup: "
    "comm=trace-cmd pid=5678 prio=120 success=1 target_cpu=000"
)
SWITCH_4 = (
    "            bash-1234  [002] d..3  5075.958100: sched_switch: prev_comm=bash prev_pid=1234 "
    "prev_prio=120 prev_state=R+ ==> next_comm=trace-cmd next_pid=5678 next_prio=120"
)
HEADER = [
    "# tracer: nop",
    "#",
    "# entries-in-buffer/entries-written: 4/4   #P:2",
    "#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION",
    "#              | |         |   |||||     |         |",
]


def wakeup(ts: str, pid: int, cpu: int = 0, *, new: bool = False) -> str:
    event = "sched_wakeup_new" if new else "sched_wakeup"
    return (
        f"          <idle>-0       [{cpu:03d}] dNh4. {ts}: {event}: "
        f"comm=w{pid} pid={pid} prio=120 target_cpu={cpu:03d}"
    )


def switch_to(ts: str, pid: int, cpu: int = 0) -> str:
    return (
        f"          <idle>-0       [{cpu:03d}] d..2. {ts}: sched_switch: prev_comm=swapper/{cpu} "
        f"prev_pid=0 prev_prio=120 prev_state=R ==> next_comm=w{pid} next_pid={pid} "
        "next_prio=120"
    )


def switch_from(ts: str, pid: int, cpu: int = 0) -> str:
    return (
        f"            w{pid}-{pid}    [{cpu:03d}] d..2. {ts}: sched_switch: prev_comm=w{pid} "
        f"prev_pid={pid} prev_prio=120 prev_state=S ==> next_comm=swapper/{cpu} next_pid=0 "
        "next_prio=120"
    )


class TestParseLine:
    def test_five_flag_wakeup(self) -> None:
        assert parse_sched_line(WAKEUP_5) == SchedEvent("sched_wakeup", 30784_140745_000, 1, 30416)

    def test_five_flag_switch_names_the_thread_switched_in(self) -> None:
        assert parse_sched_line(SWITCH_5) == SchedEvent("sched_switch", 30784_141023_000, 1, 30416)

    def test_four_flag_lines_with_success_field(self) -> None:
        assert parse_sched_line(WAKEUP_4) == SchedEvent("sched_wakeup", 5075_958079_000, 0, 5678)
        assert parse_sched_line(SWITCH_4) == SchedEvent("sched_switch", 5075_958100_000, 2, 5678)

    def test_no_flags_column(self) -> None:
        line = (
            "            bash-1234  [002] 5075.958100: sched_wakeup_new: "
            "comm=sh pid=9 prio=120 target_cpu=002"
        )
        assert parse_sched_line(line) == SchedEvent("sched_wakeup_new", 5075_958100_000, 2, 9)

    def test_tgid_column(self) -> None:
        line = WAKEUP_5.replace("-0       [001]", "-0       (    0) [001]")
        assert parse_sched_line(line) == SchedEvent("sched_wakeup", 30784_140745_000, 1, 30416)
        line = WAKEUP_5.replace("-0       [001]", "-0       (-------) [001]")
        assert parse_sched_line(line) is not None

    def test_comm_with_dashes_digits_and_spaces(self) -> None:
        line = (
            "   Web Content-7-77   [003] d..2. 10.000001: sched_switch: prev_comm=Web Content-7 "
            "prev_pid=77 prev_prio=120 prev_state=S ==> next_comm=a b next_pid=88 next_prio=120"
        )
        assert parse_sched_line(line) == SchedEvent("sched_switch", 10_000_001_000, 3, 88)

    def test_nanosecond_timestamps(self) -> None:
        line = WAKEUP_5.replace("30784.140745", "30784.140745123")
        event = parse_sched_line(line)
        assert event is not None
        assert event.ts_ns == 30784_140745_123

    @pytest.mark.parametrize(
        "line",
        [
            "# tracer: nop",
            "",
            "CPU:1 [LOST 1210 EVENTS]",
            "  <idle>-0 [000] d..2. 1.000000: sched_waking: comm=a pid=1 prio=120 target_cpu=000",
            "  <idle>-0 [000] d..2. 1.000000: sched_switch: prev_comm=a prev_pid=1",
            "  <idle>-0 [000] d..2. 1234: sched_wakeup: comm=a pid=1 prio=120 target_cpu=000",
            "garbage",
        ],
    )
    def test_other_lines_are_not_events(self, line: str) -> None:
        assert parse_sched_line(line) is None


def test_trace_counts_skipped_lines_but_not_comments_or_blanks() -> None:
    lines = [*HEADER, "", WAKEUP_4, "CPU:1 [LOST 3 EVENTS]", "nonsense", SWITCH_4]
    trace = parse_sched_trace(lines)
    assert [event.tid for event in trace.events] == [5678, 5678]
    assert trace.skipped == 2


class TestWakeToRun:
    def test_one_tier_delay_in_microseconds(self) -> None:
        lines = [*HEADER, WAKEUP_4, SWITCH_4]
        assert summarize_wake_to_run(lines, {5678: "lc"}, ["lc"]) == (
            WakeToRun("lc", 1, 21.0, 21.0, 21.0, 21.0, 0),
        )

    def test_switch_on_another_cpu_matches(self) -> None:
        lines = [wakeup("1.000000", 7, cpu=0), switch_to("1.000250", 7, cpu=3)]
        (row,) = summarize_wake_to_run(lines, {7: "lc"}, ["lc"])
        assert (row.count, row.max_us) == (1, 250.0)

    def test_wakeup_new_counts_like_wakeup(self) -> None:
        lines = [wakeup("1.000000", 7, new=True), switch_to("1.000010", 7)]
        assert summarize_wake_to_run(lines, {7: "lc"}, ["lc"])[0].count == 1

    def test_nearest_rank_percentiles(self) -> None:
        lines: list[str] = []
        for i in range(1, 101):  # delays of 1..100 us, one wakeup per millisecond
            base = 10 + i / 1000
            lines += [wakeup(f"{base:.6f}", 7), switch_to(f"{base + i / 1e6:.6f}", 7)]
        assert summarize_wake_to_run(lines, {7: "lc"}, ["lc"]) == (
            WakeToRun("lc", 100, 50.0, 90.0, 99.0, 100.0, 0),
        )

    def test_percentiles_of_few_samples_are_samples(self) -> None:
        lines = [wakeup("1.000000", 7), switch_to("1.000003", 7)]
        lines += [wakeup("1.001000", 7), switch_to("1.001010", 7)]
        (row,) = summarize_wake_to_run(lines, {7: "lc"}, ["lc"])
        assert (row.p50_us, row.p90_us, row.p99_us, row.max_us) == (3.0, 10.0, 10.0, 10.0)

    def test_wakeup_without_run_is_unmatched(self) -> None:
        lines = [wakeup("1.000000", 7), switch_to("1.000005", 7), wakeup("1.001000", 7)]
        assert summarize_wake_to_run(lines, {7: "lc"}, ["lc"])[0].unmatched == 1

    def test_second_wakeup_before_a_run_leaves_the_first_unmatched(self) -> None:
        lines = [wakeup("1.000000", 7), wakeup("1.000100", 7), switch_to("1.000105", 7)]
        (row,) = summarize_wake_to_run(lines, {7: "lc"}, ["lc"])
        assert (row.count, row.max_us, row.unmatched) == (1, 5.0, 1)

    def test_switch_without_wakeup_is_ignored(self) -> None:
        lines = [switch_to("1.000000", 7), switch_from("1.000100", 7), switch_to("1.000200", 7)]
        assert summarize_wake_to_run(lines, {7: "lc"}, ["lc"])[0].count == 0

    def test_unmapped_tids_are_ignored(self) -> None:
        lines = [wakeup("1.000000", 8), switch_to("1.000900", 8), wakeup("1.001000", 9)]
        assert summarize_wake_to_run(lines, {7: "lc"}, ["lc"]) == (
            WakeToRun("lc", 0, None, None, None, None, 0),
        )

    def test_rows_follow_the_given_tier_order_and_tiers_not_listed_are_dropped(self) -> None:
        lines = [wakeup("1.000000", 7), switch_to("1.000002", 7)]
        lines += [wakeup("1.000000", 8, cpu=1), switch_to("1.000040", 8, cpu=1)]
        lines += [wakeup("1.000000", 9, cpu=2), switch_to("1.000900", 9, cpu=2)]
        rows = summarize_wake_to_run(
            lines, {7: "critical", 8: "batch", 9: "debug"}, ["batch", "best-effort", "critical"]
        )
        assert [(row.tier, row.count, row.max_us) for row in rows] == [
            ("batch", 1, 40.0),
            ("best-effort", 0, None),
            ("critical", 1, 2.0),
        ]

    def test_lines_out_of_time_order_are_matched_in_time_order(self) -> None:
        lines = [switch_to("1.000030", 7), wakeup("1.000000", 7)]
        assert summarize_wake_to_run(lines, {7: "lc"}, ["lc"])[0].max_us == 30.0

    def test_accepts_a_generator(self) -> None:
        lines = (line for line in [WAKEUP_5, SWITCH_5])
        assert summarize_wake_to_run(lines, {30416: "lc"}, ["lc"])[0].max_us == 278.0


class TestCheckTraceRequest:
    def test_within_bounds(self) -> None:
        assert check_trace_request(5.0, 1024) == (5.0, 1024)
        assert check_trace_request(MAX_SECONDS, MAX_BYTES) == (MAX_SECONDS, MAX_BYTES)

    def test_no_max_bytes_means_the_bound(self) -> None:
        assert check_trace_request(1.0, None) == (1.0, MAX_BYTES)

    @pytest.mark.parametrize("seconds", [0.0, -1.0, math.nan, math.inf, MAX_SECONDS + 0.001])
    def test_seconds_out_of_bounds(self, seconds: float) -> None:
        with pytest.raises(TraceRequestError, match=r"seconds .* at most 60"):
            check_trace_request(seconds, None)

    @pytest.mark.parametrize("max_bytes", [0, -1, MAX_BYTES + 1])
    def test_max_bytes_out_of_bounds(self, max_bytes: int) -> None:
        with pytest.raises(TraceRequestError, match=rf"max_bytes .* {MAX_BYTES} \(64 MiB\)"):
            check_trace_request(1.0, max_bytes)
