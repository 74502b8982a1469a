"""The notifier's WebSocket transport: uvicorn's websockets-sansio protocol with three additions the ASGI
interface cannot express, handed to the app as the scope extension `notifier.transport` (a `Link`):

- a protocol-level ping the app sends on its own heartbeat schedule (ASGI has no ping message);
- the time of the client's last pong frame, so the heartbeat counts protocol and application pongs alike;
- `abort()`, to drop a client whose socket no longer drains (a close frame cannot be written to a full buffer,
  and `transport.close()` would wait for that buffer to flush first).

It also bounds the socket's write buffers, asyncio's and the kernel's (`WS_WRITE_BUFFER_BYTES` each): past
them, uvicorn's send waits, and the
app's send timeout turns that wait into a disconnect. uvicorn's own keepalive is off
(`ws_ping_interval=None`): the app owns the heartbeat (see `notifier.ws`).
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame
from websockets.http11 import Request

EXTENSION = "notifier.transport"


class Link:
    """What the app may do to, and know about, the socket under one WebSocket."""

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol
        self.last_pong = 0.0  # loop time of the last pong frame

    def ping(self) -> None:
        protocol = self._protocol
        if protocol.close_sent or protocol.transport.is_closing():
            return
        protocol.conn.send_ping(os.urandom(4))
        protocol.transport.write(b"".join(protocol.conn.data_to_send()))

    def close(self) -> None:
        """Hang up once what is buffered has been written."""
        self._protocol.transport.close()

    def abort(self) -> None:
        """Drop the TCP connection now, discarding whatever is still buffered."""
        self._protocol.transport.abort()

    @property
    def buffered_bytes(self) -> int:
        return int(self._protocol.transport.get_write_buffer_size())


def protocol_class(write_buffer_bytes: int) -> type[WebSocketsSansIOProtocol]:
    """uvicorn's `ws=` accepts a protocol class; this one carries the notifier's write-buffer bound."""

    class NotifierWebSocketProtocol(WebSocketsSansIOProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.link = Link(self)

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self.transport.set_write_buffer_limits(high=write_buffer_bytes)
            sock = transport.get_extra_info("socket")
            if sock is not None:  # and the kernel's: autotuned, it would hold megabytes per stalled client
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, write_buffer_bytes)

        def handle_connect(self, event: Request) -> None:
            super().handle_connect(event)
            scope = getattr(self, "scope", None)
            if scope is not None:  # the ASGI task is created but has not run yet: it sees the extension
                scope["extensions"][EXTENSION] = self.link

        def handle_pong(self, event: Frame) -> None:
            self.link.last_pong = self.loop.time()
            super().handle_pong(event)

    return NotifierWebSocketProtocol
