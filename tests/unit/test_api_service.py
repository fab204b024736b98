"""The agent's servicer answers every call of the contract.

The generated base class (`agent_pb2_grpc.AgentServicer`) raises NotImplementedError for each
call; it is protoc's output and never edited. This test is what makes sure none of those
defaults is ever reached: every RPC of the service is overridden by `AgentService`.
"""

from __future__ import annotations

from temper.api.v1 import agent_pb2 as pb
from temper.api.v1 import agent_pb2_grpc as pb_grpc
from temper.serve.api import AgentService


def test_every_call_of_the_service_is_implemented() -> None:
    calls = [method.name for method in pb.DESCRIPTOR.services_by_name["Agent"].methods]
    assert len(calls) == 6
    for call in calls:
        ours = getattr(AgentService, call)
        assert ours is not getattr(pb_grpc.AgentServicer, call), f"{call} is not implemented"
