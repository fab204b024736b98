"""`POST /trace`: a bounded sched_switch/sched_wakeup capture of selected tiers, on request.

    curl -X POST 'http://127.0.0.1:9479/trace?tiers=critical,high&seconds=5'

The agent picks the threads of the asked tiers from its last discovery, records them through a
private tracefs instance (`temper.host.tracefs`) for `seconds` (default 5, at most 60) and at
most `max_mb` (at most 64), and writes the file under `<state-dir>/traces/` with a name it
chooses (docs/reliability.md row F7: no caller-given paths). The answer is JSON: the file, its
size and events, and the wake-to-run summary per tier. The file is ftrace's text format, which
Perfetto's UI opens. One capture runs at a time (409 for a second); the newest `keep` files are
kept. Served to loopback callers only: capture is not for every in-cluster scraper that may
read `/metrics`. The gRPC API (`CaptureTrace`, `temper-cli trace capture`) uses the same
`TraceService.start`, with its caller checks and audit.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from temper.agent.observer import Observer
from temper.host.errors import HostError, TraceBusy
from temper.host.tracefs import TraceCapture, capture_sched_trace
from temper.policy.errors import TraceRequestError
from temper.policy.schedtrace import (
    DEFAULT_SECONDS,
    WakeToRun,
    check_trace_request,
    summarize_wake_to_run,
)
from temper.policy.tiers import Tier
from temper.serve.http import Request, Response, text

MIB = 1024 * 1024


Capture = Callable[..., TraceCapture]  # capture_sched_trace's signature


class NoThreads(Exception):
    """The asked tiers have no threads on this node: nothing to trace."""


@dataclass(frozen=True)
class TraceResult:
    capture: TraceCapture
    tiers: tuple[Tier, ...]
    threads: int
    wake_to_run: tuple[WakeToRun, ...]

    def to_json(self) -> dict[str, object]:
        fields = asdict(self.capture)
        return {
            **{k: str(v) if isinstance(v, Path) else v for k, v in fields.items()},
            "tiers": [t.value for t in self.tiers],
            "threads": self.threads,
            "wake_to_run": [asdict(row) for row in self.wake_to_run],
        }


class TraceService:
    """The `/trace` route. `capture` is `capture_sched_trace` unless a test gives a fake."""

    def __init__(
        self,
        tracefs: Path,
        out_dir: Path,
        observer: Observer,
        keep: int = 5,
        capture: Capture = capture_sched_trace,
    ) -> None:
        self.tracefs = tracefs
        self.out_dir = out_dir
        self.observer = observer
        self.keep = keep
        self.capture = capture

        self._running = False

    def start(
        self, tiers: list[Tier], seconds: float, max_bytes: int | None
    ) -> tuple[float, asyncio.Task[TraceResult]]:
        """Check the request and start the capture: its duration and the task that ends with
        it. TraceRequestError out of bounds, NoThreads, TraceBusy while one runs."""
        seconds, checked_bytes = check_trace_request(seconds, max_bytes)
        if self._running:
            raise TraceBusy(self.tracefs)
        tier_of = self.observer.tier_of_threads(frozenset(tiers))
        if not tier_of:
            names = ", ".join(t.value for t in tiers)
            raise NoThreads(f"no threads of tier {names} on this node to trace")
        self._running = True
        job = asyncio.to_thread(self._capture, tiers, tier_of, seconds, checked_bytes)
        task = asyncio.ensure_future(job)
        task.add_done_callback(lambda _: setattr(self, "_running", False))
        return seconds, task

    async def __call__(self, request: Request) -> Response:
        refused = _refusal(request)
        if refused is not None:
            return refused
        try:
            _, task = self.start(*_parse(request))
            answer = await task
        except TraceRequestError as exc:
            return text(400, str(exc))
        except (TraceBusy, NoThreads) as exc:
            return text(409, str(exc))
        except HostError as exc:
            return text(500, str(exc))
        return Response(200, json.dumps(answer.to_json()).encode(), "application/json")

    def _capture(
        self, tiers: list[Tier], tier_of: dict[int, Tier], seconds: float, max_bytes: int
    ) -> TraceResult:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        out = self.out_dir / f"sched-{stamp}-{'-'.join(t.value for t in tiers)}.trace.txt"
        capture = self.capture(
            self.tracefs, out, seconds=seconds, max_bytes=max_bytes, pids=tier_of
        )
        with out.open(encoding="utf-8", errors="replace") as lines:
            summary = summarize_wake_to_run(
                lines, {tid: t.value for tid, t in tier_of.items()}, [t.value for t in tiers]
            )
        self._prune()
        return TraceResult(capture, tuple(tiers), len(tier_of), tuple(summary))

    def _prune(self) -> None:
        files = sorted(self.out_dir.glob("sched-*.trace.txt"), key=lambda p: p.stat().st_mtime)
        for old in files[: -self.keep]:
            old.unlink(missing_ok=True)


def _refusal(request: Request) -> Response | None:
    if request.method != "POST":
        return text(405, "use POST to start a capture")
    if not request.loopback:
        return text(403, "trace capture is served to callers on this node's loopback only")
    return None


def _parse(request: Request) -> tuple[list[Tier], float, int | None]:
    names = [n for value in request.query.get("tiers", []) for n in value.split(",") if n]
    known = {t.value: t for t in Tier}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise TraceRequestError(f"tiers: unknown {unknown}; known: {', '.join(known)}")
    tiers = [t for t in Tier if t.value in names] or list(Tier)
    seconds = _number(request, "seconds", DEFAULT_SECONDS)
    max_mb = request.query.get("max_mb")
    max_bytes = int(_number(request, "max_mb", 0) * MIB) if max_mb else None
    return tiers, seconds, max_bytes


def _number(request: Request, name: str, default: float) -> float:
    values = request.query.get(name)
    if not values:
        return default
    try:
        return float(values[-1])
    except ValueError:
        raise TraceRequestError(f"{name}: {values[-1]!r} is not a number") from None
