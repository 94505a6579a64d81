"""A minimal blocking WebSocket client on a plain socket, so a test controls how fast (and whether) it reads.

Only what the tests need: the opening handshake, and reading the server's unmasked frames.
"""
from __future__ import annotations

import base64
import os
import socket
import struct


class RawWebSocket:
    def __init__(self, port: int, client_id: str, *, receive_buffer: int | None = None, timeout: float = 30) -> None:
        self.sock = socket.socket()
        if receive_buffer is not None:  # a small kernel buffer makes a slow reader felt by the server at once
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                          .encode())
        self._buffer = b""
        head = self._read_until(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"no upgrade: {head[:200]!r}")

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            self._fill()
        head, _, self._buffer = self._buffer.partition(marker)
        return head

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        self._buffer += chunk

    def _take(self, count: int) -> bytes:
        while len(self._buffer) < count:
            self._fill()
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def receive(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame; a close frame raises ConnectionError."""
        first, second = self._take(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._take(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._take(8))[0]
        opcode, payload = first & 0x0F, self._take(length)
        if opcode == 8:
            raise ConnectionError("close frame from the server")
        return opcode, payload

    def close(self) -> None:
        self.sock.close()
