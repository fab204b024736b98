"""Errors of the policy core.

    PolicyError
    ├── InputError      a pod, pod list or setting is malformed; names the object and field
    ├── ProfileError    a workload profile file is invalid; carries every problem found
    ├── PlanError       the pods cannot be planned on this machine (e.g. no room for critical)
    └── TraceRequestError  a scheduler trace request is out of bounds; names the field and bound

Every message is written for an operator: it names the object and what to change.
"""

from __future__ import annotations


class PolicyError(Exception):
    """Base of every error the policy core raises."""


class InputError(PolicyError):
    """A pod, a pod list or a setting is malformed."""


class ProfileError(PolicyError):
    """A workload profile is invalid. `problems` lists every problem, each naming its field."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = f"{len(problems)} problem{'' if len(problems) == 1 else 's'}"
        super().__init__(f"{source}: invalid workload profile ({count}):\n{lines}")


class PlanError(PolicyError):
    """The pods cannot be planned on this machine."""


class TraceRequestError(PolicyError):
    """A scheduler trace request (duration, size) is out of bounds; names the field and bound."""
