"""The agent's gRPC API end to end on the host: a real agent process with the fake scheduler,
`temper-cli` as a user runs it, and raw gRPC calls for the malformed requests a CLI never sends
(docs/reliability.md rows F5-F7). The permission tests run the CLI as uid 65534 (`setpriv`)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from apiagent import API_GROUP, CLI, ApiAgent, make_agent, unprivileged_python

from temper.api.v1 import agent_pb2 as pb
from temper.api.v1 import agent_pb2_grpc as pb_grpc
from waiting import wait_until

pytestmark = pytest.mark.timeout(300)
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[ApiAgent]:
    running = make_agent(tmp_path)
    running.start()
    try:
        yield running
    finally:
        if running.process is not None:
            running.stop()
        shutil.rmtree(running.socket.parent, ignore_errors=True)


@pytest.fixture
def stub(agent: ApiAgent) -> Iterator[pb_grpc.AgentStub]:
    yield from agent.stub()


def cli_json(agent: ApiAgent, *args: str) -> dict[str, object]:
    done = agent.cli("--json", *args)
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_status_shows_mode_scheduler_tiers_and_gate(agent: ApiAgent) -> None:
    status = cli_json(agent, "status")
    assert status["mode"] == "enforcing"
    assert status["scheduler"] == {
        "state": "enabled", "ops": "layered_1.1.2_fake", "enable_seq": "1", "ours": True
    }  # fmt: skip
    assert status["kernel_gate"]["passed"] is True  # type: ignore[index]
    assert {t["tier"]: t["pods"] for t in status["tiers"]} == {  # type: ignore[attr-defined]
        "TIER_CRITICAL": 1, "TIER_NORMAL": 1
    }  # fmt: skip
    assert len(str(status["config_sha256"])) == 64
    human = agent.cli("status")
    assert human.returncode == 0
    assert "enforcing" in human.stdout
    assert "critical" in human.stdout


def test_assign_is_planned_enforced_persisted_audited_and_survives_a_restart(
    agent: ApiAgent,
) -> None:
    before = cli_json(agent, "config", "show", "--running")["running_sha256"]
    done = agent.cli("tier", "assign", "shop/web", "high")
    assert done.returncode == 0, done.stderr
    assert "high" in done.stdout
    assert "normal" in done.stdout  # the new tier and the old
    wait_until(lambda: _enforced(agent) not in (None, before), 30, "the new config running")
    kept = json.loads((agent.data / "assignments.json").read_text())
    assert kept == {"version": 1, "assignments": {"shop/web": "high"}}
    (record,) = agent.audit()
    assert (record["method"], record["outcome"]) == ("AssignTier", "OK")
    assert (record["caller"]["uid"], record["caller"]["via"]) == (0, "unix")
    assert agent.stop() == 0
    agent.start()
    status = cli_json(agent, "status")
    assert status["assignments"] == [
        {"pod": {"namespace": "shop", "name": "web"}, "tier": "TIER_HIGH"}
    ]
    assert {t["tier"] for t in status["tiers"]} == {"TIER_CRITICAL", "TIER_HIGH"}  # type: ignore[attr-defined]
    cleared = agent.cli("tier", "clear", "shop/web")
    assert cleared.returncode == 0, cleared.stderr
    assert json.loads((agent.data / "assignments.json").read_text())["assignments"] == {}
    assert [r["method"] for r in agent.audit()] == ["AssignTier", "ClearTier"]


def _enforced(agent: ApiAgent) -> object:
    """The running config's digest once it is the planned one; None before."""
    config = cli_json(agent, "config", "show", "--diff")
    same = config["running_sha256"] == config["planned_sha256"]
    return config["running_sha256"] if same else None


def test_cli_errors_name_the_field_and_change_nothing(agent: ApiAgent) -> None:
    missing = agent.cli("tier", "assign", "shop/nope", "high")
    assert missing.returncode == 5
    assert "shop/nope is not on this node" in missing.stderr
    bad = agent.cli("tier", "assign", "shop/web", "urgent")
    assert bad.returncode == 2
    assert "urgent" in bad.stderr
    not_assigned = agent.cli("tier", "clear", "shop/web")
    assert not_assigned.returncode == 5
    assert not (agent.data / "assignments.json").exists()


def test_reload_restarts_the_scheduler_and_coalesces_a_thousand_calls(agent: ApiAgent) -> None:
    first = cli_json(agent, "reload")
    assert first["mode"] == "enforcing"
    assert int(str(first["enable_seq"])) == 2  # the kernel enabled a new scheduler instance

    async def thousand() -> list[pb.ReloadResponse | grpc.StatusCode]:
        async with grpc.aio.insecure_channel(f"unix:{agent.socket}") as channel:
            stub = pb_grpc.AgentStub(channel)

            async def one() -> pb.ReloadResponse | grpc.StatusCode:
                try:
                    answer: pb.ReloadResponse = await stub.Reload(pb.ReloadRequest())
                    return answer
                except grpc.aio.AioRpcError as exc:
                    return exc.code()

            return await asyncio.gather(*(one() for _ in range(1000)))

    answers = asyncio.run(thousand())
    refused = [a for a in answers if isinstance(a, grpc.StatusCode)]
    served = [a for a in answers if not isinstance(a, grpc.StatusCode)]
    assert set(refused) <= {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert served, "no reload was served"
    # Each reload restarts the scheduler once (enable_seq + 1). Calls that arrive while one
    # runs share the next: a handful of restarts serve them all, and no restart goes unseen.
    runs = {a.enable_seq: a.coalesced for a in served}
    print(f"{len(served)} served, {len(refused)} refused, runs {runs}")
    assert len(runs) * 10 <= len(served)
    assert sorted(runs) == list(range(3, 3 + len(runs)))
    assert sum(runs.values()) == len(served)
    assert cli_json(agent, "status")["mode"] == "enforcing"


def test_config_show_running_planned_and_diff(agent: ApiAgent) -> None:
    config = cli_json(agent, "config", "show", "--planned")
    assert json.loads(str(config["planned"]))  # the scx_layered config, as JSON
    diff = cli_json(agent, "config", "show", "--diff")
    assert diff.get("diff", "") == ""  # running what was planned
    assert diff["running_sha256"] == diff["planned_sha256"]


# -- F5: malformed requests, each refused with its status and nothing changed ------------------


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.AssignTierRequest(pod=pb.PodRef(namespace="shop", name="web"), tier=9), "tier"),
        (pb.AssignTierRequest(pod=pb.PodRef(namespace="shop", name="web")), "tier: required"),
        (pb.AssignTierRequest(tier=pb.TIER_HIGH), "pod.namespace: required"),
        (pb.AssignTierRequest(pod=pb.PodRef(namespace="..", name="web"), tier=1), "namespace"),
        (pb.AssignTierRequest(pod=pb.PodRef(namespace="shop", name="a/../b"), tier=1), "name"),
        (pb.AssignTierRequest(pod=pb.PodRef(namespace="shop", name="x\n"), tier=1), "name"),
    ],
)
def test_bad_assignments_are_invalid_arguments_naming_the_field(
    agent: ApiAgent, stub: pb_grpc.AgentStub, request_: pb.AssignTierRequest, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        stub.AssignTier(request_)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in str(refused.value.details())
    assert not (agent.data / "assignments.json").exists()
    assert agent.audit()[-1]["outcome"] == "INVALID_ARGUMENT"


def test_an_oversized_request_is_refused_before_it_is_read(
    agent: ApiAgent, stub: pb_grpc.AgentStub
) -> None:
    huge = pb.AssignTierRequest(pod=pb.PodRef(namespace="shop", name="a" * 200_000), tier=1)
    with pytest.raises(grpc.RpcError) as refused:
        stub.AssignTier(huge)
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.GetStatus(pb.GetStatusRequest()).mode == "enforcing"  # still serving


def test_an_unknown_config_view_is_an_invalid_argument(stub: pb_grpc.AgentStub) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetConfig(pb.GetConfigRequest(view=77))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT


# -- F7: trace requests beyond the bounds -------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        (pb.CaptureTraceRequest(duration_ms=60_001), "INVALID_ARGUMENT", "duration_ms"),
        (pb.CaptureTraceRequest(duration_ms=4_294_967_295), "INVALID_ARGUMENT", "duration_ms"),
        (pb.CaptureTraceRequest(max_mb=65), "INVALID_ARGUMENT", "max_mb"),
        (pb.CaptureTraceRequest(tiers=[1, 12]), "INVALID_ARGUMENT", "tiers[1]"),
        # The fake host's pods have no threads: nothing to trace, said so.
        (pb.CaptureTraceRequest(tiers=[1], duration_ms=1000), "FAILED_PRECONDITION", "no threads"),
    ],
)
def test_trace_requests_beyond_the_bounds_are_refused(
    agent: ApiAgent,
    stub: pb_grpc.AgentStub,
    request_: pb.CaptureTraceRequest,
    code: str,
    words: str,
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.CaptureTrace(request_))
    assert refused.value.code().name == code
    assert words in str(refused.value.details())
    assert not (agent.work / "state" / "traces").exists()
    assert agent.audit()[-1]["method"] == "CaptureTrace"


# -- F6: who may call ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nobody_python() -> Iterator[list[str]]:
    into = Path(tempfile.mkdtemp(prefix="temper-cli-"))
    try:
        yield unprivileged_python(into)
    finally:
        shutil.rmtree(into, ignore_errors=True)


def test_a_caller_outside_the_allow_list_is_denied_and_audited(
    agent: ApiAgent, nobody_python: list[str]
) -> None:
    denied = agent.cli("tier", "assign", "shop/web", "high", prefix=NOBODY, python=nobody_python)
    assert denied.returncode == 4, denied.stderr
    assert "uid 65534 (nobody)" in denied.stderr
    assert f"members of group {API_GROUP}" in denied.stderr  # says who is allowed
    status = agent.cli("status", prefix=NOBODY, python=nobody_python)
    assert status.returncode == 4  # reading is not open to everyone either
    assert not (agent.data / "assignments.json").exists()
    records = agent.audit()
    assert [(r["method"], r["outcome"]) for r in records] == [
        ("AssignTier", "PERMISSION_DENIED"), ("GetStatus", "PERMISSION_DENIED")
    ]  # fmt: skip
    assert records[0]["caller"]["uid"] == 65534


def test_a_member_of_the_api_group_is_allowed(agent: ApiAgent, nobody_python: list[str]) -> None:
    member = ["setpriv", "--reuid=65534", "--regid=65534", f"--groups={API_GROUP}"]
    done = agent.cli("--json", "status", prefix=member, python=nobody_python)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["mode"] == "enforcing"


def test_the_cli_says_when_the_agent_is_not_running(tmp_path: Path) -> None:
    gone = make_agent(tmp_path)
    done = gone.cli("status")
    shutil.rmtree(gone.socket.parent)
    assert done.returncode == 3
    assert "not listening" in done.stderr
    assert str(gone.socket) in done.stderr


# -- TCP with mutual TLS -------------------------------------------------------------------------


def test_tls_callers_need_a_certificate_from_the_configured_ca(tmp_path: Path) -> None:
    from temper_testing.kubetest.tinyca import TinyCA  # noqa: PLC0415

    ca, stranger = TinyCA(), TinyCA()
    pki = tmp_path / "pki"
    pki.mkdir()
    (pki / "ca.crt").write_bytes(ca.cert_pem)
    ca.issue(pki / "server", "temper-agent", hosts=["127.0.0.1"])
    ca.issue(pki / "dashboard", "temper-dashboard")
    stranger.issue(pki / "stranger", "temper-dashboard")
    agent = make_agent(tmp_path / "node")
    agent.start(
        *("--api-listen", "127.0.0.1:0", "--api-tls-cert", str(pki / "server.crt")),
        *("--api-tls-key", str(pki / "server.key"), "--api-client-ca", str(pki / "ca.crt")),
    )
    try:
        serving = str(agent.events("api")[-1]["serving"])
        address = serving.rsplit(", ", maxsplit=1)[-1]
        assert address.startswith("127.0.0.1:")

        def over_tls(client: str, *args: str) -> subprocess.CompletedProcess[str]:
            argv = [*CLI, "--address", address, "--tls-ca", str(pki / "ca.crt")]
            argv += [
                "--tls-cert",
                str(pki / f"{client}.crt"),
                "--tls-key",
                str(pki / f"{client}.key"),
            ]
            return subprocess.run(
                [*argv, *args], capture_output=True, text=True, timeout=60, check=False
            )

        done = over_tls("dashboard", "tier", "assign", "shop/web", "low")
        assert done.returncode == 0, done.stderr
        (record,) = agent.audit()
        assert record["caller"] == {"via": "tls", "subject": "temper-dashboard"}
        refused = over_tls("stranger", "status")
        assert refused.returncode == 3, refused.stderr  # the handshake fails: no call is made
        assert len(agent.audit()) == 1
    finally:
        agent.stop()
        shutil.rmtree(agent.socket.parent, ignore_errors=True)


HOLD_CONNECTIONS = """
import socket, sys, time
socks = [socket.socket(socket.AF_UNIX) for _ in range(17)]
for s in socks:
    s.connect(sys.argv[1])
    s.settimeout(5)
closed = sum(1 for s in socks if s.recv(64) == b"")
print(closed, flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_one_user_cannot_take_every_connection(agent: ApiAgent) -> None:
    """An unprivileged user may connect (and be refused), but holds at most 16 connections,
    and root is served meanwhile."""
    python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    holder = subprocess.Popen(
        [*NOBODY, python, "-c", HOLD_CONNECTIONS, str(agent.socket), "10"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "1"  # the 17th was closed, 16 are held
        assert cli_json(agent, "status")["mode"] == "enforcing"
    finally:
        holder.kill()
        holder.communicate()
