"""Errors of the agent's API, as its callers (`temper-cli`, the dashboard) see them.

    ApiError                a call did not succeed; `.code` (grpc.StatusCode), `.details`
    ├── AgentUnreachable    no agent answered: nothing listens, the connection attempt failed or
    │                       timed out, the connection broke, or the agent is not ready yet
    │                       (UNAVAILABLE)
    ├── PermissionDenied    the agent refused this caller (PERMISSION_DENIED, UNAUTHENTICATED),
    │                       or the socket refused the connection (EACCES)
    ├── InvalidArgument     the agent rejected a field of the request; names it
    ├── NotFound            the pod named is not on this node
    ├── Busy                a bound was hit, e.g. a capture already runs (RESOURCE_EXHAUSTED)
    ├── Refused             the node lacks what the call needs (FAILED_PRECONDITION)
    └── CallFailed          anything else: INTERNAL, UNIMPLEMENTED, DEADLINE_EXCEEDED (the
                            agent was reached and took too long)

Every grpc.RpcError the client sees is re-raised as one of these with `from exc`, so callers
handle one tree. `str()` is one sentence for an operator; `.details` keeps the agent's own words.
"""

from __future__ import annotations

import grpc


class ApiError(Exception):
    """Base of every error the API client raises."""

    def __init__(self, message: str, *, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details
        super().__init__(message)


class AgentUnreachable(ApiError):
    """No agent answered. `reached` is False when no connection was ever made.

    A caller can then point at the address it used; when the agent was reached (it is not ready
    yet, or the connection broke), the address is right and retrying later is the cure.
    """

    def __init__(self, message: str, *, code: grpc.StatusCode, details: str, reached: bool) -> None:
        self.reached = reached
        super().__init__(message, code=code, details=details)


class PermissionDenied(ApiError):
    """This caller may not make this call; the agent's details say who may."""


class InvalidArgument(ApiError):
    """The agent rejected a field of the request; the details name it."""


class NotFound(ApiError):
    """The pod the request names is not on this node."""


class Busy(ApiError):
    """A bound was hit (one capture at a time, a rate); the details say which."""


class Refused(ApiError):
    """The node cannot do this now (no sched_ext, safe mode); the details say what it lacks."""


class CallFailed(ApiError):
    """The call failed for another reason; `.code` says which."""
