"""The fake beside the `Kube` port: every call answered from a script the test writes.

Each list and Node read takes the next answer from its script (an object, or a `KubeError` to
raise) and each watch the next script of events; every call is recorded. A watch whose script
is used up stays open and silent, as an idle watch does, and `END` in a script ends the watch
as the server does after its timeout. A list or read with nothing scripted never answers, so a
test that expects no more calls fails on its deadline instead of passing by accident. Applies
and Events are kept, or fail with the errors queued in `apply_failures` / `event_failures`.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Sequence
from typing import Any

from temper.kube.api import KubeError

Answer = dict[str, Any] | KubeError
END: dict[str, Any] = {"type": "END"}  # in a watch script: the server ends the watch


class FakeKube:
    """`Kube` for one node, answered from scripts."""

    def __init__(
        self,
        node: str,
        *,
        lists: Sequence[Answer] = (),
        pod_watches: Sequence[list[Answer]] = (),
        reads: Sequence[Answer] = (),
        node_watches: Sequence[list[Answer]] = (),
    ) -> None:
        self.node = node
        self.lists = list(lists)
        self.pod_watches = list(pod_watches)
        self.reads = list(reads)
        self.node_watches = list(node_watches)
        self.list_calls = 0
        self.read_calls = 0
        self.pod_watch_versions: list[str] = []
        self.node_watch_versions: list[str] = []
        self.applies: list[tuple[str, dict[str, Any], str]] = []
        self.apply_failures: list[KubeError] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.event_failures: list[KubeError] = []

    async def list_pods(self, node: str) -> dict[str, Any]:
        self._check(node)
        self.list_calls += 1
        return await _answer(self.lists)

    def watch_pods(self, node: str, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        self._check(node)
        self.pod_watch_versions.append(resource_version)
        return _stream(self.pod_watches.pop(0) if self.pod_watches else [])

    async def read_node(self, node: str) -> dict[str, Any]:
        self._check(node)
        self.read_calls += 1
        return await _answer(self.reads)

    def watch_node(self, node: str, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        self._check(node)
        self.node_watch_versions.append(resource_version)
        return _stream(self.node_watches.pop(0) if self.node_watches else [])

    async def apply_node(self, node: str, body: dict[str, Any], field_manager: str) -> None:
        if self.apply_failures:
            raise self.apply_failures.pop(0)
        self.applies.append((node, copy.deepcopy(body), field_manager))

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        if self.event_failures:
            raise self.event_failures.pop(0)
        self.events.append((namespace, copy.deepcopy(body)))

    def _check(self, node: str) -> None:
        if node != self.node:
            raise AssertionError(f"asked about node {node!r}, not {self.node!r}")


async def _answer(script: list[Answer]) -> dict[str, Any]:
    if not script:
        await asyncio.Event().wait()  # nothing scripted: never answers
    answer = script.pop(0)
    if isinstance(answer, KubeError):
        raise answer
    return copy.deepcopy(answer)


async def _stream(script: list[Answer]) -> AsyncIterator[dict[str, Any]]:
    for item in script:
        await asyncio.sleep(0)
        if isinstance(item, KubeError):
            raise item
        if item.get("type") == "END":
            return
        yield copy.deepcopy(item)
    await asyncio.Event().wait()  # an idle watch: open, silent
