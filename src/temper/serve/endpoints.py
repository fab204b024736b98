"""The agent's HTTP routes: probes, `/metrics`, `/observe`, and whatever extra the agent adds.

Each route reads a value already in memory; `/metrics` and `/observe` render each snapshot once
(`Cached`), however often they are scraped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from temper.policy.observe import Snapshot
from temper.serve.http import Cached, Request, Response, Route, text
from temper.serve.metrics import build_registry, render_metrics

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def probe_routes(ready: Callable[[], bool]) -> dict[str, Route]:
    """Live: the event loop answers. Ready: the agent made its first decision about the node."""

    def readyz(_: Request) -> Response:
        return text(200, "ok") if ready() else text(503, "starting")

    return {"/livez": lambda _: text(200, "ok"), "/readyz": readyz}


def observe_routes(
    snapshot: Callable[[], Snapshot | None],
    ready: Callable[[], bool],
    extra: Mapping[str, Route] | None = None,
) -> dict[str, Route]:
    """The probes plus `/metrics` and `/observe` over the newest snapshot, plus `extra`."""
    registry = build_registry(snapshot)
    metrics = Cached[Snapshot](lambda _: render_metrics(registry))
    document = Cached[Snapshot](lambda s: json.dumps(s.to_json(), indent=1).encode())

    def get_metrics(_: Request) -> Response:
        current = snapshot()
        if current is None:
            return Response(200, render_metrics(registry), PROMETHEUS_TEXT)
        return Response(200, metrics(current), PROMETHEUS_TEXT)

    def get_observe(_: Request) -> Response:
        current = snapshot()
        if current is None:
            return text(503, "no observation yet")
        return Response(200, document(current), "application/json")

    return {
        **probe_routes(ready),
        "/metrics": get_metrics,
        "/observe": get_observe,
        **(extra or {}),
    }
