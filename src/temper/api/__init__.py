"""The agent's versioned gRPC API: the wire contract shared by the agent and its callers.

    proto/temper/api/v1/agent.proto   the contract (source of truth, with its CHANGELOG)
    temper/api/v1/                    generated from it by `scripts/gen-api`; never edited
    temper/api/wire.py                hand-written: protobuf values to and from ours
    temper/api/client.py              the typed client `temper-cli` and the dashboard use

The generated modules are imported here, in `temper.serve` and, for their constants and
message types, in `temper.cli`; nothing else sees protobuf.
"""
