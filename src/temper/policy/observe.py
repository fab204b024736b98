"""What observation sees, as immutable values: one snapshot per round, served as it is.

The agent's observer (`temper.agent.observer`) samples threads, reads pressure and runs the
linter; each round ends in one `Snapshot`. `/metrics` and `/observe` (`temper.serve`) only read
the newest snapshot, so a scrape never touches the host and never waits on the control loop, and
every reader of one round sees the same numbers.

Units: times in seconds unless a name says otherwise; CPU shares in percent of one CPU; PSI
averages in percent, as the kernel prints them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from temper.policy.machine import MachineShape
from temper.policy.tiers import Tier


class ThreadStat(NamedTuple):
    """One read of one thread: `/proc/<tid>/stat` and `/proc/<tid>/schedstat`. A named tuple,
    not a dataclass: thousands are made a second, and a tuple is made in a fifth of the time."""

    tid: int
    start_ticks: int  # with tid, the thread's identity: a reused tid has a new start time
    comm: str
    last_cpu: int  # the CPU it last ran on
    run_ns: int  # time on a CPU, since it started
    wait_ns: int  # time runnable but waiting on a run queue, since it started
    running: bool = False  # state R when read: on a CPU (last_cpu is where) or about to be

    @property
    def key(self) -> tuple[int, int]:
        return (self.tid, self.start_ticks)


@dataclass(frozen=True)
class Pressure:
    """A PSI file (`/proc/pressure/cpu`, a cgroup's `cpu.pressure`): the `some` line, and the
    `full` line where the kernel has one."""

    some_avg10: float
    some_avg60: float
    some_total_us: int
    full_avg10: float | None = None
    full_total_us: int | None = None


def parse_pressure(text: str) -> Pressure:
    """Parse PSI text; ValueError when the `some` line is missing or malformed."""
    lines: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        lines[kind] = dict(part.split("=", 1) for part in rest.split() if "=" in part)
    some, full = lines.get("some"), lines.get("full")
    if some is None:
        raise ValueError("no 'some' line")
    try:
        return Pressure(
            float(some["avg10"]),
            float(some["avg60"]),
            int(some["total"]),
            float(full["avg10"]) if full else None,
            int(full["total"]) if full else None,
        )
    except KeyError as exc:
        raise ValueError(f"a PSI line without {exc.args[0]}") from exc


@dataclass(frozen=True)
class ThreadView:
    """A sampled thread as `/observe` shows it."""

    tid: int
    comm: str
    pod: str  # namespace/name
    tier: Tier
    last_cpu: int
    cpu_pct: float  # of one CPU, between its last two samples
    wait_pct: float  # time waiting on a run queue, percent of the same interval
    in_layer: bool | None  # last CPU among its layer's CPUs; None: no layer CPUs to compare


@dataclass(frozen=True)
class TierStats:
    """Per-tier counters since the agent started, from sampled threads only."""

    tier: Tier
    pods: int = 0
    threads: int = 0  # threads known now (last discovery)
    samples: int = 0
    run_s: float = 0.0  # on-CPU time seen between consecutive samples
    wait_s: float = 0.0  # run-queue wait seen between consecutive samples
    outside_layer: int = 0  # samples whose last CPU was outside the layer's CPUs
    smt_shared: int = 0  # samples of this tier beside a critical thread on one core


@dataclass(frozen=True)
class LayerView:
    """A layer of the running config with scx_layered's statistics for it."""

    name: str
    tier: Tier | None
    kind: str
    tasks: int
    util_pct: float  # 100 = one CPU
    cpus: tuple[int, ...]  # the CPUs the layer owns now
    max_cpus: int | None  # its ceiling in the config; None: no ceiling


class Verdict(enum.Enum):
    PASS = "pass"  # checked, nothing wrong
    FAIL = "fail"  # at least one finding
    UNKNOWN = "unknown"  # could not be checked on this node now (says why)


@dataclass(frozen=True)
class RuleResult:
    """One linter rule's verdict with its evidence and how to fix it."""

    rule: str
    verdict: Verdict
    summary: str
    evidence: tuple[str, ...] = ()
    hint: str = ""


@dataclass(frozen=True)
class SamplerStats:
    """The sampler's own counters and settings, so a reader can judge coverage and cost."""

    budget_per_s: float
    critical_interval_s: float
    other_interval_s: float
    samples: int = 0
    exited: int = 0  # threads gone between discovery and read (expected, counted)
    skipped: int = 0  # samples the budget deferred to a later round
    rounds: int = 0


@dataclass(frozen=True)
class Snapshot:
    """Everything one observation round knows; the only thing `/metrics` and `/observe` read."""

    taken_at: float  # unix time
    shape: MachineShape
    mode: str
    mode_reason: str
    tiers: tuple[TierStats, ...] = ()
    layers: tuple[LayerView, ...] = ()
    top_threads: tuple[ThreadView, ...] = ()
    lint: tuple[RuleResult, ...] = ()
    node_pressure: Pressure | None = None
    pod_pressure: Mapping[str, Pressure] = field(default_factory=dict)  # by namespace/name
    pod_tiers: Mapping[str, Tier] = field(default_factory=dict)
    sampler: SamplerStats = field(default_factory=lambda: SamplerStats(0.0, 0.0, 0.0))
    problems: tuple[str, ...] = ()  # what could not be read this round, in a sentence each

    def to_json(self) -> dict[str, Any]:
        """The `GET /observe` document (docs/observe.md)."""
        return {
            "version": 1,
            "taken_at": self.taken_at,
            "machine": _machine_json(self.shape),
            "mode": {"mode": self.mode, "reason": self.mode_reason},
            "tiers": [_tier_json(t) for t in self.tiers],
            "layers": [_layer_json(layer) for layer in self.layers],
            "top_threads": [_thread_json(t) for t in self.top_threads],
            "lint": [_rule_json(r) for r in self.lint],
            "pressure": {
                "node": _pressure_json(self.node_pressure),
                "pods": {
                    key: {"tier": self.pod_tiers[key].value, **_pressure_json(p)}
                    for key, p in sorted(self.pod_pressure.items())
                    if key in self.pod_tiers
                },
            },
            "sampler": vars(self.sampler),
            "problems": list(self.problems),
        }


def _machine_json(shape: MachineShape) -> dict[str, Any]:
    return {
        "cpus": len(shape.cpus),
        "cores": len(shape.cores),
        "llcs": len(shape.llcs),
        "numa_nodes": len(shape.nodes),
        "smt": any(len(core) > 1 for core in shape.cores),
        "describe": shape.describe(),
    }


def _tier_json(t: TierStats) -> dict[str, Any]:
    return {**vars(t), "tier": t.tier.value}


def _layer_json(layer: LayerView) -> dict[str, Any]:
    return {**vars(layer), "tier": layer.tier.value if layer.tier else None}


def _thread_json(t: ThreadView) -> dict[str, Any]:
    return {**vars(t), "tier": t.tier.value}


def _rule_json(r: RuleResult) -> dict[str, Any]:
    return {**vars(r), "verdict": r.verdict.value, "evidence": list(r.evidence)}


def _pressure_json(p: Pressure | None) -> dict[str, Any]:
    return vars(p) if p is not None else {}
