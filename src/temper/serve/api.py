"""The agent's gRPC API (`proto/temper/api/v1/agent.proto`): callers, checks, audit, answers.

Every call goes the same way:

1. the caller is named (`temper.serve.callers`): a local process by its kernel credentials, or a
   TLS client by its certificate; anyone else, or anyone the allow-list does not admit, gets
   PERMISSION_DENIED naming who is allowed, and the refusal is audited;
2. the request is checked before anything happens, each problem naming its field
   (INVALID_ARGUMENT); proto3 enums are open, so unknown numbers are caught here too;
3. the agent acts through `Control` (`temper.agent.control.NodeControl` implements it); its
   refusals carry their kind (`CallRefused`), mapped to one gRPC status each;
4. a call that changes the node is audited with its outcome, whatever it was.

Bounds (docs/reliability.md row F5): requests over 64 KiB are refused by gRPC itself
(RESOURCE_EXHAUSTED); at most `max_concurrent_rpcs` calls run at once and the rest are refused
the same way; concurrent reloads are coalesced by the agent (`temper.agent.control`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

# The agent forks scx_layered; gRPC's fork handlers are for children that use gRPC, which ours
# never do, and with them on it logs a warning at every fork. Set before gRPC is loaded.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc
from google.protobuf import text_format
from google.protobuf.message import Message

from temper.api.v1 import agent_pb2 as pb
from temper.api.v1 import agent_pb2_grpc as pb_grpc
from temper.api.wire import pod_from_wire, tier_from_wire
from temper.policy.assignments import PodKey, check_pod_key
from temper.policy.errors import InputError, TraceRequestError
from temper.policy.tiers import Tier
from temper.serve.callers import AllowList, Caller, UnixFront

log = logging.getLogger("temper.serve")
T = TypeVar("T")
MAX_REQUEST_BYTES = 64 * 1024
MAX_CONCURRENT_RPCS = 128
CHUNK_BYTES = 64 * 1024
PROGRESS_EVERY_S = 1.0
MAX_DURATION_MS = 60_000
MAX_TRACE_MB = 64


class Refusal(enum.Enum):
    """Why the agent declined a well-formed call; each is one gRPC status."""

    NOT_FOUND = grpc.StatusCode.NOT_FOUND
    BUSY = grpc.StatusCode.RESOURCE_EXHAUSTED
    NOT_READY = grpc.StatusCode.UNAVAILABLE
    PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


class CallRefused(Exception):
    """The agent declines this call (`kind` says why); the caller hears it as one gRPC status.
    Not `temper.api.errors.Refused`, which is how a client hears FAILED_PRECONDITION."""

    def __init__(self, kind: Refusal, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class TraceRun:
    """A capture under way: `done` ends with the file and its summary."""

    duration_s: float
    done: asyncio.Task[tuple[Path, pb.TraceSummary]]


class Control(Protocol):
    """What the API asks of the agent."""

    def status(self) -> pb.Status: ...
    async def assign_tier(self, pod: PodKey, tier: Tier) -> pb.AssignTierResponse: ...
    async def clear_tier(self, pod: PodKey) -> pb.ClearTierResponse: ...
    async def reload(self) -> pb.ReloadResponse: ...
    def config(self) -> pb.GetConfigResponse: ...
    def start_trace(self, tiers: list[Tier], seconds: float, max_bytes: int) -> TraceRun: ...


Audit = Callable[[dict[str, object]], None]
Context = grpc.aio.ServicerContext[Any, Any]


class AgentService(pb_grpc.AgentServicer):
    def __init__(
        self, control: Control, front: UnixFront | None, allow: AllowList, audit: Audit
    ) -> None:
        self.control = control
        self.front = front
        self.allow = allow
        self.audit = audit
        self._refusals = RefusalBudget()

    async def GetStatus(self, request: pb.GetStatusRequest, context: Context) -> pb.Status:
        await self._admit(context, "GetStatus", request)
        status = _sync(self.control.status)
        return await self._answer(context, "GetStatus", request, None, status)

    async def AssignTier(
        self, request: pb.AssignTierRequest, context: Context
    ) -> pb.AssignTierResponse:
        caller = await self._admit(context, "AssignTier", request)

        async def assign() -> pb.AssignTierResponse:
            return await self.control.assign_tier(*_assign_args(request))

        return await self._answer(context, "AssignTier", request, caller, assign)

    async def ClearTier(
        self, request: pb.ClearTierRequest, context: Context
    ) -> pb.ClearTierResponse:
        caller = await self._admit(context, "ClearTier", request)

        async def clear() -> pb.ClearTierResponse:
            return await self.control.clear_tier(pod_from_wire(request.pod))

        return await self._answer(context, "ClearTier", request, caller, clear)

    async def Reload(self, request: pb.ReloadRequest, context: Context) -> pb.ReloadResponse:
        caller = await self._admit(context, "Reload", request)
        return await self._answer(context, "Reload", request, caller, self.control.reload)

    async def GetConfig(
        self, request: pb.GetConfigRequest, context: Context
    ) -> pb.GetConfigResponse:
        await self._admit(context, "GetConfig", request)
        if request.view not in pb.ConfigView.values():
            message = f"view: unknown value {request.view}"
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, message)
        config = _sync(self.control.config)
        answer = await self._answer(context, "GetConfig", request, None, config)
        return _config_view(answer, request.view)

    async def CaptureTrace(
        self, request: pb.CaptureTraceRequest, context: Context
    ) -> AsyncIterator[pb.CaptureTraceReply]:
        """Audited twice: when the capture starts, and when it ends (OK, its error, or
        CANCELLED when the caller left first)."""
        method = "CaptureTrace"
        caller = await self._admit(context, method, request)
        start = _sync(lambda: self._start_trace(request))
        run = await self._answer(context, method, request, caller, start, done="capture started")
        duration_ms = round(run.duration_s * 1000)
        started = time.monotonic()
        try:
            while not run.done.done():
                await asyncio.wait({run.done}, timeout=PROGRESS_EVERY_S)
                elapsed_ms = min(duration_ms, round((time.monotonic() - started) * 1000))
                progress = pb.TraceProgress(elapsed_ms=elapsed_ms, duration_ms=duration_ms)
                yield pb.CaptureTraceReply(progress=progress)
            path, summary = await self._answer(
                context, method, request, caller, lambda: run.done, done="capture finished"
            )
        except asyncio.CancelledError:
            self._audit(caller, method, request, "CANCELLED", "the caller left before the end")
            raise
        yield pb.CaptureTraceReply(summary=summary)
        for chunk in _chunks(path):
            yield pb.CaptureTraceReply(chunk=chunk)

    def _start_trace(self, request: pb.CaptureTraceRequest) -> TraceRun:
        tiers = [tier_from_wire(n, f"tiers[{i}]") for i, n in enumerate(request.tiers)]
        duration_ms = request.duration_ms or 5_000
        if duration_ms > MAX_DURATION_MS:
            raise InputError(f"duration_ms: {duration_ms} is over the bound {MAX_DURATION_MS}")
        max_mb = request.max_mb or MAX_TRACE_MB
        if max_mb > MAX_TRACE_MB:
            raise InputError(f"max_mb: {max_mb} is over the bound {MAX_TRACE_MB}")
        return self.control.start_trace(tiers or list(Tier), duration_ms / 1000, max_mb << 20)

    async def _admit(self, context: Context, method: str, request: Message) -> Caller:
        """The caller, when the allow-list admits it; else PERMISSION_DENIED, audited."""
        caller = self._caller(context)
        refusal: str | None = "calls must come through the agent's unix socket or TLS port"
        if caller is not None:
            refusal = self.allow.refusal(caller)
            if refusal is None:
                return caller
        assert refusal is not None
        if self._refusals.take(time.monotonic()):
            self._audit(caller, method, request, "PERMISSION_DENIED", refusal)
        await _abort(context, grpc.StatusCode.PERMISSION_DENIED, refusal)
        raise AssertionError("unreachable")  # abort raises

    def _caller(self, context: Context) -> Caller | None:
        auth = context.auth_context()
        if auth.get("transport_security_type") == [b"ssl"]:
            subject = b",".join(auth.get("x509_common_name", [])).decode(errors="replace")
            return Caller("tls", subject or "(no common name)")
        return self.front.caller_of(context.peer()) if self.front is not None else None

    async def _answer(
        self,
        context: Context,
        method: str,
        request: Message,
        caller: Caller | None,
        act: Callable[[], Awaitable[T]],
        *,
        done: str = "",
    ) -> T:
        """Run `act`; map our errors to statuses; audit when `caller` is given (mutating), with
        `done` as the message when it succeeded."""
        try:
            result = await act()
        except (InputError, TraceRequestError) as exc:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except CallRefused as exc:
            code, message = exc.kind.value, str(exc)
        except Exception:
            log.exception("API call %s failed", method)
            code, message = grpc.StatusCode.INTERNAL, "the agent failed this call; see its log"
        else:
            if caller is not None:
                self._audit(caller, method, request, "OK", done)
            return result
        if caller is not None:
            self._audit(caller, method, request, code.name, message)
        await _abort(context, code, message)
        raise AssertionError("unreachable")

    def _audit(
        self, caller: Caller | None, method: str, request: Message, outcome: str, message: str
    ) -> None:
        suppressed, self._refusals.suppressed = self._refusals.suppressed, 0
        self.audit(
            {
                "ts": round(time.time(), 3),
                **({"refusals_not_recorded": suppressed} if suppressed else {}),
                "caller": caller.record() if caller is not None else {"via": "unknown"},
                "method": method,
                "request": text_format.MessageToString(request, as_one_line=True)[:512],
                "outcome": outcome,
                "message": message[:512],
            }
        )


class RefusalBudget:
    """At most `per_minute` refused calls are written to the audit log each minute; the rest
    are counted and the count goes with the next record. Anyone on the node may knock, and
    without a bound a loop of refused calls would rotate the real records out of the log."""

    def __init__(self, per_minute: int = 30) -> None:
        self.per_minute = per_minute
        self.suppressed = 0
        self._window_start = -60.0
        self._used = 0

    def take(self, now_s: float) -> bool:
        if now_s - self._window_start >= 60.0:
            self._window_start, self._used = now_s, 0
        if self._used < self.per_minute:
            self._used += 1
            return True
        self.suppressed += 1
        return False


def _assign_args(request: pb.AssignTierRequest) -> tuple[PodKey, Tier]:
    """The pod and tier, with every field's problem at once: an operator fixes it in one go."""
    problems = check_pod_key(request.pod.namespace, request.pod.name)
    try:
        tier = tier_from_wire(request.tier)
    except InputError as exc:
        problems.append(str(exc))
    if problems:
        raise InputError("; ".join(problems))
    return PodKey(request.pod.namespace, request.pod.name), tier


def _sync(function: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    async def call() -> T:
        return function()

    return call


def _config_view(answer: pb.GetConfigResponse, view: int) -> pb.GetConfigResponse:
    if view == pb.CONFIG_VIEW_RUNNING:
        return pb.GetConfigResponse(running=answer.running, running_sha256=answer.running_sha256)
    if view == pb.CONFIG_VIEW_PLANNED:
        return pb.GetConfigResponse(planned=answer.planned, planned_sha256=answer.planned_sha256)
    if view == pb.CONFIG_VIEW_DIFF:
        return pb.GetConfigResponse(
            diff=answer.diff,
            running_sha256=answer.running_sha256,
            planned_sha256=answer.planned_sha256,
        )
    return answer


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            yield chunk


async def _abort(context: Context, code: grpc.StatusCode, message: str) -> None:
    await context.abort(code, message)


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path


async def serve_api(
    service: AgentService,
    front: UnixFront | None,
    tls: tuple[str, int, TlsFiles] | None = None,
    started: Callable[[str], None] | None = None,
) -> None:
    """Serve until cancelled: on the front's private socket, and on TCP with mutual TLS."""
    try:
        await _serve(service, front, tls, started)
    finally:  # also when the server never started (unreadable TLS files, a bad address)
        if front is not None:
            front.remove_private()


async def _serve(
    service: AgentService,
    front: UnixFront | None,
    tls: tuple[str, int, TlsFiles] | None,
    started: Callable[[str], None] | None,
) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
    )
    pb_grpc.add_AgentServicer_to_server(service, server)
    where = []
    if front is not None:
        server.add_insecure_port(f"unix:{front.private}")
        where.append(str(front.public))
    if tls is not None:
        host, port, files = tls
        credentials = grpc.ssl_server_credentials(
            [(files.key.read_bytes(), files.cert.read_bytes())],
            root_certificates=files.client_ca.read_bytes(),
            require_client_auth=True,
        )
        bound = server.add_secure_port(f"{host}:{port}", credentials)
        where.append(f"{host}:{bound}")
    await server.start()
    try:
        if front is not None:
            await front.serve(lambda: started(", ".join(where)) if started else None)
        else:
            if started is not None:
                started(", ".join(where))
            await server.wait_for_termination()
    finally:
        await server.stop(grace=1.0)
