"""`temper-agent` end to end on a fake host: a real process, the fake scx_layered child."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from builders import shop_pod
from temper.agent.config import AgentConfig, parse_config
from temper.agent.loop import ControlLoop
from temper.agent.main import Parts, build_agent
from temper.agent.plans import PlanState
from temper.agent.supervisor import Supervisor
from temper.host.sched_ext import SchedState, read_sched_ext
from temper.host.scheduler import SchedulerCommand
from temper.policy.cgroups import CgroupDriver
from temper.policy.machine import synthetic_shape
from temper.policy.planner import PlanSettings
from temper.policy.pods import PodSnapshot, parse_pod
from temper_testing.host.fakesys import write_fake_kernel, write_fake_sysfs
from waiting import wait_until


@pytest.fixture
def host(tmp_path: Path) -> Path:
    root = write_fake_kernel(tmp_path / "host")
    write_fake_sysfs(root, synthetic_shape(1, 2, 2, 1))
    return root


def start_agent(tmp_path: Path, host: Path) -> subprocess.Popen[str]:
    fake = tmp_path / "scx_layered"
    fake.write_text(
        f'#!/bin/sh\nexec {sys.executable} -m temper_testing.host.fakescx --root {host} "$@"\n'
    )
    fake.chmod(0o755)
    with (tmp_path / "agent.log").open("w") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "temper.agent.main",
                "--pods-dir",
                str(tmp_path / "pods"),
                "--host-root",
                str(host),
                "--state-dir",
                str(tmp_path / "state"),
                "--scx-layered",
                str(fake),
            ],
            stderr=log,
            text=True,
        )


def stop_agent(agent: subprocess.Popen[str], tmp_path: Path) -> str:
    """SIGTERM the agent, wait for it, and return what it logged."""
    agent.send_signal(signal.SIGTERM)
    agent.wait(timeout=30)
    return (tmp_path / "agent.log").read_text()


def events(stderr: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_agent_enforces_when_a_pod_asks_and_restores_stock_on_sigterm(
    tmp_path: Path, host: Path
) -> None:
    pods = tmp_path / "pods"
    pods.mkdir()
    (pods / "web.json").write_text(json.dumps(shop_pod("web", 1)))
    agent = start_agent(tmp_path, host)
    try:
        wait_until(
            lambda: '"transition"' in (tmp_path / "agent.log").read_text(), 20, "a transition"
        )
        assert read_sched_ext(host).state is SchedState.DISABLED  # observation first
        (pods / "checkout.json").write_text(json.dumps(shop_pod("checkout", 2, "temper-critical")))
        wait_until(lambda: read_sched_ext(host).is_ours(), 20, "scx_layered attached")
        log = tmp_path / "agent.log"
        wait_until(lambda: '"mode": "enforcing"' in log.read_text(), 20, "enforcing")
        assert "critical" in (tmp_path / "state" / "layers.json").read_text()
    finally:
        stderr = stop_agent(agent, tmp_path)
    assert agent.returncode == 0
    assert read_sched_ext(host).state is SchedState.DISABLED
    transitions = [e for e in events(stderr) if e["event"] == "transition"]
    assert [e["mode"] for e in transitions] == ["stock", "stock", "enforcing"]
    assert "Temper tier" in str(transitions[0]["reason"])
    assert transitions[1]["action"] == "start"
    assert events(stderr)[-1]["event"] == "stopped"
    exits = [e for e in events(stderr) if e["event"] == "scheduler-exit"]
    assert [(e["requested"], e["returncode"]) for e in exits] == [(True, 0)]
    assert "unregistered from user space" in str(exits[0]["output"])


def test_agent_refuses_on_a_kernel_without_sched_ext_and_keeps_running(tmp_path: Path) -> None:
    host = write_fake_kernel(tmp_path / "host", sched_ext=False)
    write_fake_sysfs(host, synthetic_shape(1, 2, 2, 1))
    pods = tmp_path / "pods"
    pods.mkdir()
    (pods / "c.json").write_text(json.dumps(shop_pod("checkout", 3, "temper-critical")))
    agent = start_agent(tmp_path, host)
    time.sleep(2)
    assert agent.poll() is None
    stderr = stop_agent(agent, tmp_path)
    assert agent.returncode == 0
    refused = [e for e in events(stderr) if e.get("mode") == "refused"]
    assert len(refused) == 1
    assert "sched_ext" in str(refused[0]["reason"])


def test_settings_come_from_flags_then_environment_then_file(tmp_path: Path) -> None:
    file = tmp_path / "agent.toml"
    file.write_text(
        'pods_dir = "/from/file"\nstate_dir = "/file/state"\ncgroup_driver = "cgroupfs"\n'
    )
    env = {"TEMPER_CONFIG": str(file), "TEMPER_STATE_DIR": "/env/state"}
    config = parse_config(["--pods-dir", "/from/flag"], env)
    assert config.pods_dir == Path("/from/flag")
    assert config.state_dir == Path("/env/state")
    assert config.cgroup_driver is CgroupDriver.CGROUPFS


def test_unknown_config_file_settings_are_refused(tmp_path: Path) -> None:
    file = tmp_path / "agent.toml"
    file.write_text('pods_dir = "/p"\npod_dir = "/typo"\n')
    with pytest.raises(ValueError, match="pod_dir"):
        parse_config(["--config", str(file)], {})


def test_missing_pods_dir_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:
        parse_config([], {})
    assert caught.value.code == 2


def test_agent_reports_a_bad_host_root_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "temper.agent.main",
            "--pods-dir",
            str(tmp_path),
            "--host-root",
            str(tmp_path / "nope"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ},
    )
    assert done.returncode == 1
    assert "nope" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("binary", "message"),
    [("/bin/true", "not Temper's patched scx_layered"), ("/nonexistent/scx", "cannot run")],
)
def test_an_unpatched_or_missing_scheduler_is_refused_at_start(
    tmp_path: Path, host: Path, binary: str, message: str
) -> None:
    (tmp_path / "pods").mkdir()
    argv = [sys.executable, "-m", "temper.agent.main", "--pods-dir", str(tmp_path / "pods")]
    argv += ["--host-root", str(host), "--scx-layered", binary]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert message in done.stderr


def test_a_burst_of_pod_changes_is_planned_once(
    host: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Snapshots that arrive together (a rollout read in one go) are planned once, the last."""
    pods = [parse_pod(shop_pod(f"p{i}", i), "pod") for i in range(20)]

    async def burst() -> AsyncIterator[PodSnapshot]:
        for n in range(1, 21):  # no await between them: one read of a busy stream
            yield PodSnapshot(tuple(pods[:n]), (), f"burst:{n}")
        await asyncio.sleep(3600)

    async def run() -> None:
        config = AgentConfig(pods_dir=tmp_path, host_root=host, state_dir=tmp_path / "state")
        supervisor = Supervisor(
            host_root=host,
            read_sched_ext=functools.partial(read_sched_ext, host),
            state_dir=config.state_dir,
            command=SchedulerCommand(("scx_layered",)),
            report=lambda _: None,
        )
        plans = PlanState(synthetic_shape(1, 2, 2, 1), (), PlanSettings(), {})
        loop = ControlLoop(config, plans, supervisor)
        async with asyncio.TaskGroup() as tasks:
            jobs = [tasks.create_task(loop.watch_pods(burst())), tasks.create_task(loop.plan())]
            await asyncio.sleep(0.5)
            for job in jobs:
                job.cancel()

    with caplog.at_level("INFO", logger="temper.agent"):
        asyncio.run(run())
    planned = [json.loads(r.message) for r in caplog.records if '"planned"' in r.message]
    assert [p["pods"] for p in planned] == [20]


@pytest.mark.parametrize(("observe", "status"), [(True, 200), (False, 503)])
def test_observe_is_served_on_listen_and_answers_503_with_observation_off(
    host: Path, tmp_path: Path, observe: bool, status: int
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def get(path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    async def run() -> tuple[int, int]:
        (tmp_path / "pods").mkdir()
        config = AgentConfig(
            pods_dir=tmp_path / "pods",
            host_root=host,
            state_dir=tmp_path / "state",
            listen=("127.0.0.1", port),
            observe=observe,
        )
        agent = build_agent(Parts(config, synthetic_shape(1, 2, 2, 1), (), {}))
        stop = asyncio.Event()
        running = asyncio.create_task(agent.run(stop))
        await asyncio.sleep(1.5)
        answers = await asyncio.to_thread(get, "/observe"), await asyncio.to_thread(get, "/livez")
        stop.set()
        await running
        return answers

    assert asyncio.run(run()) == (status, 200)
