"""A small HTTP/1.1 server for the agent's read-only endpoints and the kubelet's probes.

The agent serves a handful of fixed paths (`/livez`, `/readyz`, `/metrics`, `/observe`, and
`POST /trace` from loopback only), each answered from values already in memory. So the server
is small on purpose: it reads the request line and headers, calls a route, writes the answer
and closes the connection. No web framework is imported (reference: the agent's memory target).

Under a scrape storm (docs/reliability.md row F8) it stays bounded: a client gets 5 s to send
its request; at most `max_clients` requests are answered at once and the rest get 503 at once
(after their request is read, so the client sees the answer rather than a reset); a route only
reads a snapshot, and renders it once per snapshot (see `Cached`). A route that raises is
logged and answered 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("temper.serve")
REQUEST_TIMEOUT_S = 5.0
MAX_HEADER_LINES = 100
_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    loopback: bool  # the peer is on this host's loopback


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Route = Callable[[Request], Response | Awaitable[Response]]


def text(status: int, body: str) -> Response:
    return Response(status, (body + "\n").encode())


async def serve_http(
    host: str,
    port: int,
    routes: Mapping[str, Route],
    *,
    max_clients: int = 16,
    started: Callable[[int], None] | None = None,
) -> None:
    """Serve `routes` (path -> handler) until cancelled; `started` gets the bound port."""
    busy = asyncio.Semaphore(max_clients)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(_read_request(reader, writer), REQUEST_TIMEOUT_S)
            if request is None:
                response = text(400, "bad request")
            elif busy.locked():
                response = text(503, "busy: too many clients at once")
            else:
                async with busy:
                    response = await _route(request, routes)
            head = (
                f"HTTP/1.1 {response.status} {_REASONS.get(response.status, '')}\r\n"
                f"Content-Type: {response.content_type}\r\n"
                f"Content-Length: {len(response.body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode("latin-1") + response.body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(answer, host, port)
    async with server:
        if started is not None:
            started(server.sockets[0].getsockname()[1])
        await server.serve_forever()


async def _route(request: Request, routes: Mapping[str, Route]) -> Response:
    route = routes.get(request.path)
    if route is None:
        return text(404, "not found")
    try:
        result = route(request)
        return await result if isinstance(result, Awaitable) else result
    except Exception:  # a route's bug must not take the server down or go unseen
        log.exception("route %s failed", request.path)
        return text(500, "internal error; the agent's log has the details")


async def _read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> Request | None:
    try:
        parts = (await reader.readline()).decode("latin-1").split()
        for _ in range(MAX_HEADER_LINES):  # headers are not used; read past them
            if not (await reader.readline()).strip():
                break
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return None
        url = urlsplit(parts[1])
    except ValueError:  # a line longer than the stream's limit, or a URL urlsplit refuses
        return None
    peer = writer.get_extra_info("peername")
    loopback = False
    with contextlib.suppress(ValueError, TypeError, IndexError):
        loopback = ipaddress.ip_address(peer[0]).is_loopback
    return Request(parts[0], url.path, parse_qs(url.query), loopback)


T = TypeVar("T")


class Cached(Generic[T]):
    """Renders a value once per distinct source object: a scrape storm re-sends bytes."""

    def __init__(self, render: Callable[[T], bytes]) -> None:
        self.render = render
        self._source: T | None = None
        self._bytes = b""

    def __call__(self, source: T) -> bytes:
        if source is not self._source:
            self._bytes, self._source = self.render(source), source
        return self._bytes
