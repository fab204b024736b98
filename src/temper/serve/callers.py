"""Who may call the agent's API, and how the agent knows who is calling.

gRPC cannot tell a server who is on the other end of a unix socket (grpc/grpc#15511, #28755).
So the agent's public socket is not gRPC's own: `UnixFront` accepts each connection, reads the
caller's credentials from the kernel (`SO_PEERCRED`, `SO_PEERGROUPS`), and relays the bytes to
the gRPC server on a private socket in a directory only root can enter. It connects from a
socket bound to a fresh random abstract name, which gRPC reports as the call's peer
(`unix-abstract:<name>`); the servicer looks the caller up by that name. A name is registered
before the first byte is relayed and removed when the connection ends. A peer the front did not
register (nobody can reach the private socket but the front) is refused.

The public socket is world-connectable on purpose (mode 0666): refusing a caller with a
PERMISSION_DENIED that says who is allowed is kinder than a bare EACCES, and the check is the
kernel's record of the caller, not the file's mode. Callers over TCP present a client
certificate signed by the configured CA; the certificate's subject is the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from temper.host.peercred import PeerCredentials, read_peer_credentials, user_name

log = logging.getLogger(__name__)
# Concurrent connections on the socket, in all and from one uid other than root; more are
# closed at once. The per-uid bound keeps one user's connections from locking root out.
MAX_CONNECTIONS = 256
MAX_CONNECTIONS_PER_UID = 16
CHUNK = 64 * 1024
SUN_PATH_MAX = 107  # sockaddr_un.sun_path, less the terminating NUL


@dataclass(frozen=True)
class Caller:
    """One caller: a local process (uid, gid, groups, pid) or a TLS client (its subject)."""

    via: str  # "unix" or "tls"
    name: str  # the user's name, or the certificate's subject
    credentials: PeerCredentials | None = None

    def describe(self) -> str:
        if self.credentials is None:
            return f"TLS client {self.name!r}"
        creds = self.credentials
        return f"uid {creds.uid} ({self.name}) pid {creds.pid}"

    def record(self) -> dict[str, object]:
        """The caller, for the audit log."""
        if self.credentials is None:
            return {"via": self.via, "subject": self.name}
        creds = self.credentials
        return {"via": self.via, "uid": creds.uid, "user": self.name, "gid": creds.gid,
                "pid": creds.pid}  # fmt: skip


@dataclass(frozen=True)
class AllowList:
    """Root may call; so may members of one group, when configured and known on the host."""

    group: str | None = None  # as configured: a name or a number
    gid: int | None = None  # None: the group does not exist here, so only root may call

    def refusal(self, caller: Caller) -> str | None:
        """Why `caller` may not call; None when it may."""
        creds = caller.credentials
        if creds is None:  # a TLS client: the configured CA vouched for it
            return None
        if creds.uid == 0 or (self.gid is not None and creds.in_group(self.gid)):
            return None
        return f"{caller.describe()} may not use the agent's API: allowed are {self.describe()}"

    def describe(self) -> str:
        if self.group is None:
            return "root only"
        if self.gid is None:
            return f"root only (group {self.group!r} does not exist on this host)"
        return f"root and members of group {self.group} (gid {self.gid})"


class UnixFront:
    """The public unix socket: checks nobody's bytes, only records who sent them."""

    def __init__(self, public: Path, mode: int = 0o666) -> None:
        if len(os.fsencode(public)) > SUN_PATH_MAX:
            raise ValueError(f"socket path {public} is longer than {SUN_PATH_MAX} bytes")
        self.public = public
        self.mode = mode
        self._private_dir = Path(tempfile.mkdtemp(prefix="temper-api-"))  # mode 0700
        self.private = self._private_dir / "grpc.sock"
        self._callers: dict[str, Caller] = {}
        self._open: Counter[int] = Counter()  # connections by uid

    def caller_of(self, peer: str) -> Caller | None:
        """The caller behind a gRPC peer string; None for a peer this front did not relay."""
        prefix, _, name = peer.partition(":")
        return self._callers.get(name) if prefix == "unix-abstract" else None

    async def serve(self, started: Callable[[], None] | None = None) -> None:
        """Accept callers until cancelled; then remove both sockets."""
        self.public.parent.mkdir(parents=True, exist_ok=True)
        if self.public.is_socket():
            self.public.unlink()  # a previous agent's; a live one would hold the same path
        server = await asyncio.start_unix_server(self._relay, self.public)
        try:
            os.chmod(self.public, self.mode)
            if started is not None:
                started()
            await server.serve_forever()
        finally:
            server.close()
            with contextlib.suppress(OSError):
                self.public.unlink()
            self.remove_private()

    def remove_private(self) -> None:
        """Remove the private socket and its directory; also when serving never began."""
        with contextlib.suppress(OSError):
            self.private.unlink()
        with contextlib.suppress(OSError):
            self._private_dir.rmdir()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            creds = read_peer_credentials(writer.get_extra_info("socket"))
        except OSError as exc:
            log.warning("API connection without credentials: %s", exc.strerror or exc)
            writer.close()
            return
        if self._full(creds.uid):
            writer.close()
            return
        name = f"temper-api-{os.getpid()}-{secrets.token_hex(8)}"
        self._open[creds.uid] += 1
        self._callers[name] = Caller("unix", user_name(creds.uid), creds)
        try:
            inner_reader, inner_writer = await _connect_as(name, self.private)
            await asyncio.gather(_pipe(reader, inner_writer), _pipe(inner_reader, writer))
        except OSError as exc:
            log.warning("API connection dropped: %s", exc.strerror or exc)
        finally:
            self._open[creds.uid] -= 1
            self._callers.pop(name, None)
            writer.close()

    def _full(self, uid: int) -> bool:
        if uid == 0:
            return False
        total = sum(self._open.values())
        return total >= MAX_CONNECTIONS or self._open[uid] >= MAX_CONNECTIONS_PER_UID


async def _connect_as(name: str, path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(f"\0{name}")
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, str(path))
    except OSError:
        sock.close()
        raise
    return await asyncio.open_unix_connection(sock=sock)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until the source ends, then end the sink's writing side."""
    try:
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except (ConnectionError, OSError):
        sink.close()
