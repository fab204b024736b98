"""Who is on the other end of a unix socket, as the kernel recorded it at connect().

`SO_PEERCRED` gives the peer's pid, uid and gid; `SO_PEERGROUPS` (Linux 4.13) its supplementary
groups. Neither can be forged by the peer, unlike anything it sends. gRPC does not expose them
(grpc/grpc#15511, #28755: its local credentials never call SO_PEERCRED), so the agent's API
front (`temper.serve.callers`) reads them here, on the accepted socket, before any byte of the
call is read.
"""

from __future__ import annotations

import errno
import grp
import pwd
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Python 3.11 lacks the constant
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_MAX_BYTES = 1024  # the most CPython's getsockopt accepts


@dataclass(frozen=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]

    def in_group(self, gid: int) -> bool:
        return gid == self.gid or gid in self.groups


def read_peer_credentials(sock: socket.socket) -> PeerCredentials:
    """The credentials of a connected unix socket's peer. OSError when the kernel has none."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return PeerCredentials(pid, uid, gid, _peer_groups(sock))


def _peer_groups(sock: socket.socket) -> tuple[int, ...]:
    """The peer's supplementary groups. CPython's getsockopt takes at most 1,024 bytes (256
    groups); a peer in more is read from /proc (its pid named by the kernel, above)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, _MAX_BYTES)
    except OSError as exc:
        if exc.errno != errno.ERANGE:
            raise
        pid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        return _proc_groups(pid)
    return struct.unpack(f"{len(raw) // 4}I", raw)


def _proc_groups(pid: int) -> tuple[int, ...]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Groups:"):
            return tuple(int(g) for g in line.split()[1:])
    return ()


def user_name(uid: int) -> str:
    """The user's name, or the number when it has none on this host."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_id(name_or_gid: str) -> int | None:
    """A group's id from its name or number; None when the host has no such group name."""
    if name_or_gid.isdecimal() and name_or_gid.isascii():
        return int(name_or_gid)
    try:
        return grp.getgrnam(name_or_gid).gr_gid
    except KeyError:
        return None
