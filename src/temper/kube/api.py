"""The few Kubernetes API calls the agent makes, over aiohttp (docs/adr/0005).

`Kube` is the port: the six calls the pod watch, the Node watch and the publisher make.
`KubeApi` makes them over HTTP; `temper_testing.kube.fakeapi.FakeKube` answers them from a script.

Plain HTTP on aiohttp, with the JSON read as dicts: the agent parses pods with the same code
that reads manifests from disk, reads watch streams line by line, and turns every non-2xx
answer into one `KubeError` that says whether and when to retry. Configuration (kubeconfig or
service account) is `temper.kube.config`.

Every request has a deadline; a watch has a read deadline, so a connection that hangs without
closing is noticed.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from temper.kube.config import ApiConfig, ConfigError
from temper.kube.config import load_config as _load_config

APPLY_PATCH = "application/apply-patch+yaml"
USER_AGENT = "temper-agent"
MIN_WATCH_S = 1.0  # a watch that ends sooner, without an event, counts as a failure


class KubeError(Exception):
    """An API server request failed: `status` 0 means no answer (refused, reset, timed out)."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def gone(self) -> bool:
        """410: the resourceVersion is older than the API server keeps; list again."""
        return self.status == 410


async def load_config(kubeconfig: Path | None) -> ApiConfig:
    """The API's address and credentials: from `kubeconfig`, else the pod's service account."""
    try:
        return _load_config(kubeconfig)
    except ConfigError as exc:
        raise KubeError(0, str(exc)) from exc


@dataclass(frozen=True)
class Timeouts:
    request_s: float = 30.0
    # A watch asks the server to end it after `watch_s` (it then resumes from the last
    # resourceVersion). A watch with no byte for `watch_read_s` ends quietly and is reopened:
    # the connection may hang without closing, and a quiet cluster sends no bookmarks either
    # (measured on 1.35: none in 80 s while no pod anywhere changed), so silence is no error;
    # a hung server then fails the reopen, and that is reported.
    watch_s: int = 240
    watch_read_s: float = 120.0
    connect_s: float = 10.0


class Kube(Protocol):
    """The API server calls the agent makes: lists and objects as dicts, watches as async
    iterators of event dicts. Each raises `KubeError` when it fails."""

    async def list_pods(self, node: str) -> dict[str, Any]: ...
    def watch_pods(self, node: str, resource_version: str) -> AsyncIterator[dict[str, Any]]: ...
    async def read_node(self, node: str) -> dict[str, Any]: ...
    def watch_node(self, node: str, resource_version: str) -> AsyncIterator[dict[str, Any]]: ...
    async def apply_node(self, node: str, body: dict[str, Any], field_manager: str) -> None: ...
    async def create_event(self, namespace: str, body: dict[str, Any]) -> None: ...


class KubeApi:
    """`Kube` over HTTP, on one aiohttp session."""

    def __init__(self, config: ApiConfig, timeouts: Timeouts | None = None):
        self.config = config
        self.timeouts = timeouts or Timeouts()
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def list_pods(self, node: str) -> dict[str, Any]:
        query = {"fieldSelector": f"spec.nodeName={node}"}
        return await self._json("GET", "/api/v1/pods", query)

    def watch_pods(self, node: str, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        return self._watch("/api/v1/pods", f"spec.nodeName={node}", resource_version)

    async def read_node(self, node: str) -> dict[str, Any]:
        return await self._json("GET", f"/api/v1/nodes/{quote(node)}")

    def watch_node(self, node: str, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        return self._watch("/api/v1/nodes", f"metadata.name={node}", resource_version)

    async def apply_node(self, node: str, body: dict[str, Any], field_manager: str) -> None:
        """Server-side apply to our own Node: only the fields in `body` become ours."""
        query = {"fieldManager": field_manager, "force": "true"}
        await self._json("PATCH", f"/api/v1/nodes/{quote(node)}", query, body, APPLY_PATCH)

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        await self._json("POST", f"/api/v1/namespaces/{quote(namespace)}/events", None, body)

    # -- plumbing -----------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.config.ssl_context, limit=8),
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            )
        return self._session

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {}
        try:
            authorization = self.config.authorization()
        except ConfigError as exc:
            raise KubeError(0, str(exc)) from exc
        if authorization:
            headers["Authorization"] = authorization
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None,
        body: dict[str, Any] | None,
        content_type: str | None,
        timeout: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        data = json.dumps(body).encode() if body is not None else None
        if data is not None and content_type is None:
            content_type = "application/json"
        try:
            response = await self._http().request(
                method,
                self.config.server + path,
                params=query,
                data=data,
                headers=self._headers(content_type),
                timeout=timeout,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise KubeError(0, f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if not 200 <= response.status < 300:
            try:
                text = (await response.text())[:300]
            except (aiohttp.ClientError, TimeoutError):
                text = ""
            finally:
                response.release()
            message = _status_message(text) or response.reason or ""
            raise KubeError(response.status, f"{method} {path}: {message}", _retry_after(response))
        return response

    async def _json(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(
            total=self.timeouts.request_s, connect=self.timeouts.connect_s
        )
        response = await self._send(
            method, path, query=query, body=body, content_type=content_type, timeout=timeout
        )
        try:
            data: dict[str, Any] = json.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeError(0, f"{method} {path}: reading the answer: {exc!r}") from exc
        except ValueError as exc:
            raise KubeError(0, f"{method} {path}: the answer is not JSON: {exc}") from exc
        finally:
            response.release()
        return data

    async def _watch(
        self, path: str, field_selector: str, resource_version: str
    ) -> AsyncIterator[dict[str, Any]]:
        """The watch's events until the server ends it; KubeError on a failure or an ERROR event."""
        query = {
            "watch": "true",
            "fieldSelector": field_selector,
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            # Spread the servers' watch endings so a fleet's agents do not resume at once.
            "timeoutSeconds": str(int(self.timeouts.watch_s * random.uniform(0.8, 1.0))),
        }
        timeout = aiohttp.ClientTimeout(
            sock_connect=self.timeouts.connect_s, sock_read=self.timeouts.watch_read_s
        )
        opened = time.monotonic()
        events = 0
        response = await self._send(
            "GET", path, query=query, body=None, content_type=None, timeout=timeout
        )
        try:
            while True:
                try:
                    line = await response.content.readline()
                except TimeoutError:
                    return  # silence: the caller reopens from the last resourceVersion
                except aiohttp.ClientError as exc:
                    raise KubeError(0, f"watch {path}: {type(exc).__name__}: {exc}") from exc
                if not line:
                    if not events and time.monotonic() - opened < MIN_WATCH_S:
                        # A server ends a healthy watch after timeoutSeconds; one that ends
                        # at once is failing, and must be backed off from, not reopened.
                        raise KubeError(0, f"watch {path}: ended at once without an event")
                    return
                try:
                    event = json.loads(line)
                except ValueError as exc:
                    raise KubeError(0, f"watch {path}: not JSON: {line[:100]!r}") from exc
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    code = int(status.get("code") or 0)
                    raise KubeError(code, f"watch {path}: {status.get('message')}")
                events += 1
                yield event
        finally:
            response.close()


def _status_message(text: str) -> str:
    """The message of a Kubernetes Status body, or the text itself."""
    try:
        status = json.loads(text)
    except ValueError:
        return text
    return str(status.get("message") or text) if isinstance(status, dict) else text


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@dataclass
class Backoff:
    """Exponential backoff with jitter; a server's Retry-After is a floor, capped at `max_s`."""

    first_s: float = 0.5
    max_s: float = 30.0
    attempt: int = 0

    def delay(self, retry_after_s: float | None = None) -> float:
        ceiling = min(self.max_s, self.first_s * 2**self.attempt)
        self.attempt += 1
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.max_s))
        return delay

    async def wait(self, retry_after_s: float | None = None) -> float:
        delay = self.delay(retry_after_s)
        await asyncio.sleep(delay)
        return delay

    def reset(self) -> None:
        self.attempt = 0


def rfc3339(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
