"""Errors of the host adapters.

    HostError
    ├── HostRootMissing    the --host-root directory does not exist
    ├── HostReadError      an input file (under the host root, or given by the user) is missing
    │                      or malformed; names the file
    └── TracefsError       tracefs is missing, not mounted, or refused a step of a trace
        │                  capture; names the path
        └── TraceBusy      a scheduler trace capture is already running in this process

Foreign exceptions (OSError, the policy core's InputError) are re-raised as these with
`from exc`, so a caller handles one tree and still sees the cause.
"""

from __future__ import annotations

from pathlib import Path


class HostError(Exception):
    """Base of every error the host adapters raise."""


class HostRootMissing(HostError):
    """The host root directory does not exist (or is not a directory)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        problem = "is not a directory" if root.exists() else "does not exist"
        super().__init__(f"host root {root} {problem}")


class HostReadError(HostError):
    """An input file is missing or malformed. `path` names it."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class TracefsError(HostError):
    """tracefs is missing or not mounted, or a step of a trace capture failed. `path` names it."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class TraceBusy(TracefsError):
    """A scheduler trace capture is already running in this process; one runs at a time."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "a scheduler trace capture is already running; try again after it")
