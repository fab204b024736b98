"""What an operator's actions leave on the host: tier assignments and the audit log.

Both live in the agent's data directory (default `/var/lib/temper`, kept across reboots, unlike
the state directory under `/run`):

- `assignments.json`: the operator's tier assignments (`temper.policy.assignments` defines the
  document). Written whole, to a temporary file that is synced and then renamed over the old
  one, so a crash leaves the old assignments or the new ones, never half of either.
- `audit.log`: one JSON object per line for every mutating call and every refused caller:
  when, who, what, and the outcome. Appended with O_APPEND and synced; at `max_bytes` it is
  renamed to `audit.log.1` (the previous `.1` is dropped), so it cannot fill the disk.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from temper.host.errors import HostError, HostReadError
from temper.policy.assignments import PodKey, parse_assignments, render_assignments
from temper.policy.errors import InputError
from temper.policy.tiers import Tier

ASSIGNMENTS_FILE = "assignments.json"
AUDIT_FILE = "audit.log"
MAX_ASSIGNMENTS_BYTES = 4 * 1024 * 1024
AUDIT_MAX_BYTES = 16 * 1024 * 1024  # ~50,000 records before rotation

log = logging.getLogger(__name__)


def write_file_atomically(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data`: the old content or the new, whatever happens midway."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)  # a leftover keeps its own mode; O_EXCL gets ours
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as file:  # writes it all, however short each write
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _sync_dir(path.parent)


class AssignmentFile:
    """The persisted tier assignments of this node."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / ASSIGNMENTS_FILE

    def read(self) -> dict[PodKey, Tier]:
        """The kept assignments; none when there is no file. HostReadError when it is damaged:
        the agent must not guess which pods an operator placed."""
        try:
            with self.path.open("rb") as file:
                raw = file.read(MAX_ASSIGNMENTS_BYTES + 1)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise HostReadError(self.path, f"cannot read: {exc.strerror or exc}") from exc
        if len(raw) > MAX_ASSIGNMENTS_BYTES:
            raise HostReadError(self.path, f"larger than {MAX_ASSIGNMENTS_BYTES} bytes")
        try:
            return parse_assignments(json.loads(raw), str(self.path))
        except (ValueError, RecursionError, InputError) as exc:  # deep nesting: RecursionError
            raise HostReadError(self.path, f"damaged: {exc}") from exc

    def write(self, assignments: Mapping[PodKey, Tier]) -> None:
        document = json.dumps(render_assignments(assignments), indent=2) + "\n"
        try:
            write_file_atomically(self.path, document.encode())
        except OSError as exc:
            raise HostError(f"{self.path}: cannot write: {exc.strerror or exc}") from exc


class AuditLog:
    """The append-only record of operator actions. A write that fails is logged, never raised:
    the action itself already happened (or was refused) and its caller must hear about it."""

    def __init__(self, data_dir: Path, max_bytes: int = AUDIT_MAX_BYTES) -> None:
        self.path = data_dir / AUDIT_FILE
        self.max_bytes = max_bytes

    def write(self, record: Mapping[str, object]) -> bool:
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._rotate()
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.error("audit log %s: cannot write: %s", self.path, exc.strerror or exc)
            return False
        return True

    def _rotate(self) -> None:
        try:
            if self.path.stat().st_size >= self.max_bytes:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        except FileNotFoundError:
            pass


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
