"""Always-on observation: the pods' threads, CPU pressure, scx_layered's layers, the linter.

One task, `observe`, runs rounds every `critical_interval_s` (1 s). Each round reads the threads
the sampling plan picks (`temper.policy.sampling`: critical first, within a budget of reads per
second); every `discover_interval_s` it finds the pods' threads again, every `psi_interval_s`
it reads pressure, every `lint_interval_s` it reads scx_layered's statistics and runs the linter
(`temper.policy.lint`). Nothing here changes the node, and nothing it reads is in the control
loop's path: enforcement never waits for observation.

`snapshot()` gives the newest round as an immutable `Snapshot`, built at most once per round
and only when asked, so `/metrics` and `/observe` cost the agent nothing between scrapes.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from temper.host.errors import HostError
from temper.host.psi import PressureReader
from temper.host.scxstats import read_layer_stats
from temper.host.threads import ThreadReader, read_pod_threads
from temper.policy.lifecycle import Mode
from temper.policy.lint import ContainerCpuset, LintInput, OutsideLayer, SmtShare, lint
from temper.policy.machine import MachineShape
from temper.policy.observe import (
    LayerView,
    Pressure,
    RuleResult,
    SamplerStats,
    Snapshot,
    ThreadStat,
    ThreadView,
    TierStats,
)
from temper.policy.planner import Placement
from temper.policy.sampling import SamplingSettings, first_sample_at, next_due, plan_round
from temper.policy.scx import LayerKind, LayerSpec, Placer
from temper.policy.tiers import Tier

log = logging.getLogger("temper.agent")


OUTSIDE_ONCE_MAX = 4096  # single sightings kept before the old ones are dropped


@dataclass(frozen=True)
class ObserveSettings:
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    # New threads and pods are found this often; exits are seen sooner, on their next read.
    discover_interval_s: float = 10.0
    # PSI recomputes its averages every 2 s; reading faster buys nothing.
    psi_interval_s: float = 2.0
    # The linter's verdicts and the layers' statistics change on the scale of pod events.
    lint_interval_s: float = 10.0
    # Placement evidence older than this no longer fails a rule: a scheduler that settles
    # after attaching, or a pod that moved, stops being reported.
    evidence_window_s: float = 60.0
    top_threads: int = 20  # in /observe
    stall_readings: int = 5  # PSI readings per tier the linter compares (10 s at 2 s)


@dataclass(frozen=True)
class NodeView:
    """What the control loop knows that observation needs, read at the start of a round."""

    mode: Mode | None
    mode_reason: str
    placements: tuple[Placement, ...]
    running_layers: tuple[LayerSpec, ...]


@dataclass(slots=True)
class _Counts:
    """A tier's running counters; made into a `TierStats` for each snapshot."""

    pods: int = 0
    threads: int = 0
    samples: int = 0
    run_s: float = 0.0
    wait_s: float = 0.0
    outside_layer: int = 0
    smt_shared: int = 0


@dataclass(slots=True)
class _Thread:
    placement: Placement
    container: str
    due_at: float
    last: ThreadStat | None = None
    sampled_at: float = 0.0
    cpu_pct: float = 0.0
    wait_pct: float = 0.0

    def name(self, stat: ThreadStat) -> str:
        return f"{self.placement.pod.key} tid {stat.tid} ({stat.comm})"

    def describe(self, stat: ThreadStat) -> str:
        return f"{self.name(stat)} on CPU {stat.last_cpu}"


class Observer:
    def __init__(
        self,
        root: Path,
        shape: MachineShape,
        node: Callable[[], NodeView],
        settings: ObserveSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.shape = shape
        self.node = node
        self.settings = settings or ObserveSettings()
        self.clock = clock
        self.reader = ThreadReader(root)
        self.pressure = PressureReader(root)
        self.threads: dict[int, _Thread] = {}
        self.counts = {tier: _Counts() for tier in Tier}
        self.sampler = SamplerStats(
            self.settings.sampling.budget_per_s,
            self.settings.sampling.critical_interval_s,
            self.settings.sampling.other_interval_s,
        )
        self._core_of = {cpu: core for core in shape.cores for cpu in core}
        # Per core, the running threads seen on it this round: (round, description, cpu[, tier]).
        self._critical_on: dict[tuple[int, ...], tuple[int, str, int]] = {}
        self._other_on: dict[tuple[int, ...], tuple[int, str, Tier, int]] = {}
        self._smt: collections.deque[tuple[float, SmtShare]] = collections.deque(maxlen=200)
        self._outside: collections.deque[tuple[float, OutsideLayer]] = collections.deque(maxlen=200)
        # Threads seen outside their layer once, by identity: when. Evidence needs a second
        # sighting (see _check_layer).
        self._outside_once: dict[object, float] = {}
        self._cpusets: tuple[ContainerCpuset, ...] = ()
        self._stalls: dict[Tier, collections.deque[float]] = {
            tier: collections.deque(maxlen=self.settings.stall_readings) for tier in Tier
        }
        self.node_pressure: Pressure | None = None
        self.pod_pressure: dict[str, Pressure] = {}
        self.layers: tuple[LayerView, ...] = ()
        self.lint: tuple[RuleResult, ...] = ()
        self._view = NodeView(None, "starting", (), ())
        self._placer: Placer | None = None
        # What could not be read, per activity, from its latest run; each logged when new.
        self._problems: dict[str, tuple[str, ...]] = {}
        self._snapshot: Snapshot | None = None
        self._next = {"discover": 0.0, "psi": 0.0, "lint": 0.0}

    async def run(self) -> None:
        """Observe until cancelled."""
        interval = self.settings.sampling.critical_interval_s
        try:
            while True:
                started = self.clock()
                await self.run_round()
                await asyncio.sleep(max(0.0, interval - (self.clock() - started)))
        finally:
            self.reader.close()
            self.pressure.close()

    async def run_round(self) -> None:
        """One round: rediscover, sample, and read pressure and layers when each is due."""
        now = self.clock()
        view = self.node()
        if view.running_layers != self._view.running_layers:
            self._placer = Placer(view.running_layers) if view.running_layers else None
        placements_changed = view.placements != self._view.placements
        self._view = view
        if placements_changed or self._due("discover", now, self.settings.discover_interval_s):
            self._discover(now)
        self._sample(now)
        if self._due("psi", now, self.settings.psi_interval_s):
            self._read_pressure()
            # The layers' CPUs move as scx_layered resizes them: read them as often as PSI,
            # so a thread's CPU is compared with an ownership at most one period old.
            if self._view.running_layers:
                self.layers, problems = await asyncio.to_thread(self._read_layers)
                self._report("layers", problems)
            else:
                self.layers = ()
        if self._due("lint", now, self.settings.lint_interval_s):
            self.lint = lint(self._lint_input(now))
        self.sampler = replace(self.sampler, rounds=self.sampler.rounds + 1)
        self._snapshot = None

    def snapshot(self) -> Snapshot:
        """The newest round, as an immutable value (built once per round, when first asked)."""
        if self._snapshot is None:
            self._snapshot = self._build_snapshot()
        return self._snapshot

    def tier_of_threads(self, tiers: frozenset[Tier] | None = None) -> dict[int, Tier]:
        """The threads found in the last discovery, with their tiers (all tiers if None)."""
        return {
            tid: t.placement.tier
            for tid, t in self.threads.items()
            if tiers is None or t.placement.tier in tiers
        }

    def _due(self, what: str, now: float, interval_s: float) -> bool:
        if now < self._next[what]:
            return False
        self._next[what] = now + interval_s
        return True

    def _report(self, activity: str, problems: list[str]) -> None:
        """Replace `activity`'s problems with these; log the ones it did not have before."""
        for text in problems:
            if text not in self._problems.get(activity, ()):
                log.warning(json.dumps({"event": "observe-problem", "reason": text}))
        self._problems[activity] = tuple(dict.fromkeys(problems))

    # -- finding threads --------------------------------------------------------------------

    def _discover(self, now: float) -> None:
        found: dict[int, _Thread] = {}
        cpusets = []
        counts = {tier: [0, 0] for tier in Tier}
        problems = []
        for placement in self._view.placements:
            try:
                containers = read_pod_threads(self.root, placement.cgroup_path)
            except HostError as exc:
                problems.append(str(exc))
                continue
            counts[placement.tier][0] += 1
            for container in containers:
                if container.cpuset is not None:
                    cpusets.append(
                        ContainerCpuset(placement.pod.key, container.name, container.cpuset)
                    )
                for tid in container.tids:
                    counts[placement.tier][1] += 1
                    found[tid] = self._carry(tid, placement, container.name, now)
        self._report("discover", problems)
        self.threads = found
        self._cpusets = tuple(cpusets)
        self.reader.keep_only(found)
        self.pressure.keep_only([p.cgroup_path for p in self._view.placements])
        for tier, (pods, threads) in counts.items():
            self.counts[tier].pods, self.counts[tier].threads = pods, threads

    def _carry(self, tid: int, placement: Placement, container: str, now: float) -> _Thread:
        known = self.threads.get(tid)
        if known is not None and known.placement.pod.uid == placement.pod.uid:
            known.placement, known.container = placement, container
            return known
        due = first_sample_at(tid, placement.tier, now, self.settings.sampling)
        return _Thread(placement, container, due)

    # -- sampling ---------------------------------------------------------------------------

    def _sample(self, now: float) -> None:
        settings = self.settings.sampling
        plan = plan_round(
            {tid: (t.placement.tier, t.due_at) for tid, t in self.threads.items()}, now, settings
        )
        exited, problems = 0, []
        for tid in plan.chosen:
            thread = self.threads[tid]
            thread.due_at = next_due(thread.placement.tier, now, settings)
            try:
                stat = self.reader.read(tid)
            except HostError as exc:
                problems.append(str(exc))
                continue
            if stat is None:
                exited += 1
                del self.threads[tid]
                continue
            self._account(thread, stat, now)
        self._report("sample", problems)
        self.sampler = replace(
            self.sampler,
            samples=self.sampler.samples + len(plan.chosen) - exited,
            exited=self.sampler.exited + exited,
            skipped=self.sampler.skipped + plan.deferred,
        )

    def _account(self, thread: _Thread, stat: ThreadStat, now: float) -> None:
        previous, elapsed_s = thread.last, now - thread.sampled_at
        thread.last, thread.sampled_at = stat, now
        counts = self.counts[thread.placement.tier]
        counts.samples += 1
        if previous is None or previous.key != stat.key or elapsed_s <= 0:
            return
        run_s = max(0, stat.run_ns - previous.run_ns) / 1e9
        wait_s = max(0, stat.wait_ns - previous.wait_ns) / 1e9
        thread.cpu_pct, thread.wait_pct = 100 * run_s / elapsed_s, 100 * wait_s / elapsed_s
        counts.run_s += run_s
        counts.wait_s += wait_s
        if stat.running:  # its last CPU is where it is now, not where it was a while ago
            counts.outside_layer += self._check_layer(thread, stat, now)
            shared = self._check_core(thread, stat, now)
            if shared is not None:  # counted for the lower tier, whichever was read first
                self.counts[shared].smt_shared += 1

    def _layer_of(self, thread: _Thread, stat: ThreadStat) -> LayerSpec | None:
        if self._placer is None:
            return None
        return self._placer.place(f"{thread.placement.cgroup_path}{thread.container}/", stat.comm)

    def _check_layer(self, thread: _Thread, stat: ThreadStat, now: float) -> bool:
        """Whether a thread of a confined layer ran outside the CPUs its layer owns.

        Every such sample is counted; it becomes linter evidence only when the same thread is
        seen outside again within the evidence window. One sighting is not a placement: a
        thread caught mid-migration, or running while the scheduler was being enabled (the
        kernel lets every task run anywhere then), was seen once in the lab and never again."""
        layer = self._layer_of(thread, stat)
        if layer is None or layer.kind is not LayerKind.CONFINED:
            return False
        view = next((v for v in self.layers if v.name == layer.name), None)
        if view is None or not view.cpus or stat.last_cpu in view.cpus:
            return False
        window_s = self.settings.evidence_window_s
        first = self._outside_once.setdefault(stat.key, now)
        if first != now and now - first <= window_s:
            seen = OutsideLayer(
                thread.name(stat), thread.placement.tier, layer.name, stat.last_cpu, view.cpus
            )
            self._outside.append((now, seen))
        elif first != now:  # the first sighting is too old to pair with: this one starts over
            self._outside_once[stat.key] = now
        if len(self._outside_once) > OUTSIDE_ONCE_MAX:
            self._outside_once = {
                key: at for key, at in self._outside_once.items() if now - at <= window_s
            }
        return True

    def _check_core(self, thread: _Thread, stat: ThreadStat, now: float) -> Tier | None:
        """Whether this running thread and a running one of the other side (critical vs the
        rest) were read on the two SMT siblings of one core in this round: both on a CPU (or
        about to be) within the same few milliseconds. The lower tier of the two if so."""
        core = self._core_of.get(stat.last_cpu)
        if core is None or len(core) < 2:
            return None
        round_, me, tier = self.sampler.rounds, thread.describe(stat), thread.placement.tier
        if tier is Tier.CRITICAL:
            self._critical_on[core] = (round_, me, stat.last_cpu)
            seen = self._other_on.get(core)
            if seen and seen[0] == round_ and seen[3] != stat.last_cpu:
                self._smt.append((now, SmtShare(core, me, seen[1], seen[2])))
                return seen[2]
            return None
        self._other_on[core] = (round_, me, tier, stat.last_cpu)
        critical = self._critical_on.get(core)
        if critical and critical[0] == round_ and critical[2] != stat.last_cpu:
            self._smt.append((now, SmtShare(core, critical[1], me, tier)))
            return tier
        return None

    # -- pressure, layers, linter -----------------------------------------------------------

    def _read_pressure(self) -> None:
        try:
            self.node_pressure = self.pressure.read_node()
            pods: dict[str, Pressure] = {}
            by_tier: dict[Tier, list[float]] = collections.defaultdict(list)
            for placement in self._view.placements:
                psi = self.pressure.read_cgroup(placement.cgroup_path)
                if psi is not None:
                    pods[placement.pod.key] = psi
                    by_tier[placement.tier].append(psi.some_avg10)
        except HostError as exc:
            self._report("pressure", [str(exc)])
            return
        self._report("pressure", [])
        self.pod_pressure = pods
        for tier, values in by_tier.items():
            self._stalls[tier].append(sum(values) / len(values))

    def _read_layers(self) -> tuple[tuple[LayerView, ...], list[str]]:
        """The running layers with their statistics (in a worker thread: a socket round trip)."""
        running = self._view.running_layers
        if not running:
            return (), []
        try:
            stats = read_layer_stats(self.root)
        except HostError as exc:
            return (), [str(exc)]
        views = []
        for spec in running:
            s = stats.get(spec.name)
            if s is not None:
                ceiling = spec.cpus_range[1] if spec.cpus_range else None
                views.append(
                    LayerView(
                        spec.name, spec.tier, spec.kind.value, s.tasks, s.util, s.cpus, ceiling
                    )
                )
        return tuple(views), []

    def _lint_input(self, now: float) -> LintInput:
        view, since = self._view, now - self.settings.evidence_window_s
        return LintInput(
            shape=self.shape,
            mode=view.mode or Mode.STOCK,
            mode_reason=view.mode_reason,
            placements=view.placements,
            running_layers=view.running_layers,
            layers=self.layers,
            smt_shares=tuple(dict.fromkeys(share for at, share in self._smt if at >= since)),
            outside_layer=tuple(dict.fromkeys(seen for at, seen in self._outside if at >= since)),
            cpusets=self._cpusets,
            tier_stall_pct={tier: tuple(values) for tier, values in self._stalls.items()},
        )

    def _build_snapshot(self) -> Snapshot:
        view = self._view
        return Snapshot(
            taken_at=time.time(),
            shape=self.shape,
            mode=view.mode.value if view.mode else "starting",
            mode_reason=view.mode_reason,
            tiers=tuple(TierStats(tier, **asdict(c)) for tier, c in self.counts.items()),
            layers=self.layers,
            top_threads=self._top_threads(),
            lint=self.lint,
            node_pressure=self.node_pressure,
            pod_pressure=dict(self.pod_pressure),
            pod_tiers={p.pod.key: p.tier for p in view.placements},
            sampler=self.sampler,
            problems=tuple(p for ps in self._problems.values() for p in ps),
        )

    def _top_threads(self) -> tuple[ThreadView, ...]:
        sampled = [t for t in self.threads.values() if t.last is not None]
        sampled.sort(key=lambda t: t.cpu_pct, reverse=True)
        views = []
        for t in sampled[: self.settings.top_threads]:
            assert t.last is not None
            layer = self._layer_of(t, t.last)
            cpus = next((v.cpus for v in self.layers if layer and v.name == layer.name), ())
            views.append(
                ThreadView(
                    tid=t.last.tid,
                    comm=t.last.comm,
                    pod=t.placement.pod.key,
                    tier=t.placement.tier,
                    last_cpu=t.last.last_cpu,
                    cpu_pct=round(t.cpu_pct, 2),
                    wait_pct=round(t.wait_pct, 2),
                    in_layer=(t.last.last_cpu in cpus) if cpus else None,
                )
            )
        return tuple(views)
