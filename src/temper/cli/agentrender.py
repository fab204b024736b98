"""How `temper-cli` prints the agent's answers: JSON for tools, short blocks and tables for people.

JSON is the message itself in the proto3 JSON mapping (field names as in agent.proto, enums by
name, 64-bit integers as strings), with every field present even when it holds its default, so
`jq .scheduler.ours` reads `false` rather than nothing. The human forms name tiers as the rest of
Temper does (`high`, not `TIER_HIGH`) and leave out nothing an operator would act on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from temper.api.v1 import agent_pb2 as pb
from temper.api.wire import tier_or_none
from temper.policy.assignments import PodKey
from temper.policy.tiers import TIERS, Tier

SHA_SHOWN = 12


def to_json(message: Message) -> str:
    document = MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return json.dumps(document, indent=2) + "\n"


def status_text(status: pb.Status) -> str:
    lines = [
        f"Node:         {status.node_name or '-'} (temper-agent {status.agent_version or '?'})",
        f"Mode:         {status.mode}",
        f"Reason:       {status.reason or '-'}",
        f"Kernel gate:  {_gate(status.kernel_gate)}",
        f"Scheduler:    {_scheduler(status.scheduler)}",
        f"Config:       {status.config_sha256[:SHA_SHOWN] or 'none running'}",
        f"Linter:       {_lint(status.lint)}",
        "",
        *_columns(("TIER", "PODS"), _tier_rows(status.tiers)),
        "",
        *_assignments(status.assignments),
    ]
    return "\n".join(lines) + "\n"


def assigned_text(pod: PodKey, answer: pb.AssignTierResponse) -> str:
    """`shop/checkout: high (was normal)`."""
    previous = tier_or_none(answer.previous_tier)
    was = f"was {previous.value}" if previous is not None else "previous tier unknown"
    return f"{pod}: {tier_name(answer.assignment.tier)} ({was})\n"


def cleared_text(pod: PodKey, answer: pb.ClearTierResponse) -> str:
    """`shop/checkout: assignment cleared, now normal`."""
    tier = tier_or_none(answer.tier)
    now = f"now {tier.value}" if tier is not None else "the pod is not on this node"
    return f"{pod}: assignment cleared, {now}\n"


def reload_text(answer: pb.ReloadResponse) -> str:
    calls = f"{answer.coalesced} call{'' if answer.coalesced == 1 else 's'}"
    lines = [
        f"Mode:        {answer.mode}",
        f"Reason:      {answer.reason or '-'}",
        f"Config:      {answer.config_sha256[:SHA_SHOWN] or 'none running'}",
        f"enable_seq:  {answer.enable_seq}",
        f"Answered:    {calls} (concurrent reloads share one)",
    ]
    return "\n".join(lines) + "\n"


def progress_text(progress: pb.TraceProgress) -> str:
    """`recording 3/10 s`: whole seconds elapsed of the capture's duration."""
    return f"recording {progress.elapsed_ms // 1000}/{progress.duration_ms / 1000:g} s"


class ProgressLine:
    """Capture progress on a stream: one line redrawn on a terminal, a line per update otherwise.

    A log or a pipe keeps every update readable; a terminal is not scrolled by them.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._redraw = stream.isatty()
        self._line_open = False

    def show(self, progress: pb.TraceProgress) -> None:
        text = progress_text(progress)
        if self._redraw:
            self._stream.write(f"\r{text}")
            self._line_open = True
        else:
            self._stream.write(f"{text}\n")
        self._stream.flush()

    def end(self) -> None:
        """Finish a redrawn line, so what follows starts on its own."""
        if self._line_open:
            self._stream.write("\n")
            self._line_open = False


def capture_text(output: Path, summary: pb.TraceSummary) -> str:
    lines = [
        f"File:       {output} ({size_text(summary.size_bytes)}; on the node: {summary.file})",
        f"Events:     {summary.events} from {summary.threads} threads, {summary.lost_events} lost",
        f"Truncated:  {_truncated(summary.truncated)}",
        "",
        *_wake_to_run(summary.wake_to_run),
    ]
    return "\n".join(lines) + "\n"


def size_text(size_bytes: int) -> str:
    """`812 B`, `64.0 KiB`, `1.5 MiB`."""
    if size_bytes < 1024:
        return f"{size_bytes} B"
    if size_bytes < 1024 * 1024:
        return f"{size_bytes / 1024:.1f} KiB"
    return f"{size_bytes / (1024 * 1024):.1f} MiB"


def tier_name(number: int) -> str:
    """A tier from the wire by name; a number this client does not know stays visible."""
    tier = tier_or_none(number)
    return tier.value if tier is not None else f"tier {number}"


def _gate(gate: pb.KernelGate) -> str:
    if gate.passed:
        return "passed"
    return f"not passed: {gate.reason}" if gate.reason else "not passed"


def _scheduler(scheduler: pb.Scheduler) -> str:
    if not scheduler.state:
        return "no sched_ext in this kernel"
    if not scheduler.ops:
        return f"{scheduler.state}, none loaded, enable_seq {scheduler.enable_seq}"
    owner = "ours" if scheduler.ours else "not ours"
    return f"{scheduler.state}, {scheduler.ops} ({owner}), enable_seq {scheduler.enable_seq}"


def _lint(lint: pb.LintSummary) -> str:
    counts = f"{lint.passed} passed, {lint.failed} failed, {lint.unknown} unknown"
    return f"{counts}; failing: {', '.join(lint.failing)}" if lint.failing else counts


def _tier_rows(counts: Sequence[pb.TierCount]) -> list[tuple[str, str]]:
    """Every tier in rank order, zero where the plan has no pod, then any unknown to us."""
    pods = {tier_or_none(count.tier): count.pods for count in counts}
    rows = [(tier.value, str(pods.get(tier, 0))) for tier in TIERS]
    unknown = [count for count in counts if tier_or_none(count.tier) is None]
    return rows + [(tier_name(count.tier), str(count.pods)) for count in unknown]


def _assignments(assignments: Sequence[pb.Assignment]) -> list[str]:
    if not assignments:
        return ["Assignments:  none"]
    rows = [
        (f"{a.pod.namespace}/{a.pod.name}", tier_name(a.tier))
        for a in sorted(assignments, key=lambda a: (a.pod.namespace, a.pod.name))
    ]
    return ["Assignments:", *(f"  {line}" for line in _columns(("POD", "TIER"), rows))]


def _truncated(truncated: bool) -> str:
    return "yes: the size bound stopped the capture early" if truncated else "no"


def _wake_to_run(rows: Sequence[pb.WakeToRun]) -> list[str]:
    if not rows:
        return ["No wakeups recorded."]
    header = ("TIER", "WAKEUPS", "P50 µs", "P90 µs", "P99 µs", "MAX µs", "NEVER RAN")
    return _columns(
        header,
        [
            (
                tier_name(row.tier),
                str(row.count),
                *(f"{v:.1f}" for v in (row.p50_us, row.p90_us, row.p99_us, row.max_us)),
                str(row.never_ran),
            )
            for row in sorted(rows, key=lambda row: _rank(row.tier))
        ],
    )


def _rank(number: int) -> int:
    tier = tier_or_none(number)
    return tier.rank if tier is not None else len(Tier) + number


def _columns(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
