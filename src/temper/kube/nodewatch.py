"""The agent's own Node: the kill switch, read, watched, and remembered on the host.

`watch_node` reads the Node, then watches it alone (`metadata.name=<node>`), and yields a
`WatchedNode` (the `temper.io/safe-mode` value and the Node's uid) each time it changes. The
agent keeps the last value in the state directory (`KillSwitchFile`) so that a restarted agent
honours it before the API answers; a cold start with the API unreachable and nothing kept stays
unknown, and unknown never loads.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temper.kube.api import Backoff, Kube, KubeError, rfc3339
from temper.policy.contract import SAFE_MODE_KEY, KillSwitch, kill_switch_value

log = logging.getLogger("temper.kube")
KILL_SWITCH_FILE = "kill-switch.json"


@dataclass(frozen=True)
class WatchedNode:
    """What the agent learnt from its Node: the kill switch and the Node's uid (for Events)."""

    kill_switch: KillSwitch
    raw: str | None  # the annotation's value as set
    uid: str


class KillSwitchFile:
    """The last kill switch value seen, on the host, written atomically."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / KILL_SWITCH_FILE

    def read(self) -> KillSwitch | None:
        """The remembered value; None when nothing (or nothing readable) was kept."""
        try:
            data = json.loads(self.path.read_text())
            return kill_switch_value(data["value"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s unreadable (%s); kill switch unknown", self.path, exc)
            return None

    def write(self, raw: str | None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps({"value": raw, "seen": rfc3339()}))
        os.replace(partial, self.path)


def _view(node: dict[str, Any]) -> WatchedNode:
    meta = node.get("metadata") or {}
    raw = (meta.get("annotations") or {}).get(SAFE_MODE_KEY)
    return WatchedNode(kill_switch_value(raw), raw, str(meta.get("uid") or ""))


async def watch_node(
    api: Kube, node: str, on_error: Callable[[KubeError], None] | None = None
) -> AsyncIterator[WatchedNode]:
    """The Node's view now, then each time it changes. Never ends; errors back off."""
    backoff = Backoff()
    last: WatchedNode | None = None
    version: str | None = None
    while True:
        try:
            if version is None:
                obj = await api.read_node(node)
                version = str(obj["metadata"].get("resourceVersion") or "")
                backoff.reset()
                if (view := _view(obj)) != last:
                    last = view
                    yield view
            async for event in api.watch_node(node, version):
                obj = event.get("object") or {}
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if event.get("type") in ("ADDED", "MODIFIED") and (view := _view(obj)) != last:
                    last = view
                    yield view
                backoff.reset()
            backoff.reset()  # the watch ran its course: resume from the last resourceVersion
        except KubeError as exc:
            version = None  # read the Node again: it is one object, cheaper than reasoning
            if not exc.gone and on_error is not None:
                on_error(exc)
            if not exc.gone:
                await backoff.wait(exc.retry_after_s)
