"""`temper-agent`: the node agent.

    temper-agent --node-name NAME [--kubeconfig FILE]     in a cluster (docs/cluster.md)
    temper-agent --pods-dir DIR                           standalone, pods from manifest files
        [--host-root DIR] [--state-dir DIR] [--scx-layered PATH] [--health-port PORT]
        [--listen HOST:PORT] [--sample-budget-per-s N] [--tracefs DIR] [--observe on|off]
        [--cgroup-driver systemd|cgroupfs] [--profile FILE]... [--config FILE]

Every flag can also come from the environment (`TEMPER_NODE_NAME`, `TEMPER_PODS_DIR`, ...) or
a TOML config file (`node_name = "..."`); flags win over the environment, which wins over the
file. `NODE_NAME` and `KUBECONFIG` are honoured too. In a cluster without `--kubeconfig` the
agent uses its pod's service account.

This is the single composition root: it reads the machine shape and profiles once, then runs
named tasks in a TaskGroup: `watch-pods` (the API server's pods of this node, or the pod
directory), `plan` (each change planned at once; a burst once), `reconcile` (supervise the
scheduler), and in a cluster `watch-node` (the kill switch) and `publish` (annotations and
Events), and always `observe` (threads, pressure, the linter: `temper.agent.observer`)
and `serve` (`/metrics`, `/observe`, `POST /trace` on `--listen`). It waits for the
first pod list before enforcing, and on SIGTERM or SIGINT puts the node back on the stock
scheduler and exits 0. Each mode transition is logged as one JSON line with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from temper import __version__
from temper.agent.config import AgentConfig, parse_config
from temper.agent.observer import NodeView, Observer, ObserveSettings
from temper.agent.supervisor import Supervisor, SupervisorSettings, Transition, Wanted
from temper.agent.tracing import TraceService
from temper.host.errors import HostError
from temper.host.files import read_profiles
from temper.host.machine import read_machine_shape
from temper.host.operator import AssignmentFile, AuditLog
from temper.host.podsource import PodSnapshot, watch_pod_dir
from temper.host.scheduler import SchedulerCommand, check_scheduler
from temper.policy.assignments import PodKey, planner_assignments
from temper.policy.contract import OFF, KillSwitch
from temper.policy.errors import PolicyError
from temper.policy.lifecycle import ChildExit
from temper.policy.machine import MachineShape
from temper.policy.observe import Snapshot
from temper.policy.planner import Plan, PlanSettings, needs_enforcement, plan_node
from temper.policy.profiles import Profile
from temper.policy.sampling import SamplingSettings
from temper.policy.scx import SCHEDULER_FLAGS
from temper.policy.tiers import Tier
from temper.serve.endpoints import observe_routes, probe_routes
from temper.serve.http import serve_http

# Loaded only where used: the Kubernetes client takes seconds to import and standalone agents
# never need it; grpcio (the agent's own API) is left out with --api-socket off.
if TYPE_CHECKING:
    from temper.agent.cluster import ClusterLink
    from temper.agent.control import NodeControl
    from temper.serve.api import TlsFiles

log = logging.getLogger("temper.agent")
EXIT_LINES = 15  # of a scheduler's last output, logged when it ends: its exit reason and dump head


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        shape: MachineShape,
        profiles: Sequence[Profile],
        pods: AsyncIterator[PodSnapshot],
        cluster: ClusterLink | None = None,
        *,
        assignments: Mapping[PodKey, Tier] | None = None,
    ):
        self.config = config
        self.shape = shape
        self.profiles = tuple(profiles)
        self.pods = pods
        self.cluster = cluster
        self.settings = PlanSettings(cgroup_driver=config.cgroup_driver)
        self.supervisor = Supervisor(
            host_root=config.host_root,
            state_dir=config.state_dir,
            command=SchedulerCommand((str(config.scx_layered), *SCHEDULER_FLAGS)),
            report=self._transition,
            on_exit=_log_exit,
            settings=SupervisorSettings(start_timeout_s=config.start_timeout_s),
        )
        self.snapshot: PodSnapshot | None = None
        self._pods_changed = asyncio.Event()  # a new snapshot to plan
        self.changed = asyncio.Event()  # something the next reconcile should see
        self.plan: Plan | None = None  # the newest plan that planned, enforced or not
        self.wanted = Wanted(None, nothing_reason="no pod list yet")
        self.reconciled = False  # a first decision was made (readiness)
        self.assignments = dict(assignments or {})  # the operator's, as kept in the data dir
        self._enforce = asyncio.Lock()  # one supervisor step at a time: the loop's or a reload's
        sampling = SamplingSettings(budget_per_s=config.sample_budget_per_s)
        self.observer = Observer(
            config.host_root, shape, self._node_view, ObserveSettings(sampling=sampling)
        )
        tracefs = config.tracefs or config.host_root / "sys/kernel/tracing"
        self.traces = TraceService(tracefs, config.state_dir / "traces", self.observer)
        self.control: NodeControl | None = None  # with the API

    async def run(self, stop: asyncio.Event) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                jobs = [
                    tasks.create_task(self._watch_pods(), name="watch-pods"),
                    tasks.create_task(self._plan(), name="plan"),
                    tasks.create_task(self._reconcile(), name="reconcile"),
                ]
                if self.cluster is not None:
                    jobs += [
                        tasks.create_task(
                            self.cluster.watch_kill_switch(self.changed.set), name="watch-node"
                        ),
                        tasks.create_task(self.cluster.publisher.run(), name="publish"),
                        tasks.create_task(self._sample_load(), name="sample-load"),
                    ]
                if self.config.observe:
                    jobs.append(tasks.create_task(self.observer.run(), name="observe"))
                if self.config.health_port:
                    jobs.append(tasks.create_task(self._health(), name="health"))
                if self.config.listen is not None:
                    jobs.append(tasks.create_task(self._serve(*self.config.listen), name="serve"))
                if self.config.api_enabled:
                    jobs.append(tasks.create_task(self._api(), name="api"))
                await stop.wait()
                for job in jobs:
                    job.cancel()
        finally:
            if self.control is not None:
                self.control.reloads.cancel()
            await self.supervisor.stop()
            _log("stopped", reason="agent shutting down; node on the stock scheduler")
            if self.cluster is not None:
                await self.cluster.goodbye(self.supervisor)

    def kill_switch(self) -> KillSwitch | None:
        return self.cluster.kill_switch if self.cluster is not None else OFF

    async def _watch_pods(self) -> None:
        async for snapshot in self.pods:
            for error in snapshot.errors:
                _log("pod-source-error", reason=error)
            if self.cluster is not None:
                self.cluster.api_ok("pods")
            self.snapshot = snapshot
            self._pods_changed.set()

    async def _plan(self) -> None:
        """Plan the newest snapshot whenever it changes. A burst of events that arrive together
        (a rollout) is read in one go by `watch-pods` and planned once, not once per event."""
        while True:
            await self._pods_changed.wait()
            self._pods_changed.clear()
            self._replan()
            self.changed.set()

    def _replan(self) -> None:
        """Plan the newest snapshot now; enforcement picks the plan up on its next step."""
        started = time.perf_counter()
        try:
            self._take(self.plan_with(self.assignments))
        except PolicyError as exc:
            self.wanted = Wanted(None, problems=(str(exc),))
        _log(
            "planned",
            pods=len(self.snapshot.pods) if self.snapshot else 0,
            took_ms=round((time.perf_counter() - started) * 1000, 2),
            enforce=self.wanted.plan is not None,
        )
        if self.cluster is not None:
            self.cluster.publish(self.supervisor, self.plan)

    def plan_with(self, assignments: Mapping[PodKey, Tier]) -> Plan:
        """The newest snapshot planned with `assignments`; PolicyError when it cannot be."""
        pods = self.snapshot.pods if self.snapshot else ()
        return plan_node(
            pods, self.shape, self.profiles, self.settings, planner_assignments(assignments)
        )

    def adopt(self, assignments: Mapping[PodKey, Tier], plan: Plan) -> None:
        """Take an operator's changed assignments and the plan made with them."""
        self.assignments = dict(assignments)
        self._take(plan)
        _log("assignments", count=len(self.assignments))
        if self.cluster is not None:
            self.cluster.publish(self.supervisor, self.plan)
        self.changed.set()

    async def reload(self) -> None:
        """Plan again and restart the scheduler now (an operator's `temper-cli reload`)."""
        self._replan()
        async with self._enforce:
            await self.supervisor.reconcile(self.wanted, self.kill_switch(), reload=True)

    def _take(self, plan: Plan) -> None:
        self.plan = plan
        self.wanted = Wanted(plan if needs_enforcement(plan) else None)

    async def _reconcile(self) -> None:
        while self.snapshot is None:  # the first pod list, before anything is decided
            await self.changed.wait()
            self.changed.clear()
        if self.cluster is not None:  # and the kill switch, unless the API server is away
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.cluster.known.wait(), self.config.kill_switch_wait_s)
        while True:
            self.changed.clear()
            async with self._enforce:
                await self.supervisor.reconcile(self.wanted, self.kill_switch())
            self.reconciled = True
            if self.cluster is not None:
                self.cluster.publish(self.supervisor, self.plan)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), self.config.interval_s)
                await asyncio.sleep(self.config.coalesce_s)

    async def _sample_load(self) -> None:
        assert self.cluster is not None
        while True:
            await asyncio.sleep(self.config.publish_interval_s)
            self.cluster.sample_usage(self.plan)
            self.cluster.publish(self.supervisor, self.plan)

    async def _health(self) -> None:
        routes = probe_routes(lambda: self.reconciled)
        await serve_http("0.0.0.0", self.config.health_port, routes)

    async def _serve(self, host: str, port: int) -> None:
        routes = observe_routes(self._snapshot, lambda: self.reconciled, {"/trace": self.traces})
        try:
            await serve_http(host, port, routes, started=lambda bound: _log("serving", port=bound))
        except OSError as exc:  # enforcement goes on without its endpoints, loudly
            _log("serve-error", reason=f"cannot listen on {host}:{port}: {exc.strerror or exc}")

    async def _api(self) -> None:
        """The gRPC API for temper-cli; enforcement goes on without it if it cannot start.
        grpcio is loaded here, not at start: with `--api-socket off` it costs nothing
        (14.4 MiB of RSS otherwise, measured in bench/reports/agent-watch.md)."""
        from temper.agent.control import NodeControl  # noqa: PLC0415
        from temper.host.peercred import group_id  # noqa: PLC0415
        from temper.serve.api import AgentService, serve_api  # noqa: PLC0415
        from temper.serve.callers import AllowList, UnixFront  # noqa: PLC0415

        config = self.config
        node = config.node_name or os.uname().nodename
        store = AssignmentFile(config.data_dir)
        self.control = NodeControl(self, store, self.traces, node, __version__)
        allow = AllowList(
            config.api_group, group_id(config.api_group) if config.api_group else None
        )
        audit = AuditLog(config.data_dir)
        try:
            front = UnixFront(config.api_socket or config.state_dir / "api.sock")
            tls = _api_tls(config)
            service = AgentService(self.control, front, allow, lambda r: self._audit(audit, r))
            await serve_api(
                service,
                front,
                tls,
                lambda where: _log("api", serving=where, allowed=allow.describe()),
            )
        except (OSError, ValueError, RuntimeError) as exc:
            _log("api-error", reason=f"cannot serve the API: {exc}")

    def _audit(self, audit: AuditLog, record: dict[str, object]) -> None:
        audit.write(record)
        _log("audit", **record)
        if self.cluster is not None:
            self.cluster.audit(record)

    def _snapshot(self) -> Snapshot | None:
        """The newest observation; None with observation off (/observe answers 503)."""
        return self.observer.snapshot() if self.config.observe else None

    def _node_view(self) -> NodeView:
        """What observation needs from the control loop, read at the start of each round."""
        mode, reason = self.supervisor.last or (None, "starting: no decision yet")
        running = self.supervisor.running_plan
        return NodeView(
            mode,
            reason,
            self.plan.placements if self.plan else (),
            running.layers if running else (),
        )

    def _transition(self, transition: Transition) -> None:
        _log_transition(transition)
        if self.cluster is not None:
            self.cluster.transition(transition)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        config = parse_config(argv, os.environ)
        shape = read_machine_shape(config.host_root)
        profiles = read_profiles(config.profiles)
        # A damaged file stops the start: the agent must not guess which pods an operator placed.
        assignments = AssignmentFile(config.data_dir).read()
        check_scheduler(str(config.scx_layered))
        _raise_open_files_limit()
    except (HostError, PolicyError, ValueError) as exc:
        print(f"temper-agent: error: {exc}", file=sys.stderr)
        return 1
    source = f"node {config.node_name}" if config.node_name else f"pods from {config.pods_dir}"
    _log("starting", reason=f"machine: {shape.describe()}; {source}")
    return asyncio.run(_run(Parts(config, shape, tuple(profiles), assignments)))


@dataclass(frozen=True)
class Parts:
    """What the agent is built from, read before its event loop starts."""

    config: AgentConfig
    shape: MachineShape
    profiles: tuple[Profile, ...]
    assignments: Mapping[PodKey, Tier]

    def agent(self, pods: AsyncIterator[PodSnapshot], cluster: ClusterLink | None = None) -> Agent:
        return Agent(
            self.config, self.shape, self.profiles, pods, cluster, assignments=self.assignments
        )


async def _run(parts: Parts) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    config = parts.config
    if config.node_name is None:
        assert config.pods_dir is not None
        await parts.agent(watch_pod_dir(config.pods_dir)).run(stop)
        return 0
    return await _run_in_cluster(parts, stop)


async def _run_in_cluster(parts: Parts, stop: asyncio.Event) -> int:
    from temper.agent.cluster import ClusterLink  # noqa: PLC0415 (slow import, cluster only)
    from temper.kube.api import ApiError, KubeApi, Timeouts, load_config  # noqa: PLC0415
    from temper.kube.podwatch import watch_node_pods  # noqa: PLC0415

    config = parts.config
    assert config.node_name is not None
    try:
        timeouts = Timeouts(watch_read_s=config.watch_read_timeout_s)
        api = KubeApi(await load_config(config.kubeconfig), timeouts)
    except ApiError as exc:
        print(f"temper-agent: error: {exc}", file=sys.stderr)
        return 1
    try:
        cluster = ClusterLink(
            api,
            config.node_name,
            state_dir=config.state_dir,
            host_root=config.host_root,
            report=lambda event, fields: _log(event, **fields),
        )
        pods = watch_node_pods(api, config.node_name, on_error=cluster.api_error("pods"))
        await parts.agent(pods, cluster).run(stop)
    finally:
        await api.close()
    return 0


def _api_tls(config: AgentConfig) -> tuple[str, int, TlsFiles] | None:
    from temper.serve.api import TlsFiles  # noqa: PLC0415

    if config.api_listen is None:
        return None
    # parse_config refuses --api-listen without all three files
    assert config.api_tls_cert is not None
    assert config.api_tls_key is not None
    assert config.api_client_ca is not None
    host, port = config.api_listen
    return host, port, TlsFiles(config.api_tls_cert, config.api_tls_key, config.api_client_ca)


def _raise_open_files_limit() -> None:
    """Observation keeps two files open per sampled thread: lift the soft limit to the hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 20), hard))


def _log_transition(transition: Transition) -> None:
    previous = transition.previous.value if transition.previous else None
    action = transition.action.value if transition.action else None
    _log(
        "transition",
        mode=transition.mode.value,
        previous=previous,
        action=action,
        reason=transition.reason,
    )


def _log_exit(exit_: ChildExit) -> None:
    tail = exit_.output_tail.strip().splitlines()[-EXIT_LINES:]
    _log(
        "scheduler-exit",
        returncode=exit_.returncode,
        requested=exit_.requested,
        output="\n".join(tail),
    )


def _log(event: str, **fields: object) -> None:
    record = {"ts": round(time.time(), 3), "event": event, **fields}
    log.info(json.dumps(record))


if __name__ == "__main__":
    sys.exit(main())
