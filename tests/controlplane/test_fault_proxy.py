"""`FaultProxy` itself, against the real kube-apiserver: stopping it while watches stream through
it must close every connection it holds, on both sides. A socket left to the garbage collector
fails whichever test happens to be running when it is collected (a CI run lost
`test_chart.py` to one), so the leak is caught here, where it is made.
"""

from __future__ import annotations

import gc
import http.client
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Cluster
from temper_testing.kubetest.controlplane import ControlPlane
from temper_testing.kubetest.faultproxy import FaultProxy

WATCHES = 6
GETS = 4


@pytest.fixture
def unraisable() -> Iterator[list[Any]]:
    """What the interpreter could not raise (a ResourceWarning from a socket's finaliser)."""
    caught: list[Any] = []
    hook = sys.unraisablehook
    sys.unraisablehook = caught.append
    try:
        yield caught
    finally:
        sys.unraisablehook = hook


def connect(proxy: FaultProxy, plane: ControlPlane) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cadata=plane.ca.cert_pem.decode())
    return http.client.HTTPSConnection("127.0.0.1", proxy.port, timeout=10, context=context)


def test_stopping_with_streams_open_leaves_no_socket_behind(
    cluster: Cluster, control_plane: ControlPlane, tmp_path: Path, unraisable: list[Any]
) -> None:
    node = cluster.create_node()
    headers = {"Authorization": f"Bearer {cluster.agent_token(node)}"}
    clients: list[http.client.HTTPSConnection] = []
    proxy = FaultProxy.start(control_plane, tmp_path / "proxy")
    try:
        for _ in range(GETS):  # answered whole: their upstream connections go back to the pool
            client = connect(proxy, control_plane)
            clients.append(client)
            client.request("GET", f"/api/v1/nodes/{node}", headers=headers)
            answer = client.getresponse()
            assert answer.status == 200, answer.read()
            answer.read()
        for _ in range(WATCHES):  # still streaming when the proxy stops
            client = connect(proxy, control_plane)
            clients.append(client)
            client.request(
                "GET",
                f"/api/v1/nodes?watch=1&fieldSelector=metadata.name%3D{node}",
                headers=headers,
            )
            answer = client.getresponse()
            assert answer.status == 200
            assert answer.readline(), "no first event"
        assert proxy.window().count("watch=1") == WATCHES
    finally:
        proxy.stop()
        gc.collect()
        for client in clients:
            client.close()
    leaks = [str(hook.exc_value) for hook in unraisable]
    assert not leaks, leaks
