"""The typed client of the agent's API: what `temper-cli` and the dashboard call.

Synchronous on purpose: a command makes one call and exits, and a blocking call with a deadline
is the simplest thing that can be right. Methods take domain values (PodKey, Tier) and return
the generated messages, whose fields the contract (agent.proto) documents.

Errors are translated here, once: every grpc.RpcError becomes one of `temper.api.errors`, with
the agent's details kept. gRPC's own words for a failed connection ("failed to connect to all
addresses; last error: ...") are turned into a sentence that names the socket or address, and a
unix socket is looked at before each call, so "nothing listens here" says so plainly instead of
surfacing as a status code.

A connection attempt is given half the call's deadline (gRPC's default is 20 s). One that does not
complete in that time (a socket whose owner accepts no connections, a host that drops packets)
then fails the call as "not reached" while time is left, so a deadline that passes means the
agent was reached and took too long.
"""

from __future__ import annotations

import stat
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import grpc

from temper.api.errors import (
    AgentUnreachable,
    ApiError,
    Busy,
    CallFailed,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Refused,
)
from temper.api.v1 import agent_pb2 as pb
from temper.api.v1 import agent_pb2_grpc as pb_grpc
from temper.api.wire import pod_to_wire, tier_to_wire
from temper.policy.assignments import PodKey
from temper.policy.tiers import Tier

DEFAULT_SOCKET = Path("/run/temper/api.sock")
# Calls answer from the agent's memory in milliseconds; 10 s covers a loaded node.
DEFAULT_TIMEOUT_S = 10.0
# A reload restarts scx_layered and waits for the kernel to enable it; on a slow lab VM that
# takes up to a minute.
RELOAD_TIMEOUT_S = 120.0
# After recording: the agent summarizes the capture and sends up to 64 MiB in chunks.
TRACE_MARGIN_S = 60.0
# The agent records 5 s when asked for 0 ms (agent.proto); the deadline must cover that.
TRACE_DEFAULT_MS = 5_000
# The largest answer is GetConfig (two configs and a diff: tens of KiB for hundreds of pods);
# trace chunks are 64 KiB. 8 MiB bounds what a confused peer can make us buffer.
MAX_RECEIVE_BYTES = 8 * 1024 * 1024
# The agent restarts in seconds; gRPC's default backoff (up to 120 s) would keep a long-lived
# client such as the dashboard away long after it is back.
MAX_RECONNECT_BACKOFF_MS = 5_000
# gRPC's own bound on a connection attempt; ours is half the call's deadline, at most this.
MAX_CONNECT_TIMEOUT_S = 20.0
_STATUS_ERRORS: dict[grpc.StatusCode, tuple[type[ApiError], str]] = {
    grpc.StatusCode.PERMISSION_DENIED: (PermissionDenied, "permission denied"),
    grpc.StatusCode.UNAUTHENTICATED: (PermissionDenied, "permission denied"),
    grpc.StatusCode.INVALID_ARGUMENT: (InvalidArgument, "invalid argument"),
    grpc.StatusCode.NOT_FOUND: (NotFound, "not found"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (Busy, "busy"),
    grpc.StatusCode.FAILED_PRECONDITION: (Refused, "refused"),
}
# gRPC's words for a connection it could not make, and the causes worth a plain sentence.
_CONNECT_FAILED = "failed to connect to all addresses"
_NOT_LISTENING = {"No such file": "no such file", "Connection refused": "connection refused"}
_TIMED_OUT = ("timed out", "timeout")


class AgentClient:
    """One connection to one agent. Use it as a context manager: leaving closes the channel."""

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        endpoint: str,
        socket_path: Path | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        reload_timeout_s: float = RELOAD_TIMEOUT_S,
        trace_margin_s: float = TRACE_MARGIN_S,
    ) -> None:
        """`endpoint` names the agent in messages; `socket_path` is checked before each call."""
        self.endpoint = endpoint
        self._channel = channel
        self._stub = pb_grpc.AgentStub(channel)
        self._socket_path = socket_path
        self._timeout_s = timeout_s
        self._reload_timeout_s = reload_timeout_s
        self._trace_margin_s = trace_margin_s

    @classmethod
    def unix(
        cls,
        path: Path,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        reload_timeout_s: float = RELOAD_TIMEOUT_S,
        trace_margin_s: float = TRACE_MARGIN_S,
    ) -> AgentClient:
        """The agent on this host, by its unix socket (the caller's uid is its credential)."""
        path = path.absolute()
        channel = grpc.insecure_channel(f"unix:{path}", options=channel_options(timeout_s))
        return cls(
            channel,
            endpoint=str(path),
            socket_path=path,
            timeout_s=timeout_s,
            reload_timeout_s=reload_timeout_s,
            trace_margin_s=trace_margin_s,
        )

    @classmethod
    def tls(
        cls,
        host: str,
        port: int,
        *,
        ca: bytes,
        cert: bytes,
        key: bytes,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        reload_timeout_s: float = RELOAD_TIMEOUT_S,
        trace_margin_s: float = TRACE_MARGIN_S,
    ) -> AgentClient:
        """An agent over TCP with mutual TLS: `ca` verifies the agent, `cert`/`key` are ours."""
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )
        endpoint = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        channel = grpc.secure_channel(endpoint, credentials, options=channel_options(timeout_s))
        return cls(
            channel,
            endpoint=endpoint,
            timeout_s=timeout_s,
            reload_timeout_s=reload_timeout_s,
            trace_margin_s=trace_margin_s,
        )

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def status(self) -> pb.Status:
        with self._translated(self._timeout_s):
            return self._stub.GetStatus(pb.GetStatusRequest(), timeout=self._timeout_s)

    def assign_tier(self, pod: PodKey, tier: Tier) -> pb.AssignTierResponse:
        request = pb.AssignTierRequest(pod=pod_to_wire(pod), tier=tier_to_wire(tier))
        with self._translated(self._timeout_s):
            return self._stub.AssignTier(request, timeout=self._timeout_s)

    def clear_tier(self, pod: PodKey) -> pb.ClearTierResponse:
        request = pb.ClearTierRequest(pod=pod_to_wire(pod))
        with self._translated(self._timeout_s):
            return self._stub.ClearTier(request, timeout=self._timeout_s)

    def reload(self) -> pb.ReloadResponse:
        with self._translated(self._reload_timeout_s):
            return self._stub.Reload(pb.ReloadRequest(), timeout=self._reload_timeout_s)

    def config(
        self, view: pb.ConfigView.ValueType = pb.CONFIG_VIEW_UNSPECIFIED
    ) -> pb.GetConfigResponse:
        """The configs `view` asks for; unspecified asks for all three fields."""
        with self._translated(self._timeout_s):
            return self._stub.GetConfig(pb.GetConfigRequest(view=view), timeout=self._timeout_s)

    def capture_trace(
        self, tiers: Sequence[Tier], duration_ms: int, max_mb: int
    ) -> Generator[pb.CaptureTraceReply, None, None]:
        """The capture's replies as they arrive; closing the generator cancels the capture.

        No tiers means all; 0 ms and 0 MiB mean the agent's defaults (5 s, 64 MiB).
        """
        request = pb.CaptureTraceRequest(
            tiers=[tier_to_wire(tier) for tier in tiers], duration_ms=duration_ms, max_mb=max_mb
        )
        deadline_s = (duration_ms or TRACE_DEFAULT_MS) / 1000 + self._trace_margin_s
        with self._translated(deadline_s):
            replies = self._stub.CaptureTrace(request, timeout=deadline_s)
            try:
                yield from replies
            finally:
                # A no-op once the stream ended. (grpc-stubs leave cancel() unannotated.)
                replies.cancel()  # type: ignore[no-untyped-call]

    @contextmanager
    def _translated(self, deadline_s: float) -> Iterator[None]:
        if self._socket_path is not None:
            check_socket(self._socket_path)
        try:
            yield
        except grpc.RpcError as exc:
            raise self._translate(exc, deadline_s) from exc

    def _translate(self, exc: grpc.RpcError, deadline_s: float) -> ApiError:
        code, details = _status_of(exc)
        if code is grpc.StatusCode.UNAVAILABLE:
            return _unavailable(self.endpoint, details)
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            message = f"the agent did not answer within {deadline_s:g} s"
            return CallFailed(message, code=code, details=details)
        error, kind = _STATUS_ERRORS.get(code, (CallFailed, f"failed ({code.name})"))
        return error(f"{kind}: {details}" if details else kind, code=code, details=details)


def channel_options(timeout_s: float) -> list[tuple[str, int]]:
    """Our bounds on what we receive and on how long a connection attempt may take.

    gRPC bounds an attempt by the larger of `min_reconnect_backoff_ms` and the first backoff
    (with 20% jitter), so both are set to the connect timeout.
    """
    connect_ms = max(1, int(min(timeout_s / 2, MAX_CONNECT_TIMEOUT_S) * 1000))
    return [
        ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
        ("grpc.initial_reconnect_backoff_ms", connect_ms),
        ("grpc.min_reconnect_backoff_ms", connect_ms),
        ("grpc.max_reconnect_backoff_ms", max(connect_ms, MAX_RECONNECT_BACKOFF_MS)),
    ]


def check_socket(path: Path) -> None:
    """Raise AgentUnreachable (or PermissionDenied) unless `path` is a socket we can see."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise _not_listening(path, "no such file") from exc
    except PermissionError as exc:
        raise _socket_denied(path) from exc
    except OSError as exc:
        raise _not_listening(path, exc.strerror or str(exc)) from exc
    if not stat.S_ISSOCK(mode):
        raise _not_listening(path, "not a socket")


def _status_of(exc: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """The status of a failed call; UNKNOWN for an RpcError that carries none."""
    if isinstance(exc, grpc.Call):
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.UNKNOWN, str(exc)


def _unavailable(endpoint: str, details: str) -> ApiError:
    """UNAVAILABLE: a connection gRPC could not make, or an agent that is not ready."""
    code = grpc.StatusCode.UNAVAILABLE
    if _CONNECT_FAILED not in details:
        message = f"the agent at {endpoint} is not available: {details}"
        return AgentUnreachable(message, code=code, details=details, reached=True)
    if "Permission denied" in details:
        return _socket_denied(endpoint, details)
    message = _connect_failure(endpoint, details)
    return AgentUnreachable(message, code=code, details=details, reached=False)


def _connect_failure(endpoint: str, details: str) -> str:
    """gRPC's words for a connection it could not make, as a sentence naming the endpoint."""
    for words, why in _NOT_LISTENING.items():
        if words in details:
            return _not_listening_text(endpoint, why)
    last_error = details.partition("last error: ")[2] or details
    if "handshake" in details.lower():
        return f"cannot connect to the agent at {endpoint}: TLS handshake failed: {last_error}"
    if any(words in details.lower() for words in _TIMED_OUT):
        return f"cannot connect to the agent at {endpoint}: the connection attempt timed out"
    return f"cannot connect to the agent at {endpoint}: {last_error}"


def _not_listening(path: Path, why: str) -> AgentUnreachable:
    return AgentUnreachable(
        _not_listening_text(path, why),
        code=grpc.StatusCode.UNAVAILABLE,
        details=why,
        reached=False,
    )


def _not_listening_text(endpoint: object, why: str) -> str:
    return f"the agent is not listening on {endpoint} ({why}): is temper-agent running?"


def _socket_denied(endpoint: object, details: str = "permission denied") -> PermissionDenied:
    message = f"cannot connect to {endpoint}: permission denied"
    return PermissionDenied(message, code=grpc.StatusCode.PERMISSION_DENIED, details=details)
