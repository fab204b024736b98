"""The node agent, `temper-agent`: `main` is its composition root, the one place that wires the
control loop, the plan state, the supervisor, observation, the cluster link and the API."""
