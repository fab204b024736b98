"""What the agent tells the cluster: its Node annotations and Kubernetes Events.

`NodePublisher.run` is one task that owns every write. The agent hands it the annotations it
wants (`publish`) and the Events to post (`event`) without waiting; the task applies the newest
annotations with server-side apply under our field manager (only our keys, never the
operator's), posts queued Events in order, at most one round a second, and on failure backs
off and tries again with the then-newest annotations. A slow or absent API server therefore
never holds up enforcement, and no transition is lost while it is away: Events wait in a
bounded queue (the oldest are dropped, and counted, past `max_events`).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Callable, Mapping

from temper.kube.api import Backoff, Kube, KubeError, rfc3339
from temper.policy.contract import FIELD_MANAGER, node_apply_patch

log = logging.getLogger("temper.kube")
EVENT_NAMESPACE = "default"  # where Events about Nodes live (as the kubelet posts them)


class NodePublisher:
    def __init__(
        self,
        api: Kube,
        node: str,
        *,
        max_events: int = 100,
        min_interval_s: float = 1.0,
        on_error: Callable[[KubeError], None] | None = None,
        on_ok: Callable[[], None] | None = None,
    ) -> None:
        self.api = api
        # At most one round of writes per interval: under pod churn the tier load changes with
        # every event, and one Node patch per event per node would load the API server for
        # nothing; what is written is always the newest.
        self.min_interval_s = min_interval_s
        self.node = node
        self.node_uid = ""
        self.on_error = on_error
        self.on_ok = on_ok  # after each round that reached the API server
        self._wanted: dict[str, str] = {}
        self._applied: dict[str, str] | None = None
        self._events: collections.deque[dict[str, object]] = collections.deque(maxlen=max_events)
        self.dropped_events = 0
        self._wake = asyncio.Event()
        self._serial = itertools.count()

    def publish(self, annotations: Mapping[str, str]) -> None:
        """Ask for these annotation values (ours only); applied soon, newest wins."""
        if dict(annotations) != self._wanted:
            self._wanted = dict(annotations)
            self._wake.set()

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        """Queue an Event on our Node."""
        if len(self._events) == self._events.maxlen:
            self.dropped_events += 1
        now = rfc3339()
        self._events.append(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": f"{self.node}.temper.{time.time_ns():x}{next(self._serial)}",
                    "namespace": EVENT_NAMESPACE,
                },
                "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": self.node},
                "reason": reason,
                "message": message[:1024],
                "type": "Warning" if warning else "Normal",
                "source": {"component": FIELD_MANAGER, "host": self.node},
                "reportingComponent": FIELD_MANAGER,
                "reportingInstance": self.node,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
        )
        self._wake.set()

    @property
    def settled(self) -> bool:
        """Everything asked for has reached the API server."""
        applied = not self._wanted or self._applied == self._wanted
        return applied and not self._events

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                backoff.reset()
                if self.on_ok is not None:
                    self.on_ok()
                await asyncio.sleep(self.min_interval_s)
            except KubeError as exc:
                if self.on_error is not None:
                    self.on_error(exc)
                self._wake.set()
                await backoff.wait(exc.retry_after_s)

    async def flush(self) -> None:
        """Apply the wanted annotations and post the queued Events now; KubeError on failure."""
        wanted = self._wanted
        if wanted and wanted != self._applied:
            await self.api.apply_node(
                self.node, node_apply_patch(self.node, wanted.items()), FIELD_MANAGER
            )
            self._applied = wanted
        while self._events:
            body = self._events[0]
            if self.node_uid:
                involved = body["involvedObject"]
                assert isinstance(involved, dict)
                involved["uid"] = self.node_uid
            try:
                await self.api.create_event(EVENT_NAMESPACE, body)
            except KubeError as exc:
                if exc.status != 409:  # 409: posted before, its answer lost
                    raise
            self._events.popleft()
