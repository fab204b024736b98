"""The agent's small HTTP server and its routes, over real sockets on 127.0.0.1 (row F8)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from builders import full_snapshot
from temper.policy.observe import Snapshot
from temper.serve import http
from temper.serve.endpoints import PROMETHEUS_TEXT, observe_routes, probe_routes
from temper.serve.http import Request, Response, Route, serve_http, text
from temper.serve.metrics import render_metrics

T = TypeVar("T")
BUSY = b"busy: too many clients at once\n"


def run(coro: Callable[[], Awaitable[T]], timeout_s: float = 60) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro(), timeout_s)

    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def serving(routes: Mapping[str, Route], **options: int) -> AsyncIterator[int]:
    """serve_http on an ephemeral port of 127.0.0.1 for the block; yields the port."""
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    already = asyncio.all_tasks()
    server = asyncio.create_task(
        serve_http("127.0.0.1", 0, routes, started=bound.set_result, **options)
    )
    try:
        yield await asyncio.wait_for(bound, 10)
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
        # Every connection's handler ends once its client has gone: none is left behind.
        handlers = asyncio.all_tasks() - already - {server}
        if handlers:
            _, left = await asyncio.wait(handlers, timeout=5)
            assert not left, f"connection handlers left running: {left}"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def exchange(port: int, raw: bytes) -> bytes:
    """Send `raw`; the answer's head and, by its Content-Length, body (b"" if closed unanswered).

    Read as HTTP clients read, not to the end of the stream: a server that closes with part of
    the request unread (a busy answer) makes the kernel send a reset after its answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as closed:
            return closed.partial
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return head + await reader.readexactly(length)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def parse_answer(data: bytes) -> Answer:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, status, _ = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    assert int(headers["content-length"]) == len(body)
    return Answer(int(status), headers, body)


async def get(port: int, path: str) -> Answer:
    raw = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n".encode()
    return parse_answer(await exchange(port, raw))


def ok(_: Request) -> Response:
    return text(200, "ok")


# -- requests and answers -----------------------------------------------------------------------


def test_probes_answer_live_at_once_and_ready_once_the_agent_is() -> None:
    ready = False

    async def scenario() -> list[Answer]:
        nonlocal ready
        async with serving(probe_routes(lambda: ready)) as port:
            answers = [await get(port, "/livez"), await get(port, "/readyz")]
            ready = True
            return [*answers, await get(port, "/readyz")]

    livez, starting, readyz = run(scenario)
    assert (livez.status, livez.body) == (200, b"ok\n")
    assert (starting.status, starting.body) == (503, b"starting\n")
    assert (readyz.status, readyz.body) == (200, b"ok\n")
    assert livez.headers["connection"] == "close"
    assert livez.headers["content-type"] == "text/plain; charset=utf-8"


def test_an_unknown_path_is_not_found_and_the_query_is_not_the_path() -> None:
    async def scenario() -> tuple[Answer, Answer]:
        async with serving({"/livez": ok}) as port:
            return await get(port, "/nope"), await get(port, "/livez?verbose=1")

    missing, with_query = run(scenario)
    assert missing.status == 404
    assert with_query.status == 200


def test_a_route_sees_the_method_query_and_a_loopback_peer() -> None:
    seen: list[Request] = []

    async def record(request: Request) -> Response:  # an async route is awaited
        seen.append(request)
        return text(200, "seen")

    async def scenario() -> Answer:
        async with serving({"/trace": record}) as port:
            raw = b"POST /trace?seconds=2&cpu=1&cpu=3 HTTP/1.1\r\n\r\n"
            return parse_answer(await exchange(port, raw))

    assert run(scenario).status == 200
    [request] = seen
    assert (request.method, request.path, request.loopback) == ("POST", "/trace", True)
    assert request.query == {"seconds": ["2"], "cpu": ["1", "3"]}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"HELLO\r\n\r\n", id="one-word"),
        pytest.param(b"GET /livez\r\n\r\n", id="no-version"),
        pytest.param(b"GET /livez SPDY/3\r\n\r\n", id="not-http"),
        pytest.param(b"GET / livez HTTP/1.1\r\n\r\n", id="space-in-path"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", id="tls-hello"),
        pytest.param(b"GET http://[::1/livez HTTP/1.1\r\n\r\n", id="unparsable-url"),
        pytest.param(b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", id="overlong-line"),
    ],
)
def test_a_garbage_request_is_a_bad_request(raw: bytes) -> None:
    async def scenario() -> tuple[Answer, Answer]:
        async with serving({"/livez": ok}) as port:
            return parse_answer(await exchange(port, raw)), await get(port, "/livez")

    bad, after = run(scenario)
    assert bad.status == 400
    assert after.status == 200  # and the server carries on


def test_a_silent_client_is_dropped_after_the_timeout_without_holding_up_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http, "REQUEST_TIMEOUT_S", 0.3)

    async def scenario() -> tuple[bytes, float, list[float]]:
        async with serving({"/livez": ok}, max_clients=4) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic()
            others = []
            for _ in range(5):
                begin = time.monotonic()
                assert (await get(port, "/livez")).status == 200
                others.append(time.monotonic() - begin)
            dropped = await asyncio.wait_for(reader.read(), 5)
            waited = time.monotonic() - started
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            return dropped, waited, others

    dropped, waited, others = run(scenario)
    assert dropped == b""  # closed without an answer
    assert 0.25 <= waited < 2.0
    assert max(others) < 0.25  # answered while the silent one still held its slot


def test_clients_beyond_max_clients_are_told_busy_at_once() -> None:
    release = asyncio.Event()

    async def slow(_: Request) -> Response:
        await release.wait()
        return text(200, "slow")

    async def scenario() -> tuple[Answer, float, list[Answer]]:
        async with serving({"/slow": slow, "/livez": ok}, max_clients=2) as port:
            held = [asyncio.create_task(get(port, "/slow")) for _ in range(2)]
            await asyncio.sleep(0.2)  # both slots are taken by requests being answered
            begin = time.monotonic()
            answer = await get(port, "/livez")
            took = time.monotonic() - begin
            release.set()
            return answer, took, list(await asyncio.gather(*held))

    answer, took, slow_answers = run(scenario)
    assert (answer.status, answer.body) == (503, BUSY)
    assert took < 1.0  # at once, not after the slow requests
    assert [a.status for a in slow_answers] == [200, 200]


def test_silent_clients_do_not_take_the_slots() -> None:
    async def scenario() -> Answer:
        async with serving({"/livez": ok}, max_clients=2) as port:
            silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
            await asyncio.sleep(0.1)
            answer = await get(port, "/livez")
            for _, writer in silent:
                writer.close()
                await writer.wait_closed()
            return answer

    assert run(scenario).status == 200


# -- /metrics and /observe ----------------------------------------------------------------------


class Provider:
    """The observer's `snapshot` method: the newest snapshot, with a count of the calls."""

    def __init__(self, snapshot: Snapshot | None) -> None:
        self.snapshot = snapshot
        self.calls = 0

    def __call__(self) -> Snapshot | None:
        self.calls += 1
        return self.snapshot


def test_metrics_and_observe_serve_the_newest_snapshot() -> None:
    snapshot = full_snapshot()

    async def scenario() -> tuple[Answer, Answer]:
        async with serving(observe_routes(Provider(snapshot), lambda: True)) as port:
            return await get(port, "/metrics"), await get(port, "/observe")

    metrics, observe = run(scenario)
    assert metrics.status == 200
    assert metrics.headers["content-type"] == PROMETHEUS_TEXT
    families = {f.name for f in text_string_to_metric_families(metrics.body.decode())}
    assert "temper_agent_mode" in families
    assert observe.status == 200
    assert observe.headers["content-type"] == "application/json"
    assert json.loads(observe.body) == json.loads(json.dumps(snapshot.to_json()))


def test_before_the_first_snapshot_metrics_is_empty_and_observe_unavailable() -> None:
    async def scenario() -> tuple[Answer, Answer]:
        async with serving(observe_routes(Provider(None), lambda: False)) as port:
            return await get(port, "/metrics"), await get(port, "/observe")

    metrics, observe = run(scenario)
    assert (metrics.status, metrics.body) == (200, b"")
    assert (observe.status, observe.body) == (503, b"no observation yet\n")


def test_extra_routes_are_served_beside_the_probes() -> None:
    routes = observe_routes(Provider(None), lambda: True, {"/trace": ok})
    assert {"/livez", "/readyz", "/metrics", "/observe", "/trace"} <= set(routes)


def call(routes: Mapping[str, Route], path: str) -> Response:
    """Call a synchronous route directly, as the server would for GET `path`."""
    response = routes[path](Request("GET", path, {}, loopback=True))
    assert isinstance(response, Response)
    return response


def test_each_snapshot_is_rendered_once_however_often_it_is_scraped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    renders: list[Snapshot | None] = []

    def counted(registry: CollectorRegistry) -> bytes:
        renders.append(provider.snapshot)
        return render_metrics(registry)

    monkeypatch.setattr("temper.serve.endpoints.render_metrics", counted)
    provider = Provider(full_snapshot())
    routes = observe_routes(provider, lambda: True)
    scrapes = [call(routes, "/metrics").body for _ in range(5)]
    documents = [call(routes, "/observe").body for _ in range(5)]
    assert len(renders) == 1
    assert all(body is scrapes[0] for body in scrapes)  # the same bytes, not equal ones
    assert all(body is documents[0] for body in documents)

    provider.snapshot = replace(full_snapshot(), mode="stock")  # the next round
    newer = call(routes, "/metrics").body
    assert len(renders) == 2
    assert b'temper_agent_mode{mode="stock"} 1.0' in newer
    assert call(routes, "/observe").body is not documents[0]


# -- F8: a scrape storm -------------------------------------------------------------------------


async def storm(port: int, path: str, requests: int, clients: int) -> list[Answer]:
    """`requests` GETs of `path` from `clients` concurrent clients."""
    queue = list(range(requests))
    answers: list[Answer] = []

    async def client() -> None:
        while queue:
            queue.pop()
            answers.append(await get(port, path))

    await asyncio.gather(*(client() for _ in range(clients)))
    return answers


async def ticker(stop: asyncio.Event, period_s: float = 0.01) -> float:
    """A stand-in for the control loop: its worst lateness waking up, in seconds."""
    loop, worst = asyncio.get_running_loop(), 0.0
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(period_s)
        worst = max(worst, loop.time() - before - period_s)
    return worst


def test_a_scrape_storm_is_answered_without_delaying_the_control_loop() -> None:
    provider = Provider(full_snapshot())

    async def scenario() -> tuple[list[Answer], float]:
        async with serving(observe_routes(provider, lambda: True)) as port:
            stop = asyncio.Event()
            control = asyncio.create_task(ticker(stop))
            # The scrapers are other processes; here another thread with its own event loop.
            answers = await asyncio.to_thread(asyncio.run, storm(port, "/metrics", 200, 50))
            stop.set()
            return answers, await control

    answers, lateness_s = run(scenario)
    assert len(answers) == 200
    assert {a.status for a in answers} <= {200, 503}
    assert all(a.body == BUSY for a in answers if a.status == 503)
    bodies = {a.body for a in answers if a.status == 200}
    assert len(bodies) == 1  # one snapshot, one rendering
    assert list(text_string_to_metric_families(bodies.pop().decode()))
    assert lateness_s < 0.25


def test_a_storm_never_has_more_than_max_clients_in_a_route() -> None:
    in_route = most = 0

    async def slow(_: Request) -> Response:
        nonlocal in_route, most
        in_route += 1
        most = max(most, in_route)
        await asyncio.sleep(0.02)
        in_route -= 1
        return text(200, "ok")

    async def scenario() -> tuple[list[Answer], float]:
        async with serving({"/metrics": slow}, max_clients=8) as port:
            stop = asyncio.Event()
            control = asyncio.create_task(ticker(stop))
            answers = await asyncio.to_thread(asyncio.run, storm(port, "/metrics", 200, 50))
            stop.set()
            return answers, await control

    answers, lateness_s = run(scenario)
    statuses = [a.status for a in answers]
    assert len(statuses) == 200
    assert set(statuses) == {200, 503}  # the bound was reached, and answered busy
    assert most == 8
    assert lateness_s < 0.25
