"""`temper-agent`: the node agent, standalone with a static pod source.

    temper-agent --pods-dir DIR [--host-root DIR] [--state-dir DIR] [--scx-layered PATH]
                 [--cgroup-driver systemd|cgroupfs] [--profile FILE]... [--config FILE]

Every flag can also come from the environment (`TEMPER_PODS_DIR`, `TEMPER_HOST_ROOT`, ...) or a
TOML config file (`pods_dir = "..."`); flags win over the environment, which wins over the file.

This is the single composition root: it reads the machine shape and profiles once, then runs
two named tasks in a TaskGroup, `watch-pods` (the pod directory) and `reconcile` (plan and
supervise), waits for the first pod list before planning, and on SIGTERM or SIGINT stops
`reconcile`, puts the node back on the stock scheduler, and exits 0. Each mode transition is
logged as one JSON line with its reason.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temper.agent.supervisor import Supervisor, SupervisorSettings, Transition, Wanted
from temper.host.errors import HostError
from temper.host.files import read_profiles
from temper.host.machine import read_machine_shape
from temper.host.podsource import PodSnapshot, watch_pod_dir
from temper.host.scheduler import SchedulerCommand, check_scheduler
from temper.policy.cgroups import CgroupDriver
from temper.policy.errors import PolicyError
from temper.policy.lifecycle import ChildExit
from temper.policy.machine import MachineShape
from temper.policy.planner import PlanSettings, needs_enforcement, plan_node
from temper.policy.profiles import Profile
from temper.policy.scx import SCHEDULER_FLAGS

log = logging.getLogger("temper.agent")
EXIT_LINES = 15  # of a scheduler's last output, logged when it ends: its exit reason and dump head


@dataclass(frozen=True)
class AgentConfig:
    pods_dir: Path
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


class Agent:
    def __init__(self, config: AgentConfig, shape: MachineShape, profiles: Sequence[Profile]):
        self.config = config
        self.shape = shape
        self.profiles = tuple(profiles)
        self.settings = PlanSettings(cgroup_driver=config.cgroup_driver)
        self.supervisor = Supervisor(
            host_root=config.host_root,
            state_dir=config.state_dir,
            command=SchedulerCommand((str(config.scx_layered), *SCHEDULER_FLAGS)),
            report=_log_transition,
            on_exit=_log_exit,
            settings=SupervisorSettings(start_timeout_s=config.start_timeout_s),
        )
        self.snapshot: PodSnapshot | None = None
        self.changed = asyncio.Event()
        self._wanted: tuple[str | None, Wanted] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                watcher = tasks.create_task(self._watch_pods(), name="watch-pods")
                reconciler = tasks.create_task(self._reconcile(), name="reconcile")
                await stop.wait()
                watcher.cancel()
                reconciler.cancel()
        finally:
            await self.supervisor.stop()
            _log("stopped", reason="agent shutting down; node on the stock scheduler")

    async def _watch_pods(self) -> None:
        async for snapshot in watch_pod_dir(self.config.pods_dir):
            for error in snapshot.errors:
                _log("pod-source-error", reason=error)
            self.snapshot = snapshot
            self.changed.set()

    async def _reconcile(self) -> None:
        await self.changed.wait()  # the first pod list, before anything is planned
        while True:
            self.changed.clear()
            await self.supervisor.reconcile(self.wanted())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), self.config.interval_s)
                await asyncio.sleep(self.config.coalesce_s)

    def wanted(self) -> Wanted:
        """The plan for the latest pod snapshot, computed once per snapshot, not per tick."""
        key = self.snapshot.fingerprint if self.snapshot else None
        if self._wanted is None or self._wanted[0] != key:
            self._wanted = (key, self._plan())
        return self._wanted[1]

    def _plan(self) -> Wanted:
        pods = self.snapshot.pods if self.snapshot else ()
        try:
            plan = plan_node(pods, self.shape, self.profiles, self.settings)
        except PolicyError as exc:
            return Wanted(None, problems=(str(exc),))
        if not needs_enforcement(plan):
            return Wanted(None)
        return Wanted(plan)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        config = parse_config(argv, os.environ)
        shape = read_machine_shape(config.host_root)
        profiles = read_profiles(config.profiles)
        check_scheduler(str(config.scx_layered))
    except (HostError, PolicyError, ValueError) as exc:
        print(f"temper-agent: error: {exc}", file=sys.stderr)
        return 1
    _log("starting", reason=f"machine: {shape.describe()}; pods from {config.pods_dir}")
    asyncio.run(_run(Agent(config, shape, profiles)))
    return 0


async def _run(agent: Agent) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await agent.run(stop)


_FLAGS: dict[str, str] = {
    "pods_dir": "directory of pod manifests (JSON/YAML with metadata.uid), watched for changes",
    "host_root": "root of the host: its /sys, /proc and /boot (default /)",
    "state_dir": "where the running scx_layered config is written (default /run/temper)",
    "scx_layered": "the scx_layered binary (default: scx_layered on PATH)",
    "cgroup_driver": "the kubelet's cgroup driver: systemd (default) or cgroupfs",
    "start_timeout_s": "seconds scx_layered may take to attach (default 60)",
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
    for name in (*_FLAGS, "profile"):
        env_value = env.get(f"TEMPER_{name.upper()}")
        if env_value is not None:
            values[name] = env_value.split(",") if name == "profile" else env_value
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if "pods_dir" not in values:
        parser.error("--pods-dir (or TEMPER_PODS_DIR, or pods_dir in the config file) is required")
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
    return AgentConfig(
        pods_dir=Path(values["pods_dir"]),
        host_root=Path(values.get("host_root", "/")),
        state_dir=Path(values.get("state_dir", "/run/temper")),
        scx_layered=Path(values.get("scx_layered", "scx_layered")),
        cgroup_driver=CgroupDriver(values.get("cgroup_driver", "systemd")),
        profiles=tuple(Path(p) for p in profiles),
        start_timeout_s=float(values.get("start_timeout_s", 60.0)),
    )


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
