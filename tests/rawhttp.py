"""A loopback HTTP server whose answers are written byte for byte, framing included.

The simulators always frame their bodies with a correct Content-Length. A hostile or broken
download host does not: it omits the length and closes the connection, lies about the length,
or streams chunks without ever sending the last one. Each route here is a function that writes
the whole answer (status line, headers, body) to the socket itself; the connection is closed
after every answer, which is how a read-to-close body ends.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO

Answer = Callable[[BinaryIO], None]


def head(status: int = 200, headers: Mapping[str, str] | None = None) -> bytes:
    """A status line and headers, exactly as given: nothing is added."""
    lines = [f"HTTP/1.1 {status} X"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def fixed(body: bytes, headers: Mapping[str, str] | None = None, status: int = 200) -> Answer:
    """An answer with the given headers and body and nothing else (no implied framing)."""

    def write(out: BinaryIO) -> None:
        out.write(head(status, headers) + body)

    return write


def chunked(pieces: Iterable[bytes], *, last_chunk: bool = True) -> Answer:
    """A chunked body; without ``last_chunk`` the connection closes where a chunk ends."""

    def write(out: BinaryIO) -> None:
        out.write(head(200, {"Transfer-Encoding": "chunked"}))
        for piece in pieces:
            if piece:
                out.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        if last_chunk:
            out.write(b"0\r\n\r\n")

    return write


def generated(total: int, piece: int = 256 * 1024) -> Iterator[bytes]:
    """``total`` bytes in pieces, made as they are sent: a long body is never held whole."""
    block = bytes(range(256)) * (piece // 256)
    sent = 0
    while sent < total:
        take = min(piece, total - sent)
        yield block if take == piece else block[:take]
        sent += take


def streamed(headers: Mapping[str, str], body: Iterable[bytes]) -> Answer:
    """The given headers, then ``body`` as it is generated (a raw read-to-close stream)."""

    def write(out: BinaryIO) -> None:
        out.write(head(200, headers))
        for piece in body:
            out.write(piece)

    return write


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    raw: RawServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        raw = self.server.raw
        path = self.path.split("?", 1)[0]
        with raw.lock:
            raw.requests.append(path)
        answer = raw.routes.get(path, fixed(b"", {"Content-Length": "0"}, status=404))
        self.close_connection = True
        try:
            answer(self.wfile)  # type: ignore[arg-type]
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return  # the client gave up on the body, as a refusal should
        # Close for real so a read-to-close body ends here (and a cut one is cut here).
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            return


class RawServer:
    """``RawServer({"/path": answer, ...})`` on 127.0.0.1; use it as a context manager."""

    def __init__(self, routes: Mapping[str, Answer]) -> None:
        self.routes = dict(routes)
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.raw = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
