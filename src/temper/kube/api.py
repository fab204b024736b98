"""The few Kubernetes API calls the agent makes, over kubernetes_asyncio (docs/adr/0005).

kubernetes_asyncio gives us configuration (a kubeconfig file, or the in-cluster service account
with its token re-read as the kubelet rotates it), TLS and authentication. We call it with
`_preload_content=False` and read the JSON ourselves: the agent works on plain dicts (the same
parser reads manifests from disk), reads watch streams line by line, and turns every non-2xx
answer into one `ApiError` that says whether and when to retry.

Every request has a deadline; a watch has a read deadline, so a connection that hangs without
closing is noticed.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config

APPLY_PATCH = "application/apply-patch+yaml"


class ApiError(Exception):
    """An API request failed: `status` 0 means no answer (refused, reset, timed out)."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{status or 'no answer'}: {message}" if status else message)
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def gone(self) -> bool:
        """410: the resourceVersion is older than the API server keeps; list again."""
        return self.status == 410


async def load_config(kubeconfig: Path | None) -> client.Configuration:
    """The API's address and credentials: from `kubeconfig`, else the pod's service account."""
    configuration = client.Configuration()
    try:
        if kubeconfig is not None:
            await config.load_kube_config(
                config_file=str(kubeconfig), client_configuration=configuration
            )
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError, ValueError) as exc:
        where = kubeconfig or "the in-cluster service account"
        raise ApiError(0, f"cannot load API configuration from {where}: {exc}") from exc
    return configuration


@dataclass(frozen=True)
class Timeouts:
    request_s: float = 30.0
    # A watch asks the server to end it after `watch_s` (it then resumes from the last
    # resourceVersion); no byte for `watch_read_s` (bookmarks arrive about once a minute)
    # means the connection hangs.
    watch_s: int = 240
    watch_read_s: float = 120.0
    connect_s: float = 10.0


class KubeApi:
    """Raw calls: lists and objects as dicts, watches as async iterators of event dicts."""

    def __init__(self, configuration: client.Configuration, timeouts: Timeouts | None = None):
        self._client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self._client)
        self.timeouts = timeouts or Timeouts()

    async def close(self) -> None:
        await self._client.close()

    async def list_pods(self, node: str) -> dict[str, Any]:
        return await self._json(
            self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={node}",
                _preload_content=False,
                _request_timeout=self._request_timeout(),
            )
        )

    def watch_pods(self, node: str, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        return self._watch(
            self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={node}",
                resource_version=resource_version,
                watch=True,
                allow_watch_bookmarks=True,
                timeout_seconds=self._watch_seconds(),
                _preload_content=False,
                _request_timeout=self._watch_timeout(),
            )
        )

    async def read_node(self, node: str) -> dict[str, Any]:
        return await self._json(
            self.core.read_node(
                node, _preload_content=False, _request_timeout=self._request_timeout()
            )
        )

    def watch_node(self, node: str, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        return self._watch(
            self.core.list_node(
                field_selector=f"metadata.name={node}",
                resource_version=resource_version,
                watch=True,
                allow_watch_bookmarks=True,
                timeout_seconds=self._watch_seconds(),
                _preload_content=False,
                _request_timeout=self._watch_timeout(),
            )
        )

    async def apply_node(self, node: str, body: dict[str, Any], field_manager: str) -> None:
        """Server-side apply to our own Node: only the fields in `body` become ours."""
        await self._json(
            self.core.patch_node(  # type: ignore[call-arg]  # _content_type: accepted, not typed
                node,
                body,
                field_manager=field_manager,
                force=True,
                _content_type=APPLY_PATCH,
                _preload_content=False,
                _request_timeout=self._request_timeout(),
            )
        )

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        await self._json(
            self.core.create_namespaced_event(
                namespace,
                body,  # type: ignore[arg-type]  # a dict serialises as well as the model
                _preload_content=False,
                _request_timeout=self._request_timeout(),
            )
        )

    # -- plumbing -----------------------------------------------------------------------------

    def _request_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=self.timeouts.request_s, connect=self.timeouts.connect_s)

    def _watch_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            sock_connect=self.timeouts.connect_s, sock_read=self.timeouts.watch_read_s
        )

    def _watch_seconds(self) -> int:
        # Spread the servers' watch endings so a fleet's agents do not all resume at once.
        return int(self.timeouts.watch_s * random.uniform(0.8, 1.0))

    async def _respond(self, call: Any) -> aiohttp.ClientResponse:
        try:
            response: aiohttp.ClientResponse = await call
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ApiError(0, f"{type(exc).__name__}: {exc}") from exc
        if not 200 <= response.status < 300:
            try:
                text = (await response.text())[:300]
            except (aiohttp.ClientError, TimeoutError):
                text = ""
            finally:
                response.release()
            raise ApiError(response.status, text or response.reason or "", _retry_after(response))
        return response

    async def _json(self, call: Any) -> dict[str, Any]:
        response = await self._respond(call)
        try:
            data: dict[str, Any] = json.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(0, f"reading the answer: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:
            raise ApiError(0, f"the answer is not JSON: {exc}") from exc
        finally:
            response.release()
        return data

    async def _watch(self, call: Any) -> AsyncIterator[dict[str, Any]]:
        """The watch's events until the server ends it; ApiError on a failure or an ERROR event."""
        response = await self._respond(call)
        try:
            while True:
                try:
                    line = await response.content.readline()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise ApiError(0, f"watch stream: {type(exc).__name__}: {exc}") from exc
                if not line:
                    return
                try:
                    event = json.loads(line)
                except ValueError as exc:
                    raise ApiError(0, f"watch stream: not JSON: {line[:100]!r}") from exc
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise ApiError(int(status.get("code") or 0), str(status.get("message")))
                yield event
        finally:
            response.close()


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
