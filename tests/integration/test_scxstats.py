"""The scx_stats client against a local UNIX-socket server speaking the same protocol."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from temper.host.errors import HostError
from temper.host.scxstats import STATS_SOCKET, LayerStats, StatsConnection, read_layer_stats


def serve_once(path: Path, answer: bytes) -> threading.Thread:
    path.parent.mkdir(parents=True, exist_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    seen: list[bytes] = []

    def run() -> None:
        conn, _ = server.accept()
        with conn:
            seen.append(conn.recv(4096))
            conn.sendall(answer)
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.seen = seen  # type: ignore[attr-defined]
    return thread


def test_reads_per_layer_task_counts(tmp_path: Path) -> None:
    resp = {
        "busy": 12.0,
        "layers": {
            "critical": {"tasks": 7, "util": 93.5, "cur_nr_cpus": 3, "cpus": [0b101, 1]},
            "host": {"tasks": 120, "util": 3.0, "cur_nr_cpus": 0},
        },
    }
    root = tmp_path
    server = serve_once(
        root / STATS_SOCKET, json.dumps({"errno": 0, "args": {"resp": resp}}).encode() + b"\n"
    )
    stats = read_layer_stats(root)
    server.join(5)
    assert stats == {
        "critical": LayerStats(7, 93.5, 3, (0, 2, 64)),
        "host": LayerStats(120, 3.0, 0),
    }
    request = json.loads(server.seen[0])  # type: ignore[attr-defined]
    assert request == {"req": "stats", "args": {"target": "top"}}


def test_an_error_answer_is_a_host_error(tmp_path: Path) -> None:
    root = tmp_path
    serve_once(root / STATS_SOCKET, b'{"errno": 22, "args": {"resp": "unknown stat target"}}\n')
    with pytest.raises(HostError, match="failed"):
        read_layer_stats(root)


def test_no_scheduler_means_no_socket(tmp_path: Path) -> None:
    with pytest.raises(HostError, match="cannot read"):
        read_layer_stats(tmp_path)


def test_a_held_connection_asks_again_on_the_same_socket(tmp_path: Path) -> None:
    path = tmp_path / "stats"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    accepted: list[int] = []

    def run() -> None:  # answers each request with how many this connection has made
        conn, _ = server.accept()
        accepted.append(1)
        with conn:
            for n in range(2):
                conn.recv(4096)
                conn.sendall(json.dumps({"errno": 0, "args": {"resp": {"n": n}}}).encode() + b"\n")
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    with StatsConnection(path) as conn:
        assert [conn.request()["n"], conn.request()["n"]] == [0, 1]
    thread.join(5)
    assert accepted == [1]  # one connection: the second answer covers the time since the first
