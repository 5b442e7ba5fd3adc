"""Clients that stop reading: a raw TCP socket with a tiny receive buffer that does the
WebSocket handshake, auth and subscribe, then never reads again (what a frozen phone or a
wedged proxy looks like to the server). Framing comes from websockets' sans-I/O client.
"""

from __future__ import annotations

import socket
from typing import Any

import orjson
import psutil  # type: ignore[import-untyped]  # (through pgserver)
from websockets.client import ClientProtocol
from websockets.http11 import Response
from websockets.uri import parse_uri


class StalledClient:
    def __init__(self, base_url: str, rcvbuf: int = 4096) -> None:
        self.uri = parse_uri(base_url.replace("http", "ws", 1) + "/sync/v1/ws")
        self.proto = ClientProtocol(self.uri, max_size=None)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window
        self.sock.settimeout(10)

    def open(self, token: str, subscribe: dict[str, Any]) -> None:
        """Handshake, auth, subscribe; read only the handshake response, nothing after it."""
        self.sock.connect((self.uri.host, self.uri.port))
        self.proto.send_request(self.proto.connect())
        self._flush()
        while not any(isinstance(e, Response) for e in self.proto.events_received()):
            data = self.sock.recv(1)  # byte by byte: leave every frame after it unread
            if not data:
                raise ConnectionError("the server closed during the handshake")
            self.proto.receive_data(data)
        for msg in ({"type": "auth", "token": token}, {"type": "subscribe", **subscribe}):
            self.proto.send_text(orjson.dumps(msg))
        self._flush()

    def _flush(self) -> None:
        for chunk in self.proto.data_to_send():
            self.sock.sendall(chunk)

    def close(self) -> None:
        self.sock.close()


def server_sockets(port: int, pid: int | None = None) -> int:
    """Open TCP connections the server process (default: this one) holds on `port`."""
    conns = psutil.Process(pid).net_connections(kind="tcp")
    return sum(1 for c in conns if c.laddr and c.laddr.port == port and c.status != psutil.CONN_LISTEN)
