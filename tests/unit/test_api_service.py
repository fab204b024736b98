"""The agent's servicer answers every call of the contract, and audits a capture's end.

The generated base class (`agent_pb2_grpc.AgentServicer`) raises NotImplementedError for each
call; it is protoc's output and never edited. This test is what makes sure none of those
defaults is ever reached: every RPC of the service is overridden by `AgentService`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from temper.api.v1 import agent_pb2 as pb
from temper.api.v1 import agent_pb2_grpc as pb_grpc
from temper.policy.tiers import Tier
from temper.serve.api import AgentService, TraceRun
from temper.serve.callers import AllowList


def test_every_call_of_the_service_is_implemented() -> None:
    calls = [method.name for method in pb.DESCRIPTOR.services_by_name["Agent"].methods]
    assert len(calls) == 6
    for call in calls:
        ours = getattr(AgentService, call)
        assert ours is not getattr(pb_grpc.AgentServicer, call), f"{call} is not implemented"


class TlsContext:
    """As much of a gRPC servicer context as the servicer asks of it: a TLS client 'ops'."""

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"transport_security_type": [b"ssl"], "x509_common_name": [b"ops"]}

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise AssertionError(f"aborted: {code} {message}")


class Tracer:
    """A control whose capture ends when the test says."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.finish = asyncio.Event()

    def start_trace(self, tiers: list[Tier], seconds: float, max_bytes: int) -> TraceRun:
        async def capture() -> tuple[Path, pb.TraceSummary]:
            await self.finish.wait()
            self.path.write_text("trace\n")
            return self.path, pb.TraceSummary(size_bytes=6)

        return TraceRun(seconds, asyncio.ensure_future(capture()))


def serve_capture(tmp_path: Path) -> tuple[AgentService, Tracer, list[dict[str, object]]]:
    tracer = Tracer(tmp_path / "trace.txt")
    records: list[dict[str, object]] = []
    service = AgentService(tracer, None, AllowList(), records.append)  # type: ignore[arg-type]
    return service, tracer, records


def outcomes(records: list[dict[str, object]]) -> list[tuple[object, object, object]]:
    return [(r["method"], r["outcome"], r["message"]) for r in records]


def test_a_capture_is_audited_when_it_starts_and_when_it_ends(tmp_path: Path) -> None:
    service, tracer, records = serve_capture(tmp_path)

    async def call() -> list[pb.CaptureTraceReply]:
        stream = service.CaptureTrace(pb.CaptureTraceRequest(duration_ms=1000), TlsContext())  # type: ignore[arg-type]
        first = await anext(stream)
        assert outcomes(records) == [("CaptureTrace", "OK", "capture started")]
        tracer.finish.set()
        return [first] + [reply async for reply in stream]

    replies = asyncio.run(call())
    assert [r.WhichOneof("reply") for r in replies][-2:] == ["summary", "chunk"]
    assert outcomes(records) == [
        ("CaptureTrace", "OK", "capture started"),
        ("CaptureTrace", "OK", "capture finished"),
    ]
    assert records[-1]["caller"] == {"via": "tls", "subject": "ops"}


def test_a_capture_the_caller_left_is_audited_as_cancelled(tmp_path: Path) -> None:
    service, _, records = serve_capture(tmp_path)

    async def call() -> None:
        stream = service.CaptureTrace(pb.CaptureTraceRequest(duration_ms=1000), TlsContext())  # type: ignore[arg-type]
        await anext(stream)  # the first progress
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        waiting.cancel()  # as gRPC does when the caller hangs up
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(call())
    assert outcomes(records) == [
        ("CaptureTrace", "OK", "capture started"),
        ("CaptureTrace", "CANCELLED", "the caller left before the end"),
    ]
