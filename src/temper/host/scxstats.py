"""A client for scx_layered's statistics socket (scx_stats protocol).

scx_layered serves line-delimited JSON on a UNIX socket at `/var/run/scx/root/stats`: one
request per line, one response per line (scx_stats 1.1.2 `server.rs`). A `stats` request returns
the system and per-layer statistics; each connection keeps its own baseline, so rates are deltas
since that connection's previous request (docs/scx-layered.md#the-stats-socket). Task counts are not
rates, which is what placement checks need.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temper.host.errors import HostError

STATS_SOCKET = Path("var/run/scx/root/stats")
_MAX_RESPONSE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class LayerStats:
    tasks: int  # tasks currently in the layer
    util: float  # 100 = one CPU
    cur_nr_cpus: int  # CPUs the layer owns now
    cpus: tuple[int, ...] = ()  # which CPUs: from the `cpus` bitmask (64-bit words, CPU 0 first)


def read_layer_stats(root: Path, timeout_s: float = 5.0) -> dict[str, LayerStats]:
    """Per-layer statistics from the running scx_layered under host root `root`."""
    response = request_stats(root / STATS_SOCKET, timeout_s)
    layers = response.get("layers", {})
    return {
        name: LayerStats(
            int(s.get("tasks", 0)),
            float(s.get("util", 0.0)),
            int(s.get("cur_nr_cpus", 0)),
            parse_cpu_mask(s.get("cpus", [])),
        )
        for name, s in layers.items()
    }


def parse_cpu_mask(words: object) -> tuple[int, ...]:
    """The CPUs set in a bitmask given as a list of 64-bit words; () for anything else."""
    if not isinstance(words, list):
        return ()
    return tuple(
        index * 64 + bit
        for index, word in enumerate(words)
        if isinstance(word, int)
        for bit in range(64)
        if word >> bit & 1
    )


def request_stats(path: Path, timeout_s: float) -> dict[str, Any]:
    """One `stats` request on a new connection to the socket at `path`; the `resp` object of the
    answer. Its rates cover nothing before the connection: hold a `StatsConnection` for them."""
    with StatsConnection(path, timeout_s) as conn:
        return conn.request()


class StatsConnection:
    """One connection to the stats socket, held: each `request()` answers with the rates since
    this connection's previous request."""

    def __init__(self, path: Path, timeout_s: float = 5.0) -> None:
        self.path = path
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._conn.settimeout(timeout_s)
            self._conn.connect(str(path))
        except OSError as exc:
            self._conn.close()
            raise HostError(f"{path}: cannot read scx_layered stats: {exc}") from exc

    def __enter__(self) -> StatsConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def request(self) -> dict[str, Any]:
        """The `resp` object of one `stats` request."""
        try:
            self._conn.sendall(b'{"req":"stats","args":{"target":"top"}}\n')
            line = _read_line(self._conn)
        except OSError as exc:
            raise HostError(f"{self.path}: cannot read scx_layered stats: {exc}") from exc
        try:
            answer = json.loads(line)
        except ValueError as exc:
            raise HostError(f"{self.path}: malformed stats response") from exc
        if answer.get("errno", 0) != 0:
            raise HostError(f"{self.path}: stats request failed: {answer.get('args')}")
        resp: dict[str, Any] = answer.get("args", {}).get("resp", {})
        return resp


def _read_line(conn: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n") or size > _MAX_RESPONSE_BYTES:
            break
    return b"".join(chunks)
