"""Observation end to end: a simulated node, the agent, `/observe`, `/metrics` and a trace.

    python -m temper_testing.lab.observe --out FILE --work DIR --scx-layered PATH
        [--host-root DIR] [--cgroup-root DIR] [--tracefs DIR] [--enforce] [--trace-seconds N]

The same program runs in two places, so both show the same thing:
- on the host (`tests/integration/test_observe_host.py`): a kernel without sched_ext, the
  container's cgroup2 mount as the cgroup root, a host root of symlinks into the real `/proc`
  and `/sys`; the agent refuses to enforce and observes anyway;
- in the lab guest (`tests/lab/test_observe.py`, `--enforce`): the real scx_layered enforcing.

It starts the lab's pods (`temper_testing.lab.proof.PODS`, all five tiers, threads that wake every
50 ms), the agent with `--listen` on a free loopback port, waits until every pod's threads are
sampled and the linter has judged the settled mode, then reads `/observe` and `/metrics`, asks
`POST /trace` for a capture of the critical and low tiers. Then it works the node as an
operator would, through `temper-cli` on the agent's socket: status, the config diff, a reload,
and a trace capture streamed to a file. Everything goes to `--out` as JSON for the test to
check. Tracefs is mounted at `--tracefs` when it is not already.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from temper_testing.lab.agentrun import AGENT_LOG, agent_argv, stop_agent
from temper_testing.lab.node import SimulatedNode
from temper_testing.lab.pace import pace, paced
from temper_testing.lab.proof import PODS

# The planted partial-affinity fault: one high-tier container pinned to one CPU of the high
# layer (the guest's CPUs 2-3), so the pin does not touch the critical core.
PINNED_POD, PINNED_CPUS = "cart", "3"
# scx_layered attaches in 18-35 s in a quiet lab guest; paced (temper_testing.lab.pace).
SETTLE_S = 240.0
LINT_INTERVAL_S = 10.0  # the agent's default: verdicts are at most this old


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m temper_testing.lab.observe")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--scx-layered", type=Path, required=True)
    parser.add_argument("--host-root", type=Path, default=Path("/"))
    parser.add_argument("--cgroup-root", type=Path, default=Path("/sys/fs/cgroup"))
    parser.add_argument("--tracefs", type=Path, default=Path("/sys/kernel/tracing"))
    parser.add_argument("--enforce", action="store_true", help="wait for enforcing mode")
    parser.add_argument("--trace-seconds", type=float, default=5.0)
    args = parser.parse_args()
    result = run(args)
    args.out.write_text(json.dumps(result, indent=1))
    return 0 if result.get("error") is None else 1


def run(args: argparse.Namespace) -> dict[str, Any]:
    work: Path = args.work
    (work / "pods").mkdir(parents=True, exist_ok=True)
    port = free_port()
    result: dict[str, Any] = {"error": None, "pace": round(pace(), 2)}
    with mounted_tracefs(args.tracefs), SimulatedNode(args.cgroup_root, require_cpu=False) as node:
        for p in PODS:
            running = node.add_pod(p.pod, p.containers)
            (work / "pods" / f"{p.pod.name}.json").write_text(json.dumps(p.manifest))
            if p.pod.name == PINNED_POD:
                result["pinned"] = pin(args.cgroup_root, running.container_paths["app"])
        argv = [
            *agent_argv(work, args.scx_layered),
            *("--host-root", str(args.host_root), "--tracefs", str(args.tracefs)),
            *("--listen", f"127.0.0.1:{port}"),
        ]
        with (work / AGENT_LOG).open("ab") as log:
            agent = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            result.update(observe(f"http://127.0.0.1:{port}", args.enforce, args.trace_seconds))
            result["cli"] = operate(work, args.trace_seconds)
        except (OSError, TimeoutError, ValueError, subprocess.SubprocessError) as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            result["agent_exit"] = stop_agent(agent)
            result["agent_log"] = (work / AGENT_LOG).read_text().splitlines()[-30:]
    return result


def observe(base: str, enforce: bool, trace_seconds: float) -> dict[str, Any]:
    want_mode = "enforcing" if enforce else None
    pods = {p.pod.key for p in PODS}

    def settled() -> dict[str, Any] | None:
        doc = get_json(f"{base}/observe")
        mode = doc["mode"]["mode"]
        if mode == "starting" or (want_mode and mode != want_mode):
            return None
        # Every tier read at least once (others are first read within 30 s), every pod's PSI.
        every_tier = all(t["samples"] > 0 for t in doc["tiers"] if t["pods"])
        return doc if every_tier and pods <= set(doc["pressure"]["pods"]) else None

    first = wait_for(settled, paced(SETTLE_S))
    time.sleep(LINT_INTERVAL_S + 1)  # the linter runs again, now on the settled mode
    document = get_json(f"{base}/observe")
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as answer:
        metrics = answer.read().decode()
    request = urllib.request.Request(
        f"{base}/trace?tiers=critical,low&seconds={trace_seconds}", method="POST"
    )
    with urllib.request.urlopen(request, timeout=trace_seconds + 120) as answer:
        trace = json.loads(answer.read())
    trace_path = Path(trace["path"])
    head = trace_path.read_text(errors="replace").splitlines()[:40] if trace_path.exists() else []
    return {
        "first_mode": first["mode"],
        "observe": document,
        "metrics": metrics,
        "trace": trace,
        "trace_head": head,
    }


def operate(work: Path, trace_seconds: float) -> dict[str, Any]:
    """temper-cli against the running agent: each command's exit code and JSON answer, and
    the size of the trace file it wrote."""
    trace_file = work / "cli-trace.txt"
    steps = {
        "status": ["status"],
        "diff": ["config", "show", "--diff"],
        "reload": ["reload"],
        "status_after": ["status"],
        "trace": ["trace", "capture", "--tier", "critical", "--tier", "low", "--seconds",
                  f"{trace_seconds:g}", "-o", str(trace_file)],
    }  # fmt: skip
    done: dict[str, Any] = {}
    for name, args in steps.items():
        argv = [sys.executable, "-m", "temper.cli.agentctl", "--json"]
        argv += ["--socket", str(work / "state" / "api.sock"), *args]
        answer = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        done[name] = {
            "exit": answer.returncode,
            "answer": json.loads(answer.stdout) if answer.returncode == 0 else None,
            "stderr": answer.stderr[-2000:],
        }
    done["trace_file_bytes"] = trace_file.stat().st_size if trace_file.exists() else None
    audit = work / "data" / "audit.log"
    lines = audit.read_text().splitlines() if audit.exists() else []
    done["audit"] = [json.loads(line) for line in lines]
    return done


def pin(cgroup_root: Path, container_path: str) -> str | None:
    """Narrow the container's cpuset to PINNED_CPUS, as the static CPU manager would: the
    linter's partial-affinity fault. None where the cpuset controller is off (the host)."""
    cpus = cgroup_root / container_path.strip("/") / "cpuset.cpus"
    if not cpus.exists():
        return None
    cpus.write_text(PINNED_CPUS)
    return f"{container_path} cpuset.cpus={PINNED_CPUS}"


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        document: dict[str, Any] = json.loads(answer.read())
        return document


def wait_for(check: Callable[[], dict[str, Any] | None], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            found = check()
        except (OSError, urllib.error.URLError, ValueError) as exc:
            found, last = None, exc
        if found is not None:
            return found
        time.sleep(1)
    raise TimeoutError(f"no settled observation within {timeout_s:.0f} s (last error: {last})")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def mounted_tracefs(path: Path) -> Iterator[None]:
    """tracefs at `path` for the block: mounted here unless it already is."""
    if (path / "trace").exists():
        yield
        return
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tracefs", "nodev", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", str(path)], check=False)


def find_cgroup2_root() -> Path | None:
    """A writable cgroup2 mount of this machine (the host tier makes its pods there)."""
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, kind, *_ = line.split()
        path = Path(mount)
        if kind == "cgroup2" and os.access(path, os.W_OK) and (path / "cgroup.procs").exists():
            return path
    return None


def host_root_view(work: Path, cgroup_root: Path) -> Path:
    """A host root for an agent on this machine: the real /proc, /sys and /boot, except that
    `sys/fs/cgroup` is `cgroup_root` (a cgroup2 mount where the node's pods are made)."""
    root = work / "host"
    (root / "sys" / "fs").mkdir(parents=True, exist_ok=True)
    for name in ("proc", "boot"):
        _link(root / name, Path("/") / name)
    for name in ("devices", "kernel", "bus", "class"):
        _link(root / "sys" / name, Path("/sys") / name)
    _link(root / "sys" / "fs" / "cgroup", cgroup_root)
    return root


def _link(link: Path, target: Path) -> None:
    if not link.is_symlink():
        link.symlink_to(target)


if __name__ == "__main__":
    sys.exit(main())
