"""The pod source from the API server: this node's pods, listed, then watched.

`watch_node_pods` yields a `PodSnapshot` (the same type the pod directory yields) after the first
list and after every change. The rules it keeps (docs/reliability.md rows C1-C8):

- it asks only for `spec.nodeName=<node>` pods, with bookmarks, and resumes each watch from the
  last resourceVersion it saw (events and bookmarks), so nothing between two watches is missed;
- on 410 Gone (the server no longer has that resourceVersion) it lists again, and the new list
  replaces the old state whole: a deletion missed while disconnected is applied then;
- a failed list changes nothing: the last snapshot stands until a list succeeds;
- an empty list when pods were known is confirmed by a second list before it is believed (an
  API server can answer empty while its cache fills);
- failures back off with jitter, at least as long as a 429's Retry-After says.

A pod the parser rejects is left out and named in the snapshot's errors; the rest still count.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from temper.kube.api import Backoff, Kube, KubeError
from temper.policy.errors import PolicyError
from temper.policy.pods import Pod, PodSnapshot, parse_pod


@dataclass
class _State:
    pods: dict[str, Pod] = field(default_factory=dict)  # by "namespace/name"
    errors: dict[str, str] = field(default_factory=dict)  # by "namespace/name"
    resource_version: str | None = None  # None: list before watching
    changes: int = 0  # snapshots taken

    def snapshot(self) -> PodSnapshot:
        """The pods in name order; the fingerprint counts changes (a snapshot is only taken
        after one), so it costs nothing per event however many pods there are."""
        self.changes += 1
        ordered = sorted(self.pods.items())
        return PodSnapshot(
            pods=tuple(pod for _, pod in ordered),
            errors=tuple(self.errors[key] for key in sorted(self.errors)),
            fingerprint=f"api:{self.changes}",
        )

    def replace(self, items: list[dict[str, Any]], resource_version: str) -> None:
        self.pods.clear()
        self.errors.clear()
        for item in items:
            self.upsert(item)
        self.resource_version = resource_version

    def upsert(self, obj: dict[str, Any]) -> None:
        key = _key(obj)
        self.errors.pop(key, None)
        try:
            self.pods[key] = parse_pod(obj, f"pod {key}")
        except PolicyError as exc:
            self.pods.pop(key, None)
            self.errors[key] = str(exc)

    def delete(self, obj: dict[str, Any]) -> None:
        key = _key(obj)
        self.pods.pop(key, None)
        self.errors.pop(key, None)


def _key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


@dataclass(frozen=True)
class PodWatchSettings:
    confirm_empty_s: float = 2.0  # wait before the list that confirms an empty one


async def watch_node_pods(
    api: Kube,
    node: str,
    settings: PodWatchSettings | None = None,
    on_error: Callable[[KubeError], None] | None = None,
) -> AsyncIterator[PodSnapshot]:
    """This node's pods: one snapshot after the first list, then one per change. Never ends."""
    settings = settings or PodWatchSettings()
    state = _State()
    backoff = Backoff()
    listed_once = False
    while True:
        try:
            if state.resource_version is None:
                await _list(api, node, state, settings, listed_once)
                listed_once = True
                backoff.reset()
                yield state.snapshot()
            async for event in api.watch_pods(node, state.resource_version or ""):
                if _apply(state, event):
                    yield state.snapshot()
                backoff.reset()
            backoff.reset()  # the watch ran its course: resume from the last resourceVersion
        except KubeError as exc:
            if on_error is not None:
                on_error(exc)
            if exc.gone:  # list again at once: the watch cannot resume
                state.resource_version = None
                continue
            await backoff.wait(exc.retry_after_s)


async def _list(
    api: Kube, node: str, state: _State, settings: PodWatchSettings, listed_once: bool
) -> None:
    answer = await api.list_pods(node)
    items = answer.get("items") or []
    if not items and listed_once and state.pods:
        await asyncio.sleep(settings.confirm_empty_s)
        answer = await api.list_pods(node)
        items = answer.get("items") or []
    state.replace(items, str((answer.get("metadata") or {}).get("resourceVersion") or ""))


def _apply(state: _State, event: dict[str, Any]) -> bool:
    """Apply one watch event; True when the pod set changed."""
    kind = event.get("type")
    obj = event.get("object") or {}
    version = (obj.get("metadata") or {}).get("resourceVersion")
    if version:
        state.resource_version = str(version)
    if kind in ("ADDED", "MODIFIED"):
        state.upsert(obj)
        return True
    if kind == "DELETED":
        state.delete(obj)
        return True
    return False  # BOOKMARK: only the resourceVersion moves
