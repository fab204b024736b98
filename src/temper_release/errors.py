"""The release tooling's one error: what failed, and what to do about it."""

from __future__ import annotations


class ReleaseError(RuntimeError):
    """A build or verification step failed; the message names the step and its evidence."""
