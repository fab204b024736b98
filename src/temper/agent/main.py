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

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import resource
import signal
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from temper.agent.observer import NodeView, Observer, ObserveSettings
from temper.agent.supervisor import Supervisor, SupervisorSettings, Transition, Wanted
from temper.agent.tracing import TraceService
from temper.host.errors import HostError
from temper.host.files import read_profiles
from temper.host.machine import read_machine_shape
from temper.host.podsource import PodSnapshot, watch_pod_dir
from temper.host.scheduler import SchedulerCommand, check_scheduler
from temper.policy.cgroups import CgroupDriver
from temper.policy.contract import OFF, KillSwitch
from temper.policy.errors import PolicyError
from temper.policy.lifecycle import ChildExit
from temper.policy.machine import MachineShape
from temper.policy.observe import Snapshot
from temper.policy.planner import Plan, PlanSettings, needs_enforcement, plan_node
from temper.policy.profiles import Profile
from temper.policy.sampling import SamplingSettings
from temper.policy.scx import SCHEDULER_FLAGS
from temper.serve.endpoints import observe_routes, probe_routes
from temper.serve.http import serve_http

if TYPE_CHECKING:  # the API client takes seconds to import; standalone agents never need it
    from temper.agent.cluster import ClusterLink

log = logging.getLogger("temper.agent")
_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
EXIT_LINES = 15  # of a scheduler's last output, logged when it ends: its exit reason and dump head


@dataclass(frozen=True)
class AgentConfig:
    pods_dir: Path | None = None  # standalone: pods from manifest files
    node_name: str | None = None  # in a cluster: pods and kill switch from the API server
    kubeconfig: Path | None = None  # None in a cluster: the pod's service account
    health_port: int = 0  # /livez and /readyz on this port, all addresses; 0: none
    # /metrics, /observe, POST /trace and the probes. Loopback by default: the chart opens it
    # to in-cluster scrapers on purpose. None: off.
    listen: tuple[str, int] | None = ("127.0.0.1", 9479)
    # Thread reads per second at most (temper.policy.sampling): ~10 us each.
    sample_budget_per_s: float = 200.0
    observe: bool = True  # False: no sampling, pressure or linter (benchmarks' baseline)
    tracefs: Path | None = None  # default: <host_root>/sys/kernel/tracing
    host_root: Path = Path("/")
    state_dir: Path = Path("/run/temper")
    scx_layered: Path = Path("scx_layered")
    cgroup_driver: CgroupDriver = CgroupDriver.SYSTEMD
    profiles: tuple[Path, ...] = ()
    # Pod events arrive in bursts (a rollout, a node drain); planning once after the burst
    # settles avoids restarting the scheduler for each pod.
    coalesce_s: float = 1.0
    # How often the kernel's truth is re-read when no pod changed: a foreign scheduler, a
    # SysRq-S or a crashed child is noticed within this.
    interval_s: float = 2.0
    # How long scx_layered may take to attach before the start counts as a failure: under a
    # second on real hardware, up to ~35 s in the single-threaded TCG lab.
    start_timeout_s: float = 60.0
    # A watch silent this long is opened again: it may hang without closing (a quiet cluster
    # is silent too, so a reopen is routine, not an error).
    watch_read_timeout_s: float = 120.0
    # How long a first start waits for the kill switch when nothing was remembered, before it
    # decides on "not known" (safe mode) and says so.
    kill_switch_wait_s: float = 10.0
    # How often the tier load's CPU use is sampled and published.
    publish_interval_s: float = 15.0


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        shape: MachineShape,
        profiles: Sequence[Profile],
        pods: AsyncIterator[PodSnapshot],
        cluster: ClusterLink | None = None,
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
        sampling = SamplingSettings(budget_per_s=config.sample_budget_per_s)
        self.observer = Observer(
            config.host_root, shape, self._node_view, ObserveSettings(sampling=sampling)
        )

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
                await stop.wait()
                for job in jobs:
                    job.cancel()
        finally:
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
        pods = self.snapshot.pods if self.snapshot else ()
        try:
            plan = plan_node(pods, self.shape, self.profiles, self.settings)
        except PolicyError as exc:
            self.wanted = Wanted(None, problems=(str(exc),))
        else:
            self.plan = plan
            self.wanted = Wanted(plan if needs_enforcement(plan) else None)
        _log(
            "planned",
            pods=len(pods),
            took_ms=round((time.perf_counter() - started) * 1000, 2),
            enforce=self.wanted.plan is not None,
        )
        if self.cluster is not None:
            self.cluster.publish(self.supervisor, self.plan)

    async def _reconcile(self) -> None:
        while self.snapshot is None:  # the first pod list, before anything is decided
            await self.changed.wait()
            self.changed.clear()
        if self.cluster is not None:  # and the kill switch, unless the API server is away
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.cluster.known.wait(), self.config.kill_switch_wait_s)
        while True:
            self.changed.clear()
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
        tracefs = self.config.tracefs or self.config.host_root / "sys/kernel/tracing"
        trace = TraceService(tracefs, self.config.state_dir / "traces", self.observer)
        routes = observe_routes(self._snapshot, lambda: self.reconciled, {"/trace": trace})
        try:
            await serve_http(host, port, routes, started=lambda bound: _log("serving", port=bound))
        except OSError as exc:  # enforcement goes on without its endpoints, loudly
            _log("serve-error", reason=f"cannot listen on {host}:{port}: {exc.strerror or exc}")

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
        check_scheduler(str(config.scx_layered))
        _raise_open_files_limit()
    except (HostError, PolicyError, ValueError) as exc:
        print(f"temper-agent: error: {exc}", file=sys.stderr)
        return 1
    source = f"node {config.node_name}" if config.node_name else f"pods from {config.pods_dir}"
    _log("starting", reason=f"machine: {shape.describe()}; {source}")
    return asyncio.run(_run(config, shape, profiles))


async def _run(config: AgentConfig, shape: MachineShape, profiles: Sequence[Profile]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if config.node_name is None:
        assert config.pods_dir is not None
        await Agent(config, shape, profiles, watch_pod_dir(config.pods_dir)).run(stop)
        return 0
    return await _run_in_cluster(config, shape, profiles, stop)


async def _run_in_cluster(
    config: AgentConfig, shape: MachineShape, profiles: Sequence[Profile], stop: asyncio.Event
) -> int:
    from temper.agent.cluster import ClusterLink  # noqa: PLC0415 (slow import, cluster only)
    from temper.kube.api import ApiError, KubeApi, Timeouts, load_config  # noqa: PLC0415
    from temper.kube.podwatch import watch_node_pods  # noqa: PLC0415

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
        await Agent(config, shape, profiles, pods, cluster).run(stop)
    finally:
        await api.close()
    return 0


_FLAGS: dict[str, str] = {
    "node_name": "this node's name: pods and the kill switch come from the API server",
    "kubeconfig": "kubeconfig file for the API server (default: the pod's service account)",
    "pods_dir": "directory of pod manifests (JSON/YAML with metadata.uid), watched for changes",
    "health_port": "serve /livez and /readyz on this port (default: off)",
    "host_root": "root of the host: its /sys, /proc and /boot (default /)",
    "state_dir": "where the running scx_layered config is written (default /run/temper)",
    "scx_layered": "the scx_layered binary (default: scx_layered on PATH)",
    "cgroup_driver": "the kubelet's cgroup driver: systemd (default) or cgroupfs",
    "start_timeout_s": "seconds scx_layered may take to attach (default 60)",
    "watch_read_timeout_s": "seconds of silence after which an API watch is reopened (default 120)",
    "listen": "serve /metrics, /observe and POST /trace on HOST:PORT (default 127.0.0.1:9479; "
    "'off': none)",
    "sample_budget_per_s": "thread samples per second at most (default 200)",
    "tracefs": "where tracefs is mounted (default <host-root>/sys/kernel/tracing)",
    "observe": "on (default) or off: sample threads, read pressure and run the linter",
}


def parse_config(argv: Sequence[str] | None, env: dict[str, str] | os._Environ[str]) -> AgentConfig:
    """Flags over environment (TEMPER_<NAME>) over config file over defaults."""
    parser = argparse.ArgumentParser(prog="temper-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="TOML file with any of the settings below")
    for name, help_text in _FLAGS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", help=help_text)
    parser.add_argument("--profile", action="append", help="workload profile TOML; repeatable")
    args = parser.parse_args(argv)
    config_path = args.config or (Path(env["TEMPER_CONFIG"]) if "TEMPER_CONFIG" in env else None)
    values = _read_config_file(config_path) if config_path else {}
    for name, plain in (("node_name", "NODE_NAME"), ("kubeconfig", "KUBECONFIG")):
        if plain in env:
            values[name] = env[plain]
    for name in (*_FLAGS, "profile"):
        env_value = env.get(f"TEMPER_{name.upper()}")
        if env_value is not None:
            values[name] = env_value.split(",") if name == "profile" else env_value
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if ("pods_dir" in values) == ("node_name" in values):
        parser.error(
            "give exactly one pod source: --node-name (in a cluster; or NODE_NAME) or "
            "--pods-dir (standalone)"
        )
    return _build_config(values)


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: cannot read config file: {exc}") from exc
    unknown = set(data) - {*_FLAGS, "profile"}
    if unknown:
        raise ValueError(f"{path}: unknown settings {sorted(unknown)}")
    return dict(data)


def _build_config(values: dict[str, Any]) -> AgentConfig:
    profiles = values.get("profile") or []
    kubeconfig = values.get("kubeconfig")
    return AgentConfig(
        pods_dir=Path(values["pods_dir"]) if "pods_dir" in values else None,
        node_name=_node_name(values.get("node_name")),
        kubeconfig=Path(kubeconfig) if kubeconfig else None,
        health_port=_port(values.get("health_port", 0)),
        host_root=Path(values.get("host_root", "/")),
        state_dir=Path(values.get("state_dir", "/run/temper")),
        scx_layered=Path(values.get("scx_layered", "scx_layered")),
        cgroup_driver=CgroupDriver(values.get("cgroup_driver", "systemd")),
        profiles=tuple(Path(p) for p in profiles),
        start_timeout_s=float(values.get("start_timeout_s", 60.0)),
        watch_read_timeout_s=_positive(
            "watch_read_timeout_s", values.get("watch_read_timeout_s", 120)
        ),
        listen=_listen(values.get("listen", "127.0.0.1:9479")),
        sample_budget_per_s=_positive(
            "sample_budget_per_s", values.get("sample_budget_per_s", 200)
        ),
        tracefs=Path(values["tracefs"]) if values.get("tracefs") else None,
        observe=_on_off("observe", values.get("observe", "on")),
    )


def _on_off(name: str, value: object) -> bool:
    text = str(value).strip().lower()
    if text not in ("on", "off", "true", "false"):
        raise ValueError(f"{name} must be on or off, not {value!r}")
    return text in ("on", "true")


def _listen(value: object) -> tuple[str, int] | None:
    text = str(value).strip()
    if text == "off":
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"listen address {text!r} is not HOST:PORT (or 'off')")
    return host.strip("[]"), _port(port)


def _node_name(value: object) -> str | None:
    if value is None:
        return None
    name = str(value).strip()
    if not name or len(name) > 253 or not _NODE_NAME.fullmatch(name):
        raise ValueError(f"node name {value!r} is not a valid Kubernetes node name")
    return name


def _positive(name: str, value: object) -> float:
    try:
        number = float(str(value))
    except ValueError:
        raise ValueError(f"{name} {value!r} is not a number") from None
    if not number > 0:
        raise ValueError(f"{name} must be positive, got {number}")
    return number


def _port(value: object) -> int:
    try:
        port = int(str(value))
    except ValueError:
        raise ValueError(f"port {value!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is outside 0-65535")
    return port


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
