"""`/livez` and `/readyz` for the kubelet's probes, on a port of the agent's own.

Live: the agent's event loop answers. Ready: the agent has made its first decision about the
node, whatever it was; a node correctly parked on, or refused to leave, the stock scheduler is
healthy. Anything else is 404. The server reads one request line per connection and answers
with `Connection: close`; it is for a probe, not for browsers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable


async def serve_health(port: int, ready: Callable[[], bool], host: str = "0.0.0.0") -> None:
    """Serve until cancelled."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 and parts[0] in ("GET", "HEAD") else ""
            if path == "/livez":
                status, body = "200 OK", "ok"
            elif path == "/readyz":
                status, body = (
                    ("200 OK", "ok") if ready() else ("503 Service Unavailable", "starting")
                )
            else:
                status, body = "404 Not Found", "not found"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}"
                f"\r\nConnection: close\r\n\r\n{body}".encode()
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(answer, host, port)
    async with server:
        await server.serve_forever()
