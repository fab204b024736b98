"""What the agent's identity may read: its own node's pods and its own Node, nothing wider.

RBAC grants pods list/watch cluster-wide (it cannot see a field selector); the test API server
adds the deny rule the agent's docs give operators (docs/cluster.md): a list or watch of pods by
the agent must select `spec.nodeName` equal to the node in its token. Patching another Node is
the chart's admission policy's job (test_chart.py).
"""

from __future__ import annotations

from conftest import Cluster


def test_agent_lists_only_its_own_nodes_pods(cluster: Cluster) -> None:
    node, other = cluster.create_node(), cluster.create_node()
    cluster.create_pod(other)
    token = cluster.agent_token(node)

    def list_pods(selector: str | None, verb: str = "list") -> int:
        query = {"fieldSelector": selector} if selector else {}
        if verb == "watch":
            query |= {"watch": "true", "timeoutSeconds": "1"}
        status, _ = cluster.plane.request("GET", "/api/v1/pods", query=query, token=token)
        return status

    assert list_pods(f"spec.nodeName={node}") == 200
    assert list_pods(f"spec.nodeName={node}", verb="watch") == 200
    # The deny rule's webhook does not exist, and the API server reports a failed webhook
    # authorizer under failurePolicy Deny as 500, not 403: denied either way.
    denied = (403, 500)
    assert list_pods(None) in denied
    assert list_pods(f"spec.nodeName={other}") in denied
    assert list_pods(f"spec.nodeName={other}", verb="watch") in denied
    assert list_pods("spec.nodeName!=nobody") in denied
    status, _ = cluster.plane.request("GET", "/api/v1/namespaces/work/pods", token=token)
    assert status in denied


def test_agent_reads_its_own_node_but_lists_no_nodes(cluster: Cluster) -> None:
    node, other = cluster.create_node(), cluster.create_node()
    token = cluster.agent_token(node)
    assert cluster.plane.request("GET", f"/api/v1/nodes/{node}", token=token)[0] == 200
    assert cluster.plane.request("GET", "/api/v1/nodes", token=token)[0] == 403
    # RBAC cannot name one node per DaemonSet pod: reading another Node is allowed, writing
    # it is not (the admission policy); the agent reads only its own by construction.
    assert cluster.plane.request("GET", f"/api/v1/nodes/{other}", token=token)[0] == 200
