"""The observer's rounds over fake host trees, driven one round at a time on a fake clock.

Each test writes a host root under tmp_path: the pods' container cgroups listing their threads,
`/proc/<tid>/stat` and `schedstat` for each thread, and PSI files; a fake scx_layered stats
socket where layers are read. Rounds run with `await observer.run_round()` and the clock moves
1 s between rounds, as `Observer.run` would move it. Thread phases are fixed by tid
(`first_sample_at`): the tids below are chosen for when they first fall due.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from builders import make_pod
from temper.agent import observer as observer_module
from temper.agent.observer import NodeView, Observer, ObserveSettings
from temper.host.scxstats import STATS_SOCKET
from temper.host.threads import CGROUP_DIR
from temper.policy.lifecycle import Mode
from temper.policy.machine import synthetic_shape
from temper.policy.observe import Pressure, RuleResult, Snapshot, TierStats, Verdict
from temper.policy.planner import Placement, plan_node
from temper.policy.sampling import SamplingSettings
from temper.policy.scx import LayerSpec
from temper.policy.tiers import QosClass, Tier

SHAPE = synthetic_shape(1, 2, 2, 1)  # 4 CPUs; cores (0, 2) and (1, 3)
PODS = (
    make_pod("api", namespace="shop", request=1000, priority_class="temper-critical"),
    make_pod("etl", QosClass.BEST_EFFORT, namespace="batch", request=0),
    make_pod("web", namespace="web", request=200),
)
PLAN = plan_node(PODS, SHAPE)
START_S = 1000.0  # a monotonic clock is not zero at start


def placement(key: str) -> Placement:
    [found] = [p for p in PLAN.placements if p.pod.key == key]
    return found


API, ETL, WEB = placement("shop/api"), placement("batch/etl"), placement("web/web")
assert (API.tier, ETL.tier, WEB.tier) == (Tier.CRITICAL, Tier.BACKGROUND, Tier.NORMAL)

NODE_PSI = (
    "some avg10=2.38 avg60=1.27 avg300=0.85 total=1896882855\n"
    "full avg10=0.50 avg60=0.00 avg300=0.00 total=77\n"
)
POD_PSI = (
    "some avg10=12.50 avg60=3.00 avg300=1.00 total=4200\n"
    "full avg10=1.00 avg60=0.50 avg300=0.25 total=900\n"
)


# -- the fake host ------------------------------------------------------------------------------


def stat_line(tid: int, comm: str, *, state: str, start: int, cpu: int) -> str:
    """A /proc/<tid>/stat line of 52 fields; every other field holds a distinct decoy number."""
    fields = [str(1000 + number) for number in range(1, 53)]  # fields[n - 1] is field n
    fields[0], fields[1], fields[2] = str(tid), f"({comm})", state
    fields[21] = str(start)  # field 22: starttime
    fields[38] = str(cpu)  # field 39: the CPU it last ran on
    return " ".join(fields) + "\n"


def rewrite(path: Path, text: str) -> None:
    """Write `path` in place: the observer keeps its descriptors open and reads with pread, so
    a replaced file (a new inode) would never be seen; the kernel's files change in place too."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="ascii")
        return
    with path.open("r+", encoding="ascii") as file:
        file.truncate(0)
        file.write(text)


@dataclass
class FakeHost:
    root: Path

    def cgroup(self, where: Placement) -> Path:
        return self.root / CGROUP_DIR / where.cgroup_path

    def add_pod(
        self,
        where: Placement,
        threads: Mapping[str, Sequence[int]],
        psi: str | None = POD_PSI,
    ) -> None:
        """The pod's container cgroups, each listing its threads in `cgroup.threads`."""
        for container, tids in threads.items():
            directory = self.cgroup(where) / container
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "cgroup.threads").write_text("".join(f"{t}\n" for t in tids))
        if psi is not None:
            (self.cgroup(where) / "cpu.pressure").write_text(psi)

    def add_process(self, where: Placement, container: str, pid: int, tids: Sequence[int]) -> None:
        """A container listed by `cgroup.procs`, its process's threads under /proc/<pid>/task."""
        directory = self.cgroup(where) / container
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cgroup.procs").write_text(f"{pid}\n")
        for tid in tids:
            (self.root / "proc" / str(pid) / "task" / str(tid)).mkdir(parents=True)

    def thread(
        self,
        tid: int,
        *,
        comm: str = "worker",
        state: str = "S",
        start: int = 5000,
        cpu: int = 0,
        run_ns: int = 1_000_000_000,
        wait_ns: int = 500_000_000,
    ) -> None:
        """Write (or rewrite in place) the thread's stat and schedstat."""
        directory = self.root / "proc" / str(tid)
        rewrite(directory / "stat", stat_line(tid, comm, state=state, start=start, cpu=cpu))
        rewrite(directory / "schedstat", f"{run_ns} {wait_ns} 42\n")

    def node_psi(self, text: str = NODE_PSI) -> None:
        rewrite(self.root / "proc" / "pressure" / "cpu", text)


class Clock:
    def __init__(self, now: float = START_S) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Node:
    """What the control loop would say; tests change `view` between rounds."""

    view: NodeView

    def __call__(self) -> NodeView:
        return self.view


def node_view(
    placements: Sequence[Placement] = PLAN.placements,
    *,
    mode: Mode | None = Mode.STOCK,
    running_layers: tuple[LayerSpec, ...] = (),
) -> NodeView:
    return NodeView(mode, "test", tuple(placements), running_layers)


@dataclass
class Observed:
    observer: Observer
    clock: Clock
    node: Node

    def rounds(self, count: int = 1, step_s: float = 1.0) -> None:
        """Run `count` rounds, the clock moving `step_s` after each."""

        async def run() -> None:
            for _ in range(count):
                await self.observer.run_round()
                self.clock.now += step_s

        asyncio.run(asyncio.wait_for(run(), 30))

    def until(self, at_s: float) -> None:
        """Run rounds through the one at START_S + `at_s`."""
        self.rounds(round(START_S + at_s - self.clock.now) + 1)

    def tiers(self) -> dict[Tier, TierStats]:
        return {t.tier: t for t in self.observer.snapshot().tiers}

    def rule(self, name: str) -> RuleResult:
        [found] = [r for r in self.observer.snapshot().lint if r.rule == name]
        return found


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    fake = FakeHost(tmp_path)
    fake.node_psi()
    return fake


@pytest.fixture
def observe(host: FakeHost) -> Iterator[Callable[..., Observed]]:
    made: list[Observer] = []

    def make(view: NodeView | None = None, settings: ObserveSettings | None = None) -> Observed:
        clock, node = Clock(), Node(view or node_view())
        observer = Observer(host.root, SHAPE, node, settings, clock=clock)
        made.append(observer)
        return Observed(observer, clock, node)

    yield make
    for observer in made:
        observer.reader.close()
        observer.pressure.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def every_round(other_interval_s: float = 1.0) -> ObserveSettings:
    """Settings that read every thread every round, so two tiers are read in the same one."""
    return ObserveSettings(sampling=SamplingSettings(other_interval_s=other_interval_s))


# -- 1. discovery -------------------------------------------------------------------------------


def three_pods(host: FakeHost) -> None:
    """shop/api (critical): a sandbox process 100 and app threads 101, 102; batch/etl
    (background): 201, 202; web/web (normal): 301."""
    host.add_process(API, "sandbox", 100, (100,))
    host.add_pod(API, {"app": (101, 102)})
    host.add_pod(ETL, {"app": (201, 202)})
    host.add_pod(WEB, {"app": (301,)})
    for tid in (100, 101, 102, 201, 202, 301):
        host.thread(tid)


def test_every_placements_threads_are_found_with_their_pods_tier(
    host: FakeHost, observe: Callable[..., Observed]
) -> None:
    three_pods(host)
    seen = observe()
    seen.rounds()
    assert seen.observer.tier_of_threads() == {
        100: Tier.CRITICAL,
        101: Tier.CRITICAL,
        102: Tier.CRITICAL,
        201: Tier.BACKGROUND,
        202: Tier.BACKGROUND,
        301: Tier.NORMAL,
    }
    assert {tier: (t.pods, t.threads) for tier, t in seen.tiers().items()} == {
        Tier.CRITICAL: (1, 3),
        Tier.HIGH: (0, 0),
        Tier.NORMAL: (1, 1),
        Tier.LOW: (0, 0),
        Tier.BACKGROUND: (1, 2),
    }
    assert seen.observer.snapshot().problems == ()


def test_a_pod_added_to_the_placements_is_found_on_the_next_round(
    host: FakeHost, observe: Callable[..., Observed]
) -> None:
    three_pods(host)
    seen = observe(node_view([API, ETL]))
    seen.rounds()
    assert 301 not in seen.observer.tier_of_threads()
    seen.node.view = node_view([API, ETL, WEB])
    seen.rounds()  # 1 s later: long before discovery is due again, but the placements changed
    assert seen.observer.tier_of_threads()[301] is Tier.NORMAL
    assert (seen.tiers()[Tier.NORMAL].pods, seen.tiers()[Tier.NORMAL].threads) == (1, 1)


def test_a_removed_pods_threads_are_dropped_and_their_descriptors_closed(
    host: FakeHost, observe: Callable[..., Observed]
) -> None:
    three_pods(host)
    seen = observe()
    seen.until(30)  # every thread has been read once: its stat and schedstat are kept open
    assert seen.observer.reader.open_threads == 6
    before = open_fds()
    seen.node.view = node_view([API, WEB])
    seen.rounds()
    assert set(seen.observer.tier_of_threads()) == {100, 101, 102, 301}
    assert seen.observer.reader.open_threads == 4
    # Two descriptors per thread of batch/etl, and its cpu.pressure.
    assert open_fds() == before - 2 * 2 - 1
    snapshot = seen.observer.snapshot()
    background = seen.tiers()[Tier.BACKGROUND]
    assert (background.pods, background.threads) == (0, 0)
    assert "batch/etl" not in snapshot.pod_tiers  # what /observe and /metrics show it by
    seen.rounds()  # the next PSI read (every 2 s) drops its pressure
    assert set(seen.observer.snapshot().pod_pressure) == {"shop/api", "web/web"}


# -- 2. sampling rates --------------------------------------------------------------------------


def test_critical_threads_are_read_every_round_and_the_others_within_their_interval(
    host: FakeHost, observe: Callable[..., Observed]
) -> None:
    # Phases: 101 and 102 fall due within the first second; 204 at 2.4 s, 207 at 28 s, and
    # 110 at 29.5 s of their 30 s interval.
    host.add_pod(API, {"app": (101, 102)})
    host.add_pod(ETL, {"app": (204, 207)})
    host.add_pod(WEB, {"app": (110,)})
    for tid in (101, 102, 204, 207, 110):
        host.thread(tid)
    seen = observe()
    critical = []
    for _ in range(30):  # rounds at 0 s .. 29 s
        seen.rounds()
        critical.append(seen.tiers()[Tier.CRITICAL].samples)
    assert critical == [2 * n for n in range(30)]  # none at 0 s, then both every round
    assert seen.observer.threads[110].last is None  # due at 29.5 s
    seen.rounds()  # at 30 s
    assert all(t.last is not None for t in seen.observer.threads.values())
    assert seen.tiers()[Tier.BACKGROUND].samples == 2  # each once, not every round
    assert seen.tiers()[Tier.NORMAL].samples == 1
    assert seen.observer.snapshot().sampler.skipped == 0


def test_the_budget_caps_reads_per_round_and_counts_what_it_deferred(
    host: FakeHost, observe: Callable[..., Observed]
) -> None:
    host.add_pod(API, {"app": (101, 102, 103, 104)})  # all four due within the first second
    for tid in (101, 102, 103, 104):
        host.thread(tid)
    seen = observe(settings=ObserveSettings(sampling=SamplingSettings(budget_per_s=2.0)))
    seen.rounds()  # at 0 s nothing is due
    counted = []
    for _ in range(5):
        seen.rounds()
        sampler = seen.observer.snapshot().sampler
        counted.append((sampler.samples, sampler.skipped))
    # Each round reads 2 of the 4 due threads and defers the other 2.
    assert counted == [(2, 2), (4, 4), (6, 6), (8, 8), (10, 10)]
    assert seen.tiers()[Tier.CRITICAL].samples == 10


# -- 3. deltas, reuse, exits, malformed files ---------------------------------------------------


def test_deltas_reuse_exits_and_malformed_files(
    host: FakeHost, observe: Callable[..., Observed]
) -> None:
    # 101 is the steady thread; 102 has no /proc dir; 103 exits once read; 104 turns malformed.
    host.add_pod(API, {"app": (101, 102, 103, 104)})
    for tid in (101, 103, 104):
        host.thread(tid)
    seen = observe()
    seen.rounds(2)  # at 1 s each is read once: no delta yet
    sampler = seen.observer.snapshot().sampler
    assert (sampler.samples, sampler.exited) == (3, 1)  # row E1: 102 was gone when read
    assert 102 not in seen.observer.tier_of_threads()
    critical = seen.tiers()[Tier.CRITICAL]
    assert (critical.samples, critical.run_s, critical.wait_s) == (3, 0.0, 0.0)

    host.thread(101, run_ns=1_300_000_000, wait_ns=600_000_000)
    rewrite(host.root / "proc" / "103" / "stat", "")  # caught mid-exit: reads empty
    rewrite(host.root / "proc" / "104" / "stat", "104 (worker) R garbage\n")
    seen.rounds()  # at 2 s
    critical = seen.tiers()[Tier.CRITICAL]
    assert critical.run_s == pytest.approx(0.3)
    assert critical.wait_s == pytest.approx(0.1)
    snapshot = seen.observer.snapshot()
    assert snapshot.sampler.exited == 2
    assert set(seen.observer.tier_of_threads()) == {101, 104}
    assert snapshot.sampler.rounds == 3  # the malformed file did not stop the round
    assert snapshot.problems == (f"{host.root}/proc/104/stat: is malformed",)

    # Row E3: tid 101 now names a new thread, with its own (larger) times.
    host.thread(101, start=9000, run_ns=7_000_000_000, wait_ns=3_000_000_000)
    host.thread(104)
    seen.rounds()  # at 3 s
    critical = seen.tiers()[Tier.CRITICAL]
    assert critical.run_s == pytest.approx(0.3)  # no delta across the reuse
    assert critical.wait_s == pytest.approx(0.1)
    assert seen.observer.snapshot().problems == ()  # 104 reads again

    host.thread(101, start=9000, run_ns=7_200_000_000, wait_ns=3_050_000_000)
    seen.rounds()  # at 4 s: the new thread's first delta
    critical = seen.tiers()[Tier.CRITICAL]
    assert critical.run_s == pytest.approx(0.5)
    assert critical.wait_s == pytest.approx(0.15)
    [top] = [t for t in seen.observer.snapshot().top_threads if t.tid == 101]
    assert (top.cpu_pct, top.wait_pct) == (20.0, 5.0)


# -- 4. SMT evidence ----------------------------------------------------------------------------

SMT_EVIDENCE = (
    "core 0,2: shop/api tid 101 (worker) on CPU 0 beside batch/etl tid 201 (worker) on CPU 2 "
    "(background)"
)


def smt_scene(host: FakeHost, critical_state: str, other_state: str) -> None:
    """Critical 101 on CPU 0 and background 201 on CPU 2, the two siblings of core (0, 2)."""
    host.add_pod(API, {"app": (101,)})
    host.add_pod(ETL, {"app": (201,)})
    host.thread(101, state=critical_state, cpu=0)
    host.thread(201, state=other_state, cpu=2)


def smt_shared(seen: Observed) -> dict[Tier, int]:
    return {tier: t.smt_shared for tier, t in seen.tiers().items() if t.smt_shared}


@pytest.mark.parametrize(
    "placements",
    [
        pytest.param((API, ETL), id="critical-read-first"),
        pytest.param((ETL, API), id="critical-read-last"),
    ],
)
def test_a_critical_and_a_background_thread_running_on_one_core_fail_the_smt_rule(
    host: FakeHost, observe: Callable[..., Observed], placements: tuple[Placement, ...]
) -> None:
    smt_scene(host, "R", "R")
    # No scheduler of ours runs: the rule is judged from samples all the same. The share is
    # counted for the lower tier whichever thread is read first (discovery follows placements).
    seen = observe(node_view(placements, running_layers=()), every_round())
    assert list(seen.observer.tier_of_threads()) == []
    seen.rounds(2)  # each read once, at 1 s: not judged without a previous sample
    assert list(seen.observer.tier_of_threads().values()) == [p.tier for p in placements]
    assert smt_shared(seen) == {}
    seen.rounds()  # at 2 s: both read in state R in the same round
    assert smt_shared(seen) == {Tier.BACKGROUND: 1}
    host.thread(201, state="S", cpu=2)  # it went to sleep: no more evidence
    seen.until(10)  # the linter's next run
    assert smt_shared(seen) == {Tier.BACKGROUND: 1}
    rule = seen.rule("critical-smt-shared")
    assert rule.verdict is Verdict.FAIL
    assert rule.evidence == (SMT_EVIDENCE,)
    assert rule.hint


@pytest.mark.parametrize(("critical_state", "other_state"), [("R", "S"), ("S", "R"), ("S", "S")])
def test_a_thread_not_running_is_no_smt_evidence(
    host: FakeHost, observe: Callable[..., Observed], critical_state: str, other_state: str
) -> None:
    smt_scene(host, critical_state, other_state)
    seen = observe(settings=every_round())
    seen.until(10)
    assert smt_shared(seen) == {}
    rule = seen.rule("critical-smt-shared")
    assert (rule.verdict, rule.evidence) == (Verdict.PASS, ())


# -- 5. outside-layer evidence ------------------------------------------------------------------


class StatsServer:
    """A fake scx_layered stats socket answering every request with the same layers."""

    def __init__(self, path: Path, layers: Mapping[str, object]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.answer = json.dumps({"errno": 0, "args": {"resp": {"layers": layers}}}).encode()
        self.requests = 0
        self._stop = threading.Event()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(8)
        self._server.settimeout(0.05)
        self._thread = threading.Thread(target=self._run, name="fake-scx-stats", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                request = b""
                while not request.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    request += chunk
                self.requests += 1  # before answering: the client may look as soon as it reads
                conn.sendall(self.answer + b"\n")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._server.close()
        assert not self._thread.is_alive()


@pytest.fixture
def stats_server(host: FakeHost) -> Iterator[StatsServer]:
    layers = {"critical": {"tasks": 1, "util": 10.0, "cur_nr_cpus": 2, "cpus": [0b0011]}}
    server = StatsServer(host.root / STATS_SOCKET, layers)
    yield server
    server.close()


@pytest.mark.parametrize(
    ("state", "cpu", "outside"),
    [
        pytest.param("R", 2, True, id="running-outside"),
        pytest.param("R", 0, False, id="running-inside"),
        pytest.param("S", 2, False, id="sleeping-not-judged"),
    ],
)
def test_a_running_critical_thread_outside_its_layers_cpus_fails_the_layer_rule(
    host: FakeHost,
    observe: Callable[..., Observed],
    stats_server: StatsServer,
    *,
    state: str,
    cpu: int,
    outside: bool,
) -> None:
    host.add_pod(API, {"app": (101,)})
    host.thread(101, state=state, cpu=cpu)
    seen = observe(node_view(mode=Mode.ENFORCING, running_layers=PLAN.layers))
    seen.until(10)
    snapshot = seen.observer.snapshot()
    assert [(v.name, v.cpus) for v in snapshot.layers] == [("critical", (0, 1))]
    assert stats_server.requests == 6  # on the PSI cadence: at 0, 2, 4, 6, 8 and 10 s
    assert snapshot.problems == ()
    # Judged from 2 s (the second read) through 10 s: nine samples.
    assert seen.tiers()[Tier.CRITICAL].outside_layer == (9 if outside else 0)
    rule = seen.rule("pod-wrong-layer")
    if outside:
        assert rule.verdict is Verdict.FAIL
        assert rule.evidence[0] == (
            "shop/api tid 101 (worker) (critical) ran on CPU 2, outside its confined layer "
            "'critical', which owns CPUs 0-1"
        )
        assert len(rule.evidence) == 1  # nine samples of the same fact: one line
    else:
        assert (rule.verdict, rule.evidence) == (Verdict.PASS, ())
    [top] = snapshot.top_threads
    assert top.in_layer is (cpu in (0, 1))


def test_one_sighting_outside_the_layer_is_counted_but_not_evidence(
    host: FakeHost, observe: Callable[..., Observed], stats_server: StatsServer
) -> None:
    """A thread caught once outside its layer (mid-migration, or while the scheduler was
    being enabled) and then never again is not a misplaced pod (seen in the lab: a pod's
    pause process, running at its start)."""
    host.add_pod(API, {"app": (101,)})
    host.thread(101, state="R", cpu=2)
    seen = observe(node_view(mode=Mode.ENFORCING, running_layers=PLAN.layers))
    seen.until(2)  # the layers are known from the read at 0 s: one sample judged, outside
    host.thread(101, state="S", cpu=2)  # asleep from then on
    seen.until(10)
    assert seen.tiers()[Tier.CRITICAL].outside_layer == 1
    assert seen.rule("pod-wrong-layer").verdict is Verdict.PASS


def test_without_the_stats_socket_the_layers_are_a_problem_and_nothing_is_judged(
    host: FakeHost, observe: Callable[..., Observed]
) -> None:
    host.add_pod(API, {"app": (101,)})
    host.thread(101, state="R", cpu=2)
    seen = observe(node_view(mode=Mode.ENFORCING, running_layers=PLAN.layers))
    seen.until(10)
    snapshot = seen.observer.snapshot()
    assert snapshot.layers == ()
    [problem] = snapshot.problems
    assert "cannot read scx_layered stats" in problem
    assert seen.tiers()[Tier.CRITICAL].outside_layer == 0
    assert seen.rule("pod-wrong-layer").verdict is Verdict.PASS


# -- 6. evidence window -------------------------------------------------------------------------


def test_evidence_older_than_the_window_no_longer_fails(
    host: FakeHost, observe: Callable[..., Observed]
) -> None:
    smt_scene(host, "R", "R")
    seen = observe(settings=every_round())
    window_s = seen.observer.settings.evidence_window_s
    seen.rounds(3)  # the share is seen at 2 s
    host.thread(201, state="S", cpu=2)
    seen.until(10)
    assert seen.rule("critical-smt-shared").verdict is Verdict.FAIL
    lint_s = seen.observer.settings.lint_interval_s
    last_failing = (2 + window_s) // lint_s * lint_s  # the last lint run it is within the window
    seen.until(last_failing)
    assert seen.rule("critical-smt-shared").verdict is Verdict.FAIL
    seen.until(last_failing + lint_s)
    assert seen.rule("critical-smt-shared").verdict is Verdict.PASS
    assert smt_shared(seen) == {Tier.BACKGROUND: 1}  # the counter stays: it runs from the start


# -- 7. pressure --------------------------------------------------------------------------------


def test_node_and_pod_pressure_are_in_the_snapshot_by_pod_key(
    host: FakeHost, observe: Callable[..., Observed]
) -> None:
    host.add_pod(API, {"app": (101,)})
    host.add_pod(ETL, {"app": (201,)}, psi=None)  # a cgroup without cpu.pressure
    host.thread(101)
    host.thread(201)
    seen = observe(node_view([API, ETL]))
    seen.rounds()
    snapshot = seen.observer.snapshot()
    assert snapshot.node_pressure == Pressure(2.38, 1.27, 1_896_882_855, 0.5, 77)
    assert snapshot.pod_pressure == {"shop/api": Pressure(12.5, 3.0, 4200, 1.0, 900)}
    assert snapshot.problems == ()


# -- 8, 9. snapshots and tiers of threads -------------------------------------------------------


def test_the_snapshot_is_the_same_object_until_the_next_round(
    host: FakeHost, observe: Callable[..., Observed]
) -> None:
    three_pods(host)
    seen = observe()
    seen.rounds()
    first: Snapshot = seen.observer.snapshot()
    assert seen.observer.snapshot() is first
    seen.rounds()
    second = seen.observer.snapshot()
    assert second is not first
    assert seen.observer.snapshot() is second
    assert second.sampler.rounds == first.sampler.rounds + 1 == 2


def test_tier_of_threads_can_be_limited_to_some_tiers(
    host: FakeHost, observe: Callable[..., Observed]
) -> None:
    three_pods(host)
    seen = observe()
    seen.rounds()
    assert seen.observer.tier_of_threads(frozenset({Tier.CRITICAL})) == {
        100: Tier.CRITICAL,
        101: Tier.CRITICAL,
        102: Tier.CRITICAL,
    }
    assert seen.observer.tier_of_threads(frozenset({Tier.NORMAL, Tier.BACKGROUND})) == {
        201: Tier.BACKGROUND,
        202: Tier.BACKGROUND,
        301: Tier.NORMAL,
    }


# -- reliability rows E4 and E5: many threads, pod churn ---------------------------------------


def test_twenty_thousand_threads_cost_a_bounded_number_of_reads_and_memory(
    host: FakeHost, observe: Callable[..., Observed]
) -> None:
    """E4: 20,000 threads (stress-ng-sized, as files) are found, but every round reads at most
    its budget, keeps at most max_open threads' descriptors, and shows at most 20 of them."""
    per_pod = 10_000
    host.add_pod(API, {"app": range(1, per_pod + 1)})
    host.add_pod(ETL, {"app": range(per_pod + 1, 2 * per_pod + 1)})
    for tid in range(1, 2 * per_pod + 1):
        host.thread(tid)
    budget = 500
    seen = observe(
        node_view([API, ETL]),
        ObserveSettings(sampling=SamplingSettings(budget_per_s=budget)),
    )
    seen.observer.reader.max_open = 1_000
    before_fds = open_fds()
    rounds = 5
    seen.rounds(rounds)
    snapshot = seen.observer.snapshot()
    assert sum(t.threads for t in snapshot.tiers) == 2 * per_pod
    assert snapshot.sampler.samples <= rounds * budget
    assert snapshot.sampler.skipped > 0  # 10,000 critical threads want 10,000 reads a round
    assert seen.observer.reader.open_threads <= 1_000
    assert open_fds() - before_fds <= 2 * 1_000 + 10
    assert len(snapshot.top_threads) <= 20
    # Critical first: the background pod's threads wait while critical ones are due.
    assert seen.tiers()[Tier.BACKGROUND].samples == 0


def test_pod_churn_rediscovers_once_a_round_not_once_an_event(
    host: FakeHost, observe: Callable[..., Observed], monkeypatch: pytest.MonkeyPatch
) -> None:
    """E5: placements that change a hundred times between two rounds cost one discovery."""
    three_pods(host)
    seen = observe()
    seen.rounds(1)
    calls = 0
    real = observer_module.read_pod_threads

    def counting(root: Path, pod_path: str) -> object:
        nonlocal calls
        calls += 1
        return real(root, pod_path)

    monkeypatch.setattr(observer_module, "read_pod_threads", counting)
    for churn in range(100):  # a hundred pod events land between two rounds
        keep = PLAN.placements if churn % 2 else PLAN.placements[:-1]
        seen.node.view = node_view(keep)
    seen.rounds(1)
    assert calls == len(seen.node.view.placements)  # one discovery of the latest placements
