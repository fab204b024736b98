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

This is the single composition root. `main` reads the machine shape, profiles and operator
assignments once, and refuses a bad start in one line; `build_agent` is the one place the parts
are made and connected; `Agent.run` runs them as named tasks in a TaskGroup: `watch-pods` (the
API server's pods of this node, or the pod directory), `plan` and `reconcile` (the control
loop, `temper.agent.loop`), in a cluster `watch-node` (the kill switch), `publish` (annotations
and Events) and `sample-load`, and `observe` (`temper.agent.observer`), `health`, `serve` and
`api` (`temper.agent.serving`) as configured. The control loop waits for the first pod list
before enforcing; on SIGTERM or SIGINT the tasks end, then the node goes back to the stock
scheduler and the agent exits 0. Each event is one JSON line (`temper.agent.events`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import resource
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from temper import __version__
from temper.agent.config import AgentConfig, parse_config
from temper.agent.events import log_event, log_exit, log_transition
from temper.agent.loop import ControlLoop
from temper.agent.observer import Observer, ObserveSettings
from temper.agent.plans import PlanState
from temper.agent.serving import serve_endpoints, serve_probes
from temper.agent.supervisor import Supervisor, SupervisorSettings, Transition
from temper.agent.tracing import TraceService
from temper.host.errors import HostError
from temper.host.files import read_profiles
from temper.host.machine import read_machine_shape
from temper.host.operator import AssignmentFile, AuditLog
from temper.host.podsource import watch_pod_dir
from temper.host.sched_ext import SchedExtStatus, read_sched_ext
from temper.host.scheduler import SchedulerCommand, check_scheduler
from temper.policy.assignments import PodKey
from temper.policy.errors import PolicyError
from temper.policy.machine import MachineShape
from temper.policy.observe import Snapshot
from temper.policy.planner import PlanSettings
from temper.policy.pods import PodSnapshot
from temper.policy.profiles import Profile
from temper.policy.sampling import SamplingSettings
from temper.policy.scx import SCHEDULER_FLAGS
from temper.policy.tiers import Tier

# Loaded only where used: the Kubernetes client is not needed standalone, and grpcio (the
# agent's own API) is left out with --api-socket off.
if TYPE_CHECKING:
    from temper.agent.cluster import ClusterLink
    from temper.kube.api import Kube

Task = tuple[str, Callable[[], Coroutine[Any, Any, None]]]


@dataclass(frozen=True)
class Parts:
    """What the agent is built from, read before its event loop starts."""

    config: AgentConfig
    shape: MachineShape
    profiles: tuple[Profile, ...]
    assignments: Mapping[PodKey, Tier]


@dataclass(frozen=True)
class Agent:
    """The wired agent: its named tasks, and the control loop that stops the node last."""

    loop: ControlLoop
    tasks: tuple[Task, ...]

    async def run(self, stop: asyncio.Event) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                jobs = [group.create_task(job(), name=name) for name, job in self.tasks]
                await stop.wait()
                for job in jobs:
                    job.cancel()
        finally:
            await self.loop.stop()


def build_agent(parts: Parts, kube: Kube | None = None) -> Agent:
    """Make the agent's parts and connect them: in a cluster when given `kube`, else on the
    pod directory. The one place the agent is wired."""
    config = parts.config
    read_state = functools.partial(read_sched_ext, config.host_root)  # the one reader
    cluster: ClusterLink | None = None
    if kube is not None:
        cluster, pods = _cluster(config, kube, read_state)
    else:
        assert config.pods_dir is not None  # parse_config gives a node name or a pod directory
        pods = watch_pod_dir(config.pods_dir)
    supervisor = Supervisor(
        host_root=config.host_root,
        read_sched_ext=read_state,
        state_dir=config.state_dir,
        command=SchedulerCommand((str(config.scx_layered), *SCHEDULER_FLAGS)),
        report=functools.partial(_transition, cluster),
        on_exit=log_exit,
        settings=SupervisorSettings(start_timeout_s=config.start_timeout_s),
    )
    settings = PlanSettings(cgroup_driver=config.cgroup_driver)
    plans = PlanState(parts.shape, parts.profiles, settings, parts.assignments)
    loop = ControlLoop(config, plans, supervisor, cluster)
    sampling = SamplingSettings(budget_per_s=config.sample_budget_per_s)
    observer = Observer(
        config.host_root, parts.shape, loop.node_view, ObserveSettings(sampling=sampling)
    )
    tracefs = config.tracefs or config.host_root / "sys/kernel/tracing"
    traces = TraceService(tracefs, config.state_dir / "traces", observer)
    # The newest observation; None with observation off (/observe answers 503).
    observed = observer.snapshot if config.observe else _nothing_observed
    tasks: list[Task] = [
        ("watch-pods", functools.partial(loop.watch_pods, pods)),
        ("plan", loop.plan),
        ("reconcile", loop.reconcile),
    ]
    if cluster is not None:
        tasks += [
            ("watch-node", functools.partial(cluster.watch_kill_switch, loop.changed.set)),
            ("publish", cluster.publisher.run),
            ("sample-load", loop.sample_load),
        ]
    if config.observe:
        tasks.append(("observe", observer.run))
    if config.health_port:
        tasks.append(("health", functools.partial(serve_probes, config.health_port, loop.ready)))
    if config.listen is not None:
        serve = functools.partial(serve_endpoints, config.listen, observed, loop.ready, traces)
        tasks.append(("serve", serve))
    if config.api_enabled:
        from temper.agent.control import NodeControl  # noqa: PLC0415 (grpcio: with the API only)
        from temper.agent.serving import serve_agent_api  # noqa: PLC0415

        control = NodeControl(
            plans=plans,
            loop=loop,
            scheduler=supervisor,
            read_sched_ext=read_state,
            observed=observed,
            traces=traces,
            store=AssignmentFile(config.data_dir),
            node_name=config.node_name or os.uname().nodename,
            version=__version__,
        )
        audit = functools.partial(_audit, AuditLog(config.data_dir), cluster)
        tasks.append(("api", functools.partial(serve_agent_api, control, config, audit)))
    return Agent(loop, tuple(tasks))


def _cluster(
    config: AgentConfig, kube: Kube, read_state: Callable[[], SchedExtStatus]
) -> tuple[ClusterLink, AsyncIterator[PodSnapshot]]:
    """The link to the cluster, and this node's pods from the API server."""
    from temper.agent.cluster import ClusterLink  # noqa: PLC0415 (aiohttp: in a cluster only)
    from temper.kube.podwatch import watch_node_pods  # noqa: PLC0415

    assert config.node_name is not None  # parse_config gives a node name or a pod directory
    cluster = ClusterLink(
        kube,
        config.node_name,
        state_dir=config.state_dir,
        host_root=config.host_root,
        read_sched_ext=read_state,
    )
    pods = watch_node_pods(kube, config.node_name, on_error=cluster.api_error("pods"))
    return cluster, pods


def _transition(cluster: ClusterLink | None, transition: Transition) -> None:
    log_transition(transition)
    if cluster is not None:
        cluster.transition(transition)


def _audit(audit: AuditLog, cluster: ClusterLink | None, record: dict[str, object]) -> None:
    audit.write(record)
    log_event("audit", **record)
    if cluster is not None:
        cluster.audit(record)


def _nothing_observed() -> Snapshot | None:
    return None


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
    log_event("starting", reason=f"machine: {shape.describe()}; {source}")
    return asyncio.run(_run(Parts(config, shape, tuple(profiles), assignments)))


async def _run(parts: Parts) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if parts.config.node_name is None:
        await build_agent(parts).run(stop)
        return 0
    return await _run_in_cluster(parts, stop)


async def _run_in_cluster(parts: Parts, stop: asyncio.Event) -> int:
    from temper.kube.api import KubeApi, KubeError, Timeouts, load_config  # noqa: PLC0415

    config = parts.config
    try:
        timeouts = Timeouts(watch_read_s=config.watch_read_timeout_s)
        kube = KubeApi(await load_config(config.kubeconfig), timeouts)
    except KubeError as exc:
        print(f"temper-agent: error: {exc}", file=sys.stderr)
        return 1
    try:
        await build_agent(parts, kube).run(stop)
    finally:
        await kube.close()
    return 0


def _raise_open_files_limit() -> None:
    """Observation keeps two files open per sampled thread: lift the soft limit to the hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1 << 20), hard))


if __name__ == "__main__":
    sys.exit(main())
