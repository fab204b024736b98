"""A fault-injecting HTTPS proxy in front of the test kube-apiserver.

It produces the faults of docs/reliability.md rows C2, C3, C5.

The real API server answers 429, 500 or nothing at all only when it is in trouble, never on a
test's cue. `FaultProxy` sits between an agent and a `ControlPlane`: it serves TLS on 127.0.0.1
with a certificate from the plane's CA (so a kubeconfig made for the plane works once its server
URL points here), and re-sends each request to the real server: method, path and query, headers
(the bearer token included) and body, the answer streamed back chunk by chunk, since watches are
long-lived chunked streams. While a fault is on, requests it matches meet it instead:

- `answer(status)`: a Kubernetes Status body with that code (and `Retry-After` when given);
- `hang()`: the request is taken and never answered, and open streams stop passing bytes
  without closing (a half-open connection); held requests are cut when the hang ends;
- `pass_through()`: back to forwarding.

Each fault opens a new `Window` that counts the requests it saw, so a test can tell a backoff
from a hot loop. The proxy runs its own event loop on a background thread; every public
method is called from the test's thread and returns once the loop has done it. It stops on
`stop()`, at the end of its `with` block, or after `lifetime_s` at the latest.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, TypeVar

import aiohttp
import yaml
from aiohttp import web

from temper_testing.kubetest.controlplane import ControlPlane, ControlPlaneError

T = TypeVar("T")
CALL_TIMEOUT_S = 10.0  # for the loop to carry out one call from the test's thread
# Not forwarded: they describe one hop, not the request (RFC 9110 section 7.6.1); the length
# and framing are set again for the next hop.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# The `reason` the API server puts in a Status for these codes.
_STATUS_REASONS = {
    403: "Forbidden",
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass(frozen=True)
class Fault:
    """What happens to a request whose path and query contain `match` ("" matches all)."""

    kind: Literal["pass", "status", "hang"] = "pass"
    status: int = 0
    retry_after_s: int | None = None
    match: str = ""

    def applies(self, target: str) -> bool:
        return self.kind != "pass" and self.match in target

    def hangs(self, target: str) -> bool:
        return self.kind == "hang" and self.match in target

    def describe(self) -> str:
        what = {"pass": "pass", "hang": "hang", "status": str(self.status)}[self.kind]
        if self.retry_after_s is not None:
            what += f" (Retry-After: {self.retry_after_s})"
        return f"{what} on {self.match!r}" if self.match else what


@dataclass(frozen=True)
class Seen:
    """One request as it arrived: `answer` is the status sent, "held" or "forwarded <status>"."""

    method: str
    target: str
    answer: str
    at_s: float  # time.monotonic()


@dataclass(frozen=True)
class Window:
    """The requests that arrived while one fault was on."""

    fault: Fault
    started_s: float
    ended_s: float | None
    requests: tuple[Seen, ...]

    @property
    def duration_s(self) -> float:
        return (self.ended_s or time.monotonic()) - self.started_s

    def count(self, match: str = "") -> int:
        return sum(1 for seen in self.requests if match in seen.target)


@dataclass
class _WindowLog:
    fault: Fault
    started_s: float = field(default_factory=time.monotonic)
    ended_s: float | None = None
    requests: list[Seen] = field(default_factory=list)

    def snapshot(self) -> Window:
        return Window(self.fault, self.started_s, self.ended_s, tuple(self.requests))


@dataclass(eq=False)
class _Stream:
    target: str
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class FaultProxy:
    def __init__(self, plane: ControlPlane, workdir: Path, lifetime_s: float = 600.0) -> None:
        self.plane = plane
        self.workdir = workdir
        self.lifetime_s = lifetime_s
        self.port = 0
        self._windows = [_WindowLog(Fault())]
        self._streams: set[_Stream] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._change: asyncio.Event | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- the test's side ----------------------------------------------------------------------

    @classmethod
    def start(cls, plane: ControlPlane, workdir: Path, lifetime_s: float = 600.0) -> FaultProxy:
        proxy = cls(plane, workdir, lifetime_s)
        workdir.mkdir(parents=True, exist_ok=True)
        plane.ca.issue(workdir / "proxy", "127.0.0.1", hosts=("127.0.0.1", "localhost"))
        proxy._thread = threading.Thread(target=proxy._run_thread, name="fault-proxy", daemon=True)
        proxy._thread.start()
        if not proxy._ready.wait(CALL_TIMEOUT_S) or proxy._failed is not None:
            proxy.stop()
            raise ControlPlaneError(f"fault proxy did not start: {proxy._failed!r}")
        return proxy

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def kubeconfig_for_token(self, name: str, token: str) -> Path:
        """A kubeconfig for the identity behind `token` that talks to the API through us."""
        config = yaml.safe_load(self.plane.kubeconfig.read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = self.server
        config["users"] = [{"name": name, "user": {"token": token}}]
        cluster_name = config["clusters"][0]["name"]
        config["contexts"] = [{"name": name, "context": {"cluster": cluster_name, "user": name}}]
        config["current-context"] = name
        path = self.workdir / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        return path

    def answer(
        self,
        status: int,
        *,
        retry_after_s: int | None = None,
        match: str = "",
        end_streams: bool = True,
    ) -> None:
        """Answer matching requests with `status` from now on. With `end_streams`, matching
        streams already open end (as when a watch's timeoutSeconds passes), so their clients
        ask again and meet the fault."""
        fault = Fault("status", status, retry_after_s, match)
        self._call(lambda: self._set(fault, end_streams))

    def hang(self, match: str = "") -> None:
        """Take matching requests and never answer; open matching streams go silent."""
        self._call(lambda: self._set(Fault("hang", match=match), False))

    def pass_through(self) -> Window:
        """Forward everything again; returns the window of the fault that just ended."""
        return self._call(lambda: self._set(Fault(), False))

    def end_streams(self, match: str = "") -> int:
        """End the open streams that match, cleanly; their clients will ask again."""
        return self._call(lambda: self._end_streams(match))

    def window(self) -> Window:
        """The requests seen since the current fault (or pass) began."""
        return self._call(self._current_window)

    def windows(self) -> list[Window]:
        return self._call(self._all_windows)

    def stop(self) -> None:
        """Stop serving: open streams end, held requests are cut. Safe to call twice."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: stopped
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(CALL_TIMEOUT_S + 5)

    def _call(self, action: Callable[[], T]) -> T:
        if self._loop is None or self._loop.is_closed():
            raise ControlPlaneError("fault proxy is not running")

        async def run() -> T:
            return action()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(CALL_TIMEOUT_S)

    # -- the loop's side ----------------------------------------------------------------------

    def _run_thread(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start() or lost with the thread
            self._failed = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop, self._change = asyncio.Event(), asyncio.Event()
        upstream_tls = ssl.create_default_context(cadata=self.plane.ca.cert_pem.decode())
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=upstream_tls, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CALL_TIMEOUT_S),
            auto_decompress=False,  # bytes pass as the server sent them, gzip or not
        )
        server = web.Server(self._handle)
        runner = web.ServerRunner(server, shutdown_timeout=2.0)
        try:
            await runner.setup()
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", 0))
            except OSError:
                sock.close()
                raise
            self.port = sock.getsockname()[1]
            await web.SockSite(runner, sock, ssl_context=self._serving_tls()).start()
            self._ready.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.lifetime_s)
        finally:
            self._end_streams("")  # and wakes the held requests, which see the stop
            for site in list(runner.sites):
                await site.stop()  # no new connections from here
            accepted = [conn.transport for conn in server.connections if conn.transport]
            await runner.cleanup()
            await self._session.close()
            # A TLS close waits for the client's reply, which may never come; whatever is still
            # open is cut now, or it would outlive the loop and be left to the garbage collector.
            for transport in accepted:
                transport.abort()

    def _serving_tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.workdir / "proxy.crt", self.workdir / "proxy.key")
        return context

    def _current_window(self) -> Window:
        return self._windows[-1].snapshot()

    def _all_windows(self) -> list[Window]:
        return [log.snapshot() for log in self._windows]

    @property
    def _fault(self) -> Fault:
        return self._windows[-1].fault

    @property
    def _stopping(self) -> bool:
        return self._stop is None or self._stop.is_set()

    def _set(self, fault: Fault, end_streams: bool) -> Window:
        ended = self._windows[-1]
        ended.ended_s = time.monotonic()
        self._windows.append(_WindowLog(fault))
        if end_streams:
            self._end_streams(fault.match)
        self._notify()
        return ended.snapshot()

    def _end_streams(self, match: str) -> int:
        matching = [stream for stream in self._streams if match in stream.target]
        for stream in matching:
            stream.ended.set()
        self._notify()
        return len(matching)

    def _notify(self) -> None:
        """Wake everything waiting for the fault to change."""
        if self._change is not None:
            self._change.set()
            self._change = asyncio.Event()

    async def _changed(self) -> None:
        assert self._change is not None
        await self._change.wait()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        target = request.raw_path
        log, fault = self._windows[-1], self._fault
        if fault.hangs(target):
            log.requests.append(Seen(request.method, target, "held", time.monotonic()))
            return await self._hold(request, fault)
        if fault.applies(target):
            log.requests.append(Seen(request.method, target, str(fault.status), time.monotonic()))
            return _status_response(fault.status, fault.retry_after_s)
        return await self._forward(request, target, log)

    async def _hold(self, request: web.BaseRequest, fault: Fault) -> web.StreamResponse:
        """Never answer; when the hang ends the connection is cut, as a dead one would be."""
        while self._fault is fault and not self._stopping:
            await self._changed()
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=504)  # not sent: the connection is gone

    async def _forward(
        self, request: web.BaseRequest, target: str, log: _WindowLog
    ) -> web.StreamResponse:
        assert self._session is not None
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
        body = await request.read()
        arrived = time.monotonic()
        try:
            upstream = await self._session.request(
                request.method,
                f"{self.plane.server}{target}",
                headers=headers,
                data=body or None,
                allow_redirects=False,
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            )
        except (aiohttp.ClientError, OSError, TimeoutError):
            log.requests.append(Seen(request.method, target, "502", arrived))
            return _status_response(502, None)
        log.requests.append(Seen(request.method, target, f"forwarded {upstream.status}", arrived))
        stream = _Stream(target)
        self._streams.add(stream)
        try:
            return await self._pump(request, upstream, stream)
        finally:
            self._streams.discard(stream)
            if upstream.connection is not None and upstream.connection.transport is not None:
                upstream.connection.transport.abort()  # cut short: no TLS close left pending
            upstream.close()

    async def _pump(
        self, request: web.BaseRequest, upstream: aiohttp.ClientResponse, stream: _Stream
    ) -> web.StreamResponse:
        """Pass the answer on as it comes, until its end, until the stream is ended, or until
        the client goes."""
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for key, value in upstream.headers.items():
            if key.lower() not in _HOP_BY_HOP:
                response.headers.add(key, value)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        try:
            await response.prepare(request)
            while chunk := await self._next_chunk(upstream, stream):
                await response.write(chunk)
            await response.write_eof()
        except (aiohttp.ClientError, ConnectionError, OSError, TimeoutError):
            # The server's side broke (or the client went): the client must see it broken,
            # not a clean end.
            if request.transport is not None:
                request.transport.abort()
        return response

    async def _next_chunk(self, upstream: aiohttp.ClientResponse, stream: _Stream) -> bytes:
        """The next bytes of the answer, held back while a hang is on; b"" at its end or once
        the stream is ended."""
        reading = asyncio.ensure_future(upstream.content.readany())
        ending = asyncio.ensure_future(stream.ended.wait())
        try:
            await asyncio.wait({reading, ending}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reading, ending):
                task.cancel()
        if stream.ended.is_set():
            if reading.done() and not reading.cancelled():
                reading.exception()  # retrieved: never reported as lost
            return b""
        chunk = reading.result()
        while chunk and self._fault.hangs(stream.target) and not stream.ended.is_set():
            await self._changed()
        return b"" if stream.ended.is_set() else chunk


def _status_response(status: int, retry_after_s: int | None) -> web.Response:
    """An error as the API server words it: a `Status` object, `Retry-After` when given."""
    phrase = http.HTTPStatus(status).phrase
    body: dict[str, object] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"fault proxy: {phrase}",
        "reason": _STATUS_REASONS.get(status, phrase.replace(" ", "")),
        "code": status,
    }
    headers: dict[str, str] = {}
    if retry_after_s is not None:
        body["details"] = {"retryAfterSeconds": retry_after_s}
        headers["Retry-After"] = str(retry_after_s)
    return web.json_response(body, status=status, headers=headers)
