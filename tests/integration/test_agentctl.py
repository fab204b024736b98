"""`temper-cli` end to end against a fake agent: a real gRPC server on a unix socket in tmp_path.

The fake (`FakeAgent`) answers every call with a canned message, records each request, and can
be told to fail a call with a status, so the whole path is real: argparse, the client, gRPC over
the socket, the translation of statuses into exit codes and one-line messages. Most tests call
`main(argv)` in-process and read capsys; a few run `temper-cli` as a process to prove the entry
point, its exit codes and that nothing ever prints a traceback. Tests against the real agent live
with the agent's tests.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple, TypeVar

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from temper.api.client import AgentClient
from temper.api.errors import NotFound
from temper.api.v1 import agent_pb2 as pb
from temper.api.v1 import agent_pb2_grpc as pb_grpc
from temper.cli.agentctl import main
from temper.policy.assignments import PodKey
from temper.policy.tiers import Tier
from temper_testing.kubetest.tinyca import TinyCA

Answer = TypeVar("Answer")
SHA = "3f5a9c1d2e4b" + "7" * 52
TRACE_BYTES = bytes(range(256)) * 10  # 2,560 bytes, sent in 1 KiB chunks


def canned_status() -> pb.Status:
    return pb.Status(
        mode="enforcing",
        reason="scx_layered runs the newest plan",
        kernel_gate=pb.KernelGate(passed=True),
        scheduler=pb.Scheduler(state="enabled", ops="layered", enable_seq=7, ours=True),
        config_sha256=SHA,
        tiers=[
            pb.TierCount(tier=pb.TIER_CRITICAL, pods=2),
            pb.TierCount(tier=pb.TIER_NORMAL, pods=5),
        ],
        lint=pb.LintSummary(passed=12, failed=1, failing=["critical-exclusive"]),
        assignments=[
            pb.Assignment(pod=pb.PodRef(namespace="shop", name="checkout"), tier=pb.TIER_HIGH)
        ],
        agent_version="0.4.0",
        node_name="node-a",
    )


def trace_replies(data: bytes = TRACE_BYTES) -> list[pb.CaptureTraceReply]:
    """What a 3 s capture streams: progress each second, the summary, then the file."""
    progress = [
        pb.CaptureTraceReply(progress=pb.TraceProgress(elapsed_ms=ms, duration_ms=3000))
        for ms in (1000, 2000, 3000)
    ]
    summary = pb.TraceSummary(
        file="/var/lib/temper/traces/capture-1.dat",
        size_bytes=len(data),
        events=4242,
        lost_events=3,
        threads=17,
        wake_to_run=[
            pb.WakeToRun(tier=pb.TIER_LOW, count=10, p50_us=40, p90_us=80, p99_us=90, max_us=95),
            pb.WakeToRun(
                tier=pb.TIER_CRITICAL, count=900, p50_us=4.5, p90_us=9, p99_us=21, max_us=88.25
            ),
        ],
    )
    chunks = [
        pb.CaptureTraceReply(chunk=data[start : start + 1024])
        for start in range(0, len(data), 1024)
    ]
    return [*progress, pb.CaptureTraceReply(summary=summary), *chunks]


class FakeAgent(pb_grpc.AgentServicer):
    """Canned answers, recorded requests; `fail` makes every call end with that status.

    `fail_trace_after` fails the capture stream after that many replies instead, and `stall`
    makes GetStatus wait until the test ends (for deadlines).
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, Message]] = []
        self.fail: tuple[grpc.StatusCode, str] | None = None
        self.fail_trace_after: int | None = None
        self.stall = False
        self.released = threading.Event()
        self.status = canned_status()
        self.assigned = pb.AssignTierResponse(
            assignment=pb.Assignment(
                pod=pb.PodRef(namespace="shop", name="checkout"), tier=pb.TIER_HIGH
            ),
            previous_tier=pb.TIER_NORMAL,
        )
        self.cleared = pb.ClearTierResponse(tier=pb.TIER_NORMAL)
        self.reloaded = pb.ReloadResponse(
            mode="enforcing", reason="reloaded", config_sha256=SHA, enable_seq=8, coalesced=3
        )
        self.configs = pb.GetConfigResponse(
            running='[{"name": "critical"}]',
            running_sha256=SHA,
            planned='[{"name": "high"}]\n',
            planned_sha256="9" * 64,
            diff='-[{"name": "critical"}]\n+[{"name": "high"}]\n',
        )
        self.traces = trace_replies()

    def _answer(
        self, method: str, request: Message, context: grpc.ServicerContext, answer: Answer
    ) -> Answer:
        self.requests.append((method, request))
        if self.fail is not None:
            context.abort(*self.fail)
        return answer

    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext) -> pb.Status:
        if self.stall:
            self.released.wait(10)
        return self._answer("GetStatus", request, context, self.status)

    def AssignTier(
        self, request: pb.AssignTierRequest, context: grpc.ServicerContext
    ) -> pb.AssignTierResponse:
        return self._answer("AssignTier", request, context, self.assigned)

    def ClearTier(
        self, request: pb.ClearTierRequest, context: grpc.ServicerContext
    ) -> pb.ClearTierResponse:
        return self._answer("ClearTier", request, context, self.cleared)

    def Reload(self, request: pb.ReloadRequest, context: grpc.ServicerContext) -> pb.ReloadResponse:
        return self._answer("Reload", request, context, self.reloaded)

    def GetConfig(
        self, request: pb.GetConfigRequest, context: grpc.ServicerContext
    ) -> pb.GetConfigResponse:
        return self._answer("GetConfig", request, context, self.configs)

    def CaptureTrace(
        self, request: pb.CaptureTraceRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.CaptureTraceReply]:
        self._answer("CaptureTrace", request, context, None)
        for sent, reply in enumerate(self.traces):
            if sent == self.fail_trace_after:
                context.abort(grpc.StatusCode.INTERNAL, "tracefs went away")
            yield reply

    def calls(self) -> list[str]:
        return [method for method, _ in self.requests]


class Agent(NamedTuple):
    fake: FakeAgent
    socket: Path


@contextmanager
def serve(
    fake: FakeAgent, address: str, credentials: grpc.ServerCredentials | None = None
) -> Iterator[int]:
    """A real gRPC server for `fake` while the block runs; gives the bound port."""
    pool = futures.ThreadPoolExecutor(max_workers=4)
    server = grpc.server(pool)
    pb_grpc.add_AgentServicer_to_server(fake, server)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    server.start()
    try:
        yield port
    finally:
        fake.released.set()
        server.stop(None).wait()
        pool.shutdown(wait=True)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    fake = FakeAgent()
    path = tmp_path / "api.sock"
    with serve(fake, f"unix:{path}"):
        yield Agent(fake, path)


class Run(NamedTuple):
    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Run:
    """`temper-cli <argv>` in-process; argparse's exits become their code."""
    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else -1
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def run_agentctl(capsys: pytest.CaptureFixture[str], agent: Agent, *argv: str | Path) -> Run:
    return run_cli(capsys, "--socket", agent.socket, *argv)


def assert_one_error_line(err: str, command: str, *fragments: str) -> None:
    """stderr is one `temper-cli: COMMAND: ...` line holding every fragment; no traceback."""
    assert err.startswith(f"temper-cli: {command}: "), err
    assert err.count("\n") == 1, err
    assert err.endswith("\n"), err
    for fragment in fragments:
        assert fragment in err, err


def temper_cli() -> Path:
    return Path(sys.executable).parent / "temper-cli"


# -- status ------------------------------------------------------------------------------------


def test_status_prints_a_short_block_for_people(
    capsys: pytest.CaptureFixture[str], agent: Agent
) -> None:
    result = run_agentctl(capsys, agent, "status")
    assert (result.code, result.err) == (0, "")
    lines = result.out.splitlines()
    assert lines[:7] == [
        "Node:         node-a (temper-agent 0.4.0)",
        "Mode:         enforcing",
        "Reason:       scx_layered runs the newest plan",
        "Kernel gate:  passed",
        "Scheduler:    enabled, layered (ours), enable_seq 7",
        "Config:       3f5a9c1d2e4b",
        "Linter:       12 passed, 1 failed, 0 unknown; failing: critical-exclusive",
    ]
    table = [line.split() for line in lines[8:14]]
    assert table == [
        ["TIER", "PODS"],
        ["critical", "2"],
        ["high", "0"],
        ["normal", "5"],
        ["low", "0"],
        ["background", "0"],
    ]
    assert lines[15:] == ["Assignments:", "  POD            TIER", "  shop/checkout  high"]
    assert agent.fake.calls() == ["GetStatus"]


def test_status_of_a_node_without_sched_ext(
    capsys: pytest.CaptureFixture[str], agent: Agent
) -> None:
    agent.fake.status = pb.Status(
        mode="refused",
        reason="no sched_ext",
        kernel_gate=pb.KernelGate(reason="CONFIG_SCHED_CLASS_EXT is off"),
    )
    result = run_agentctl(capsys, agent, "status")
    assert result.code == 0
    assert "Kernel gate:  not passed: CONFIG_SCHED_CLASS_EXT is off\n" in result.out
    assert "Scheduler:    no sched_ext in this kernel\n" in result.out
    assert "Config:       none running\n" in result.out
    assert result.out.endswith("Assignments:  none\n")


@pytest.mark.parametrize("where", ["before", "after"])
def test_status_json_is_the_message_with_every_field(
    capsys: pytest.CaptureFixture[str], agent: Agent, where: str
) -> None:
    argv = ["--json", "status"] if where == "before" else ["status", "--json"]
    result = run_agentctl(capsys, agent, *argv)
    assert (result.code, result.err) == (0, "")
    document = json.loads(result.out)
    assert document == MessageToDict(
        canned_status(),
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    assert document["scheduler"]["enable_seq"] == "7"  # uint64: a string in proto3 JSON
    assert document["tiers"][0] == {"tier": "TIER_CRITICAL", "pods": 2}
    assert document["lint"]["unknown"] == 0  # defaults are printed, not left out
    assert document["kernel_gate"]["reason"] == ""


# -- tier assign / clear -----------------------------------------------------------------------


def test_tier_assign_sends_the_pod_and_tier_and_says_what_changed(
    capsys: pytest.CaptureFixture[str], agent: Agent
) -> None:
    result = run_agentctl(capsys, agent, "tier", "assign", "shop/checkout", "high")
    assert (result.code, result.out, result.err) == (0, "shop/checkout: high (was normal)\n", "")
    assert agent.fake.requests == [
        (
            "AssignTier",
            pb.AssignTierRequest(
                pod=pb.PodRef(namespace="shop", name="checkout"), tier=pb.TIER_HIGH
            ),
        )
    ]


def test_tier_assign_of_a_pod_with_no_known_previous_tier(
    capsys: pytest.CaptureFixture[str], agent: Agent
) -> None:
    agent.fake.assigned.previous_tier = pb.TIER_UNSPECIFIED
    result = run_agentctl(capsys, agent, "tier", "assign", "shop/checkout", "HIGH")
    assert result.out == "shop/checkout: high (previous tier unknown)\n"


def test_tier_clear_sends_the_pod_and_says_the_tier_now(
    capsys: pytest.CaptureFixture[str], agent: Agent
) -> None:
    result = run_agentctl(capsys, agent, "tier", "clear", "shop/checkout")
    assert result.code == 0
    assert result.out == "shop/checkout: assignment cleared, now normal\n"
    assert agent.fake.requests == [
        ("ClearTier", pb.ClearTierRequest(pod=pb.PodRef(namespace="shop", name="checkout")))
    ]
    agent.fake.cleared.tier = pb.TIER_UNSPECIFIED
    result = run_agentctl(capsys, agent, "tier", "clear", "shop/checkout", "--json")
    assert result.out == '{\n  "tier": "TIER_UNSPECIFIED"\n}\n'


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["tier", "assign", "checkout", "high"], "argument NAMESPACE/NAME: pod 'checkout'"),
        (["tier", "assign", "Shop/checkout", "high"], "argument NAMESPACE/NAME: pod.namespace"),
        (["tier", "assign", "shop/check_out", "high"], "argument NAMESPACE/NAME: pod.name"),
        (["tier", "assign", "shop/checkout", "hgh"], "argument TIER: unknown tier 'hgh'"),
        (["tier", "clear", "shop/"], "argument NAMESPACE/NAME: pod.name: required"),
        (["trace", "capture", "--seconds", "0", "-o", "t.dat"], "argument --seconds: 0: more"),
        (["trace", "capture", "--seconds", "61", "-o", "t.dat"], "at most 60 seconds"),
        (["trace", "capture", "--seconds", "nan", "-o", "t.dat"], "not a finite number"),
        (["trace", "capture", "--seconds", "1", "--max-mb", "0", "-o", "t"], "1 to 64 MiB"),
        (["trace", "capture", "--seconds", "1", "--max-mb", "65", "-o", "t"], "1 to 64 MiB"),
        (["trace", "capture", "--seconds", "1", "--tier", "x", "-o", "t"], "argument --tier"),
        (["config", "show", "--planned", "--diff"], "not allowed with argument --planned"),
        (["--timeout", "0", "status"], "argument --timeout: 0: more than 0 seconds"),
        (["--address", "node-a", "status"], "argument --address: 'node-a': expected HOST:PORT"),
        (["--address", "node-a:1", "status"], "--socket and --address: give one"),
    ],
)
def test_local_validation_is_a_usage_error_and_sends_nothing(
    capsys: pytest.CaptureFixture[str], agent: Agent, argv: list[str], fragment: str
) -> None:
    result = run_agentctl(capsys, agent, *argv)
    assert result.code == 2
    assert result.out == ""
    assert fragment in result.err
    assert "Traceback" not in result.err
    assert agent.fake.requests == []


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--address", "node-a:1", "status"], "--address needs --tls-ca, --tls-cert and --tls-key"),
        (["--address", "node-a:1", "--tls-ca", "ca.pem", "status"], "--address needs"),
        (["--tls-ca", "ca.pem", "status"], "--tls-ca, --tls-cert and --tls-key go with --address"),
        (["--address", "[::1]:70000", "status"], "'[::1]:70000': expected HOST:PORT"),
    ],
)
def test_tls_options_go_together_with_address(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    result = run_cli(capsys, *argv)
    assert (result.code, result.out) == (2, "")
    assert fragment in result.err


# -- what the agent's statuses become ----------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "details", "exit_code", "message"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "tier: required", 2, "invalid argument: tier: required"),
        (
            grpc.StatusCode.PERMISSION_DENIED,
            "uid 1000 may not; allowed: uid 0, group temper",
            4,
            "permission denied: uid 1000 may not; allowed: uid 0, group temper",
        ),
        (grpc.StatusCode.UNAUTHENTICATED, "no client certificate", 4, "permission denied: no"),
        (grpc.StatusCode.NOT_FOUND, "pod shop/checkout is not on this node", 5, "not found: pod"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "a capture already runs", 6, "busy: a capture"),
        (grpc.StatusCode.FAILED_PRECONDITION, "safe mode", 1, "refused: safe mode"),
        (grpc.StatusCode.INTERNAL, "see its log", 1, "failed (INTERNAL): see its log"),
        (grpc.StatusCode.UNIMPLEMENTED, "Method not found!", 1, "failed (UNIMPLEMENTED)"),
        (
            grpc.StatusCode.UNAVAILABLE,
            "the agent is starting: no pod list yet",
            3,
            "is not available: the agent is starting: no pod list yet",
        ),
    ],
)
def test_each_status_has_its_exit_code_and_one_line(
    capsys: pytest.CaptureFixture[str],
    agent: Agent,
    *,
    code: grpc.StatusCode,
    details: str,
    exit_code: int,
    message: str,
) -> None:
    agent.fake.fail = (code, details)
    result = run_agentctl(capsys, agent, "tier", "assign", "shop/checkout", "high")
    assert (result.code, result.out) == (exit_code, "")
    assert_one_error_line(result.err, "tier assign", message)
    assert "--socket" not in result.err  # the agent was reached: the address is right


def test_the_client_raises_typed_errors_that_keep_the_agents_details(agent: Agent) -> None:
    agent.fake.fail = (grpc.StatusCode.NOT_FOUND, "pod shop/gone is not on this node")
    with AgentClient.unix(agent.socket) as client, pytest.raises(NotFound) as caught:
        client.assign_tier(PodKey("shop", "gone"), Tier.LOW)
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    assert caught.value.details == "pod shop/gone is not on this node"
    assert isinstance(caught.value.__cause__, grpc.RpcError)


def test_a_socket_connect_refused_with_eacces_is_permission_denied(
    capsys: pytest.CaptureFixture[str], agent: Agent
) -> None:
    """gRPC reports EACCES on connect as UNAVAILABLE with these words; as root a test cannot
    make the kernel refuse, so the fake says them."""
    agent.fake.fail = (
        grpc.StatusCode.UNAVAILABLE,
        f"failed to connect to all addresses; last error: FAILED_PRECONDITION: unix:{agent.socket}:"
        f" connect failed: addr: unix:{agent.socket} error: Permission denied",
    )
    result = run_agentctl(capsys, agent, "status")
    assert result.code == 4
    assert (
        result.err == f"temper-cli: status: cannot connect to {agent.socket}: permission denied\n"
    )


def test_a_slow_answer_is_a_failed_call_naming_the_deadline(
    capsys: pytest.CaptureFixture[str], agent: Agent
) -> None:
    agent.fake.stall = True
    result = run_agentctl(capsys, agent, "--timeout", "0.3", "status")
    assert result.code == 1
    assert_one_error_line(
        result.err, "status", "the agent did not answer within 0.3 s (--timeout to wait longer)"
    )


# -- an agent that is not there ----------------------------------------------------------------


def test_no_socket_says_the_agent_is_not_listening_and_how_to_point_elsewhere(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "api.sock"
    result = run_cli(capsys, "--socket", missing, "status")
    assert result.code == 3
    assert result.err == (
        f"temper-cli: status: the agent is not listening on {missing} (no such file): "
        "is temper-agent running? (--socket or TEMPER_SOCKET to point elsewhere)\n"
    )


def test_the_socket_comes_from_temper_socket_when_not_given(
    capsys: pytest.CaptureFixture[str], agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPER_SOCKET", str(agent.socket))
    result = run_cli(capsys, "status")
    assert result.code == 0
    assert agent.fake.calls() == ["GetStatus"]


def test_a_stale_socket_is_connection_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    stale = tmp_path / "api.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(stale))  # bound, never listening: what a crashed agent leaves
    result = run_cli(capsys, "--socket", stale, "reload")
    assert result.code == 3
    assert_one_error_line(
        result.err, "reload", f"not listening on {stale} (connection refused)", "--socket"
    )


def test_a_file_that_is_not_a_socket(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    path.write_text("")
    result = run_cli(capsys, "--socket", path, "status")
    assert result.code == 3
    assert_one_error_line(result.err, "status", f"not listening on {path} (not a socket)")


def test_a_socket_nobody_accepts_on_is_unreachable_before_the_deadline(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The connection attempt gets half the deadline, so "not reached" is told from "slow"."""
    path = tmp_path / "api.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen()  # connections queue, but nobody answers
        result = run_cli(capsys, "--socket", path, "--timeout", "0.4", "status")
    assert result.code == 3
    assert_one_error_line(
        result.err,
        "status",
        f"cannot connect to the agent at {path}: the connection attempt timed out",
        "--socket",
    )


# -- reload and config -------------------------------------------------------------------------


def test_reload_prints_where_it_left_the_node(
    capsys: pytest.CaptureFixture[str], agent: Agent
) -> None:
    result = run_agentctl(capsys, agent, "reload")
    assert result.code == 0
    assert result.out.splitlines() == [
        "Mode:        enforcing",
        "Reason:      reloaded",
        "Config:      3f5a9c1d2e4b",
        "enable_seq:  8",
        "Answered:    3 calls (concurrent reloads share one)",
    ]
    assert agent.fake.requests == [("Reload", pb.ReloadRequest())]


@pytest.mark.parametrize(
    ("flags", "view", "printed"),
    [
        ([], pb.CONFIG_VIEW_RUNNING, '[{"name": "critical"}]\n'),
        (["--running"], pb.CONFIG_VIEW_RUNNING, '[{"name": "critical"}]\n'),
        (["--planned"], pb.CONFIG_VIEW_PLANNED, '[{"name": "high"}]\n'),
        (["--diff"], pb.CONFIG_VIEW_DIFF, '-[{"name": "critical"}]\n+[{"name": "high"}]\n'),
    ],
)
def test_config_show_prints_the_view_asked_for_as_is(
    capsys: pytest.CaptureFixture[str],
    agent: Agent,
    flags: list[str],
    view: pb.ConfigView.ValueType,
    printed: str,
) -> None:
    result = run_agentctl(capsys, agent, "config", "show", *flags)
    assert (result.code, result.out, result.err) == (0, printed, "")
    assert agent.fake.requests == [("GetConfig", pb.GetConfigRequest(view=view))]


def test_config_show_says_on_stderr_when_nothing_runs(
    capsys: pytest.CaptureFixture[str], agent: Agent
) -> None:
    agent.fake.configs = pb.GetConfigResponse(planned="[]")
    result = run_agentctl(capsys, agent, "config", "show")
    assert (result.code, result.out) == (0, "")
    assert_one_error_line(result.err, "config show", "no scheduler runs", "--planned")
    result = run_agentctl(capsys, agent, "config", "show", "--json")
    assert json.loads(result.out)["running"] == ""


# -- trace capture -----------------------------------------------------------------------------


def test_trace_capture_writes_the_file_and_summarizes_it(
    capsys: pytest.CaptureFixture[str], agent: Agent, tmp_path: Path
) -> None:
    output = tmp_path / "trace.dat"
    argv = ["trace", "capture", "--tier", "critical", "--tier", "low", "--seconds", "3"]
    result = run_agentctl(capsys, agent, *argv, "--max-mb", "8", "-o", output)
    assert result.code == 0, result.err
    assert output.read_bytes() == TRACE_BYTES
    assert sorted(tmp_path.iterdir()) == [agent.socket, output]  # no trace.dat.part left
    assert result.err == "recording 1/3 s\nrecording 2/3 s\nrecording 3/3 s\n"
    lines = result.out.splitlines()
    assert lines[:3] == [
        f"File:       {output} (2.5 KiB; on the node: /var/lib/temper/traces/capture-1.dat)",
        "Events:     4242 from 17 threads, 3 lost",
        "Truncated:  no",
    ]
    table = [line.split() for line in lines[4:]]
    assert table[0] == [
        "TIER",
        "WAKEUPS",
        "P50",
        "µs",
        "P90",
        "µs",
        "P99",
        "µs",
        "MAX",
        "µs",
        "NEVER",
        "RAN",
    ]
    assert table[1:] == [
        ["critical", "900", "4.5", "9.0", "21.0", "88.2", "0"],
        ["low", "10", "40.0", "80.0", "90.0", "95.0", "0"],
    ]
    assert agent.fake.requests == [
        (
            "CaptureTrace",
            pb.CaptureTraceRequest(
                tiers=[pb.TIER_CRITICAL, pb.TIER_LOW], duration_ms=3000, max_mb=8
            ),
        )
    ]


def test_trace_capture_redraws_one_progress_line_on_a_terminal(
    capsys: pytest.CaptureFixture[str],
    agent: Agent,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    output = tmp_path / "trace.dat"
    result = run_agentctl(capsys, agent, "trace", "capture", "--seconds", "3", "-o", output)
    assert result.code == 0
    assert terminal.getvalue() == "\rrecording 1/3 s\rrecording 2/3 s\rrecording 3/3 s\n"
    request = agent.fake.requests[0][1]
    assert request == pb.CaptureTraceRequest(duration_ms=3000)  # all tiers, the agent's size bound


def test_trace_capture_json_prints_the_summary(
    capsys: pytest.CaptureFixture[str], agent: Agent, tmp_path: Path
) -> None:
    output = tmp_path / "trace.dat"
    result = run_agentctl(
        capsys, agent, "--json", "trace", "capture", "--seconds", "3", "-o", output
    )
    assert result.code == 0
    summary = json.loads(result.out)
    assert summary["size_bytes"] == str(len(TRACE_BYTES))
    assert summary["truncated"] is False
    assert [row["tier"] for row in summary["wake_to_run"]] == ["TIER_LOW", "TIER_CRITICAL"]


def test_a_capture_that_fails_midway_leaves_no_file(
    capsys: pytest.CaptureFixture[str], agent: Agent, tmp_path: Path
) -> None:
    agent.fake.fail_trace_after = 5  # progress x3, the summary, one chunk of three
    output = tmp_path / "trace.dat"
    result = run_agentctl(capsys, agent, "trace", "capture", "--seconds", "3", "-o", output)
    assert result.code == 1
    assert_one_error_line(
        result.err.splitlines(keepends=True)[-1], "trace capture", "failed (INTERNAL): tracefs"
    )
    assert sorted(tmp_path.iterdir()) == [agent.socket]  # neither trace.dat nor trace.dat.part


def test_a_capture_whose_file_comes_short_leaves_no_file(
    capsys: pytest.CaptureFixture[str], agent: Agent, tmp_path: Path
) -> None:
    agent.fake.traces = trace_replies()[:-1]  # the last chunk never comes
    output = tmp_path / "trace.dat"
    result = run_agentctl(capsys, agent, "trace", "capture", "--seconds", "3", "-o", output)
    assert result.code == 1
    assert result.err.endswith(
        "temper-cli: trace capture: the agent sent 2048 of the file's 2560 bytes\n"
    )
    assert sorted(tmp_path.iterdir()) == [agent.socket]


def test_trace_capture_refuses_to_overwrite_unless_forced(
    capsys: pytest.CaptureFixture[str], agent: Agent, tmp_path: Path
) -> None:
    output = tmp_path / "trace.dat"
    output.write_bytes(b"keep me")
    result = run_agentctl(capsys, agent, "trace", "capture", "--seconds", "3", "-o", output)
    assert result.code == 2
    assert_one_error_line(result.err, "trace capture", f"{output} exists (--force to overwrite")
    assert output.read_bytes() == b"keep me"
    assert agent.fake.requests == []
    argv = ["trace", "capture", "--seconds", "3", "-o", output, "--force"]
    assert run_agentctl(capsys, agent, *argv).code == 0
    assert output.read_bytes() == TRACE_BYTES


def test_trace_capture_that_cannot_rename_its_file_leaves_no_part(
    capsys: pytest.CaptureFixture[str], agent: Agent, tmp_path: Path
) -> None:
    output = tmp_path / "trace.dat"
    output.mkdir()
    argv = ["trace", "capture", "--seconds", "3", "-o", output, "--force"]
    result = run_agentctl(capsys, agent, *argv)
    assert result.code == 1
    assert_one_error_line(
        result.err.splitlines(keepends=True)[-1], "trace capture", f"{output}: Is a directory"
    )
    assert sorted(tmp_path.iterdir()) == [agent.socket, output]


def test_trace_capture_into_a_missing_directory_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], agent: Agent, tmp_path: Path
) -> None:
    output = tmp_path / "no" / "trace.dat"
    result = run_agentctl(capsys, agent, "trace", "capture", "--seconds", "1", "-o", output)
    assert result.code == 2
    assert_one_error_line(result.err, "trace capture", "cannot write", "No such file")
    assert agent.fake.requests == []


# -- mutual TLS --------------------------------------------------------------------------------


def test_over_tcp_with_mutual_tls(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ca, stranger = TinyCA(), TinyCA()
    ca.issue(tmp_path / "agent", "node-a", hosts=["127.0.0.1"])
    ca.issue(tmp_path / "client", "operator")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
    (tmp_path / "stranger.crt").write_bytes(stranger.cert_pem)
    credentials = grpc.ssl_server_credentials(
        [((tmp_path / "agent.key").read_bytes(), (tmp_path / "agent.crt").read_bytes())],
        root_certificates=ca.cert_pem,
        require_client_auth=True,
    )
    ours = ["--tls-cert", tmp_path / "client.crt", "--tls-key", tmp_path / "client.key"]
    fake = FakeAgent()
    with serve(fake, "127.0.0.1:0", credentials) as port:
        address = ["--address", f"127.0.0.1:{port}"]
        result = run_cli(capsys, *address, "--tls-ca", tmp_path / "ca.crt", *ours, "status")
        assert (result.code, result.err) == (0, "")
        assert result.out.startswith("Node:         node-a")

        missing = tmp_path / "nope.crt"
        result = run_cli(capsys, *address, "--tls-ca", missing, *ours, "status")
        assert result.code == 2
        assert_one_error_line(result.err, "status", f"--tls-ca {missing}: No such file")

        # An agent whose certificate our CA did not sign: one line, even from a real process,
        # where gRPC's core would add its own log line about the handshake.
        done = subprocess.run(
            [temper_cli(), *address, "--tls-ca", tmp_path / "stranger.crt", *ours, "status"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 3
        assert_one_error_line(
            done.stderr,
            "status",
            "TLS handshake failed",
            "CERTIFICATE_VERIFY_FAILED",
            "(check --address and the --tls-* files)",
        )
    assert fake.calls() == ["GetStatus"]


# -- the installed command ---------------------------------------------------------------------


def test_the_entry_point_runs_as_a_process(agent: Agent, tmp_path: Path) -> None:
    command = temper_cli()
    done = subprocess.run(
        [command, "--socket", agent.socket, "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert "Mode:         enforcing" in done.stdout
    agent.fake.fail = (grpc.StatusCode.PERMISSION_DENIED, "allowed: uid 0, group temper")
    done = subprocess.run(
        [command, "--socket", agent.socket, "tier", "clear", "shop/checkout"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 4
    assert done.stderr == (
        "temper-cli: tier clear: permission denied: allowed: uid 0, group temper\n"
    )
    done = subprocess.run(
        [command, "--socket", tmp_path / "gone.sock", "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    assert "is temper-agent running?" in done.stderr
