"""Prometheus metrics from the newest observation snapshot, and nothing else.

The agent's observer ends each round in one immutable `Snapshot` (`temper.policy.observe`); a
scrape turns the newest one into metric families, as client_python's custom collectors do. So
`/metrics` never reads the host, never waits on the control loop, keeps no counters of its own
(the snapshot's counts already run from the agent's start), and agrees with `/observe` on every
number of a round.

Before the first snapshot the collector yields nothing: an alert on
`absent(temper_snapshot_timestamp_seconds)` tells "no observation yet" from a scrape failure,
which Prometheus's own `up` reports. The registry holds this collector only: client_python's
default process and platform collectors are left out, since the agent accounts for its own CPU
separately.

Every family is declared once in `_SPECS`: its name as the exposition spells it (counters end in
`_total`), its type, its help sentence, its labels and the function that reads its samples from a
snapshot. `METRIC_NAMES` comes from the same table, so the dashboards' test checks against it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from temper.policy.lifecycle import Mode
from temper.policy.observe import LayerView, Pressure, Snapshot, TierStats, Verdict

SnapshotProvider = Callable[[], Snapshot | None]
Rows = Iterable[tuple[tuple[str, ...], float]]  # (label values, value) of each sample


@dataclass(frozen=True)
class _Spec:
    name: str  # as in the exposition and in PromQL
    kind: type[GaugeMetricFamily] | type[CounterMetricFamily]
    help: str
    labels: tuple[str, ...]
    rows: Callable[[Snapshot], Rows]

    def family(self, snapshot: Snapshot) -> Metric:
        family = self.kind(self.name, self.help, labels=self.labels)
        for labels, value in self.rows(snapshot):
            family.add_metric(labels, value)
        return family


class SnapshotCollector:
    """Metric families from the provider's newest snapshot; it holds no state of its own."""

    def __init__(self, snapshot: SnapshotProvider) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot()
        if snapshot is None:
            return
        for spec in _SPECS:
            yield spec.family(snapshot)


def build_registry(snapshot: SnapshotProvider) -> CollectorRegistry:
    """A fresh registry holding only a `SnapshotCollector` over `snapshot`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return registry


def render_metrics(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus's text exposition format."""
    return generate_latest(registry)


# -- sample readers ------------------------------------------------------------------------------


def _one(value: Callable[[Snapshot], float]) -> Callable[[Snapshot], Rows]:
    return lambda s: [((), value(s))]


def _per_tier(value: Callable[[TierStats], float]) -> Callable[[Snapshot], Rows]:
    return lambda s: [((t.tier.value,), value(t)) for t in s.tiers]


def _per_layer(value: Callable[[LayerView], float | None]) -> Callable[[Snapshot], Rows]:
    def rows(s: Snapshot) -> Rows:
        for layer in s.layers:
            v = value(layer)
            if v is not None:
                yield (layer.name, layer.tier.value if layer.tier else ""), v

    return rows


def _modes(s: Snapshot) -> Rows:
    """Every mode, 1 for the current one; a mode this build does not know is still shown."""
    modes = [mode.value for mode in Mode]
    if s.mode not in modes:
        modes.append(s.mode)
    return [((mode,), float(mode == s.mode)) for mode in modes]


def _verdicts(s: Snapshot) -> Rows:
    return [((r.rule, v.value), float(v is r.verdict)) for r in s.lint for v in Verdict]


def _psi(value: Callable[[Pressure, str], float | None]) -> Callable[[Snapshot], Rows]:
    def rows(s: Snapshot) -> Rows:
        if s.node_pressure is None:
            return
        for kind in ("some", "full"):
            v = value(s.node_pressure, kind)
            if v is not None:
                yield (kind,), v

    return rows


def _psi_seconds(p: Pressure, kind: str) -> float | None:
    total_us = p.some_total_us if kind == "some" else p.full_total_us
    return None if total_us is None else total_us / 1e6


def _psi_avg10(p: Pressure, kind: str) -> float | None:
    return p.some_avg10 if kind == "some" else p.full_avg10


def _pod_pressure(s: Snapshot) -> Rows:
    for pod, pressure in sorted(s.pod_pressure.items()):
        tier = s.pod_tiers.get(pod)
        if tier is not None:
            yield (pod, tier.value, "some"), pressure.some_total_us / 1e6


def _intervals(s: Snapshot) -> Rows:
    sampler = s.sampler
    return [(("critical",), sampler.critical_interval_s), (("other",), sampler.other_interval_s)]


# -- the families --------------------------------------------------------------------------------

_G, _C = GaugeMetricFamily, CounterMetricFamily
_TIER, _LAYER = ("tier",), ("layer", "tier")
_SAMPLED = "counted over sampled threads since the agent started."

_SPECS: tuple[_Spec, ...] = (
    _Spec("temper_agent_mode", _G, "The agent's mode: 1 for the current one, 0 for the others; "
          "/observe gives the reason.", ("mode",), _modes),
    _Spec("temper_snapshot_timestamp_seconds", _G, "When the observation round behind these "
          "metrics ended, in Unix time.", (), _one(lambda s: s.taken_at)),
    _Spec("temper_observe_problems", _G, "What the last observation round could not read, "
          "as a count of problems listed in /observe.", (), _one(lambda s: len(s.problems))),
    _Spec("temper_tier_pods", _G, "Pods on this node in each tier.", _TIER,
          _per_tier(lambda t: t.pods)),
    _Spec("temper_tier_threads", _G, "Threads of each tier's pods at the last discovery.", _TIER,
          _per_tier(lambda t: t.threads)),
    _Spec("temper_tier_samples_total", _C, f"Thread samples per tier, {_SAMPLED}", _TIER,
          _per_tier(lambda t: t.samples)),
    _Spec("temper_tier_run_seconds_total", _C, f"Time on a CPU per tier, {_SAMPLED}", _TIER,
          _per_tier(lambda t: t.run_s)),
    _Spec("temper_tier_runqueue_wait_seconds_total", _C, "Time runnable but waiting on a run "
          f"queue per tier, {_SAMPLED}", _TIER, _per_tier(lambda t: t.wait_s)),
    _Spec("temper_tier_outside_layer_samples_total", _C, "Samples whose last CPU was outside "
          f"their layer's CPUs, per tier, {_SAMPLED}", _TIER,
          _per_tier(lambda t: t.outside_layer)),
    _Spec("temper_tier_smt_shared_samples_total", _C, "Samples on a core shared with a critical "
          f"thread, per tier, {_SAMPLED}", _TIER, _per_tier(lambda t: t.smt_shared)),
    _Spec("temper_layer_tasks", _G, "Tasks in each scx_layered layer, as scx_layered reports.",
          _LAYER, _per_layer(lambda layer: layer.tasks)),
    _Spec("temper_layer_util_cpus", _G, "CPU use of each scx_layered layer, in CPUs.", _LAYER,
          _per_layer(lambda layer: layer.util_pct / 100)),
    _Spec("temper_layer_cpus", _G, "CPUs each scx_layered layer owns now.", _LAYER,
          _per_layer(lambda layer: len(layer.cpus))),
    _Spec("temper_layer_max_cpus", _G, "The most CPUs each scx_layered layer may own, for layers "
          "with a ceiling.", _LAYER, _per_layer(lambda layer: layer.max_cpus)),
    _Spec("temper_lint_verdict", _G, "Each node lint rule's verdict: 1 for the current one, 0 for "
          "the others; /observe gives evidence and hints.", ("rule", "verdict"), _verdicts),
    _Spec("temper_lint_findings", _G, "Findings of each node lint rule.", ("rule",),
          lambda s: [((r.rule,), len(r.evidence)) for r in s.lint]),
    _Spec("temper_node_cpu_pressure_seconds_total", _C, "Time some (or all) runnable tasks of the "
          "node waited for a CPU, from /proc/pressure/cpu.", ("kind",), _psi(_psi_seconds)),
    _Spec("temper_node_cpu_pressure_avg10_percent", _G, "The node's CPU pressure averaged over "
          "10 seconds, in percent, as the kernel prints it.", ("kind",), _psi(_psi_avg10)),
    _Spec("temper_pod_cpu_pressure_seconds_total", _C, "Time some runnable task of each tiered "
          "pod waited for a CPU, from the pod cgroup's cpu.pressure.", ("pod", "tier", "kind"),
          _pod_pressure),
    _Spec("temper_sampler_samples_total", _C, "Thread samples the sampler has taken.", (),
          _one(lambda s: s.sampler.samples)),
    _Spec("temper_sampler_exited_threads_total", _C, "Threads that exited between discovery and "
          "their read, an expected race.", (), _one(lambda s: s.sampler.exited)),
    _Spec("temper_sampler_deferred_total", _C, "Samples the budget deferred to a later round.",
          (), _one(lambda s: s.sampler.skipped)),
    _Spec("temper_sampler_rounds_total", _C, "Observation rounds the sampler has run.", (),
          _one(lambda s: s.sampler.rounds)),
    _Spec("temper_sampler_budget_threads_per_second", _G, "The most thread reads the sampler "
          "makes per second.", (), _one(lambda s: s.sampler.budget_per_s)),
    _Spec("temper_sampler_interval_seconds", _G, "How often a thread is sampled, for critical "
          "threads and for the others.", ("class",), _intervals),
)  # fmt: skip

METRIC_NAMES: tuple[str, ...] = tuple(spec.name for spec in _SPECS)
