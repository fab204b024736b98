"""The agent's endpoints, each one task that serves until cancelled: the probes, `/metrics`,
`/observe` and `POST /trace` (docs/observe.md), and the gRPC API for temper-cli (docs/cli.md).
An endpoint that cannot start is logged, and enforcement goes on without it.

grpcio is loaded when the API task starts, not before: with `--api-socket off` it costs nothing
(14.4 MiB of RSS otherwise, measured in bench/reports/agent-watch.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from temper.agent.config import AgentConfig
from temper.agent.events import log_event
from temper.policy.observe import Snapshot
from temper.serve.endpoints import observe_routes, probe_routes
from temper.serve.http import Route, serve_http

if TYPE_CHECKING:
    from temper.agent.control import NodeControl
    from temper.serve.api import Audit, TlsFiles


async def serve_probes(port: int, ready: Callable[[], bool]) -> None:
    await serve_http("0.0.0.0", port, probe_routes(ready))


async def serve_endpoints(
    listen: tuple[str, int],
    snapshot: Callable[[], Snapshot | None],
    ready: Callable[[], bool],
    trace: Route,
) -> None:
    host, port = listen
    routes = observe_routes(snapshot, ready, {"/trace": trace})
    try:
        await serve_http(host, port, routes, started=lambda bound: log_event("serving", port=bound))
    except OSError as exc:  # enforcement goes on without its endpoints, loudly
        log_event("serve-error", reason=f"cannot listen on {host}:{port}: {exc.strerror or exc}")


async def serve_agent_api(control: NodeControl, config: AgentConfig, audit: Audit) -> None:
    """The gRPC API on its unix socket, and with `--api-listen` on TCP with mutual TLS. When it
    ends, a reload still under way is cancelled: nothing the API started outlives it."""
    from temper.host.peercred import group_id  # noqa: PLC0415
    from temper.serve.api import AgentService, serve_api  # noqa: PLC0415
    from temper.serve.callers import AllowList, UnixFront  # noqa: PLC0415

    allow = AllowList(config.api_group, group_id(config.api_group) if config.api_group else None)
    try:
        front = UnixFront(config.api_socket or config.state_dir / "api.sock")
        service = AgentService(control, front, allow, audit)
        await serve_api(
            service,
            front,
            _api_tls(config),
            lambda where: log_event("api", serving=where, allowed=allow.describe()),
        )
    except (OSError, ValueError, RuntimeError) as exc:
        log_event("api-error", reason=f"cannot serve the API: {exc}")
    finally:
        control.reloads.cancel()


def _api_tls(config: AgentConfig) -> tuple[str, int, TlsFiles] | None:
    from temper.serve.api import TlsFiles  # noqa: PLC0415

    if config.api_listen is None:
        return None
    # parse_config refuses --api-listen without all three files
    assert config.api_tls_cert is not None
    assert config.api_tls_key is not None
    assert config.api_client_ca is not None
    host, port = config.api_listen
    return host, port, TlsFiles(config.api_tls_cert, config.api_tls_key, config.api_client_ca)
