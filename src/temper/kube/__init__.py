"""The agent's side of the Kubernetes API: list and watch this node's pods, watch its own Node,
publish its annotations and Events (docs/cluster.md, docs/adr/0005)."""
