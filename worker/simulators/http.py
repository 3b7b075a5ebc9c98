"""A small HTTP server for provider simulators: routes, fault injection, a request log.

Simulators speak real HTTP/1.1 on loopback so the worker's own clients, pools, timeouts and
error handling are what gets exercised. Each simulator subclasses ``SimServer`` and registers
routes with ``@route``. Tests and the demo arm faults with ``inject`` and read what the
simulator saw from ``requests``.

Faults:
    status    answer with a status, body and headers instead of the real handler
    truncate  send the real headers (with the full Content-Length), half the body, then close
    reset     close the connection without answering (the request had no effect)
    drop      run the real handler, then close without answering (the effect happened, the
              answer was lost)
    delay     sleep, then run the real handler
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Literal, Self
from urllib.parse import parse_qs, urlsplit

Handler = Callable[..., "Response"]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    raw_query: str = ""  # exactly as sent (parse_qs drops blank values such as S3's ?uploads)

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Response:
    status: int = 200
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    length: int | None = None  # required with an iterable body

    @classmethod
    def json(
        cls, payload: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        body = json.dumps(payload).encode()
        return cls(status, body, {"Content-Type": "application/json", **(headers or {})})


@dataclass
class Fault:
    method: str | None
    path: re.Pattern[str]
    kind: Literal["status", "truncate", "reset", "drop", "delay"]
    times: int
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class Seen:
    """One request as the simulator received it."""

    method: str
    path: str
    status: int
    at: float  # when it arrived, before any hook or handler ran
    authorization: bool  # whether it carried credentials of any kind
    fault: str | None = None


def route(method: str, pattern: str) -> Callable[[Handler], Handler]:
    """Register a handler for ``method`` and a path regex with named groups."""

    def mark(fn: Handler) -> Handler:
        fn.__route__ = (method, re.compile(f"^{pattern}$"))  # type: ignore[attr-defined]
        return fn

    return mark


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sim: SimServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in two writes; without TCP_NODELAY each answer on a kept-alive
    # connection waits ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self) -> None:
        self.server.sim._dispatch(self)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = do_HEAD = _serve


class SimServer:
    """Base of every simulator. ``credential_headers`` marks which headers carry credentials."""

    credential_headers: ClassVar[tuple[str, ...]] = ("authorization",)
    # The arguments it was built with, so ``reset`` can build its state again.
    _built_with: tuple[tuple[Any, ...], dict[str, Any]]
    _httpd: _Server
    _thread: threading.Thread | None

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        sim = super().__new__(cls)
        sim._built_with = (args, kwargs)
        return sim

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        for name in dir(type(self)):
            fn = getattr(self, name, None)
            spec = getattr(fn, "__route__", None)
            if spec is not None and fn is not None:
                self._routes.append((spec[0], spec[1], fn))
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        self.requests: list[Seen] = []
        if getattr(self, "_httpd", None) is None:  # else ``reset``: the server keeps serving
            self._httpd = _Server((host, port), _Handler)
            self._httpd.sim = self
            self._thread = None
        # Requests allowed per window before the simulator answers 429 (None = unlimited).
        self.rate_limit: tuple[int, float] | None = None
        # Called with each request before it is answered (tests check invariants here, such
        # as "no delete arrives before the job's manifest is in the archive").
        self.on_request: Callable[[Request], None] | None = None
        self._window: list[float] = []

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def provider_table(self, **extra: Any) -> dict[str, Any]:
        """This account's ``[providers.NAME]`` table (each provider's simulator says)."""
        raise NotImplementedError(f"{type(self).__name__} names no provider table")

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SimServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"{type(self).__name__}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def reset(self) -> None:
        """Back to the state it was built in, still serving on the same port: no jobs,
        faults, requests, rate limit or hook, and the constructor's knobs again.

        Lets one running simulator serve many tests: stopping a server costs a poll interval,
        and a test's simulator is then as new as one built for it alone.
        """
        args, kwargs = self._built_with
        with self._lock:
            type(self).__init__(self, *args, **kwargs)

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults and observations -----------------------------------------------------------

    def inject(
        self,
        kind: Literal["status", "truncate", "reset", "drop", "delay"] = "status",
        *,
        path: str = ".*",
        method: str | None = None,
        times: int = 1,
        status: int = 500,
        body: Any = None,
        headers: dict[str, str] | None = None,
        seconds: float = 0.0,
    ) -> None:
        """Arm a fault for the next ``times`` requests matching ``method`` and ``path``."""
        with self._lock:
            self._faults.append(
                Fault(method, re.compile(path), kind, times, status, body, headers or {}, seconds)
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def seen(self, method: str | None = None, path: str = ".*") -> list[Seen]:
        pattern = re.compile(path)
        with self._lock:
            return [
                s
                for s in self.requests
                if (method is None or s.method == method) and pattern.search(s.path)
            ]

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if (fault.method in (None, method)) and fault.path.search(path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _rate_limited(self) -> bool:
        if self.rate_limit is None:
            return False
        count, window = self.rate_limit
        now = time.monotonic()
        with self._lock:
            self._window = [t for t in self._window if now - t < window]
            if len(self._window) >= count:
                return True
            self._window.append(now)
        return False

    def carries_credentials(self, request: Request) -> bool:
        """Whether a request carried credentials; by default, any of ``credential_headers``."""
        return any(name in request.headers for name in self.credential_headers)

    def rate_limit_response(self) -> Response:
        """What this provider answers when its rate limit is exceeded."""
        return Response.json({"error": "rate-limit-error"}, status=429)

    def not_found(self, request: Request) -> Response:
        return Response.json({"error": "not-found"}, status=404)

    # -- dispatch --------------------------------------------------------------------------

    def _dispatch(self, h: _Handler) -> None:
        # Stamped on arrival: ``on_request`` hooks and handlers may take a while, and a rate
        # limit is about when requests arrive, not when they were answered.
        arrived = time.time()
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in h.headers.items()}
        request = Request(
            h.command, parts.path, parse_qs(parts.query), headers, body, raw_query=parts.query
        )
        has_credentials = self.carries_credentials(request)
        if self.on_request is not None:
            self.on_request(request)
        fault = self._take_fault(h.command, parts.path)
        if fault is not None and fault.kind == "reset":
            self._record(request, arrived, 0, has_credentials, "reset")
            _reset(h)
            return
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        if fault is not None and fault.kind == "status":
            payload = fault.body
            if isinstance(payload, bytes | str):
                data = payload.encode() if isinstance(payload, str) else payload
                response = Response(fault.status, data, dict(fault.headers))
            else:
                response = Response.json(payload or {}, fault.status, dict(fault.headers))
        elif self._rate_limited():
            response = self.rate_limit_response()
        else:
            response = self._route(request)
        if fault is not None and fault.kind == "drop":
            self._record(request, arrived, response.status, has_credentials, "drop")
            _reset(h)
            return
        truncate = fault is not None and fault.kind == "truncate"
        self._record(
            request, arrived, response.status, has_credentials, fault.kind if fault else None
        )
        _write(h, response, truncate=truncate)

    def _route(self, request: Request) -> Response:
        for method, pattern, handler in self._routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                request.params = match.groupdict()
                try:
                    return handler(request)
                except Exception as exc:  # a simulator bug must look like a 500, not hang
                    return Response.json({"error": "server-error", "info": repr(exc)}, 500)
        return self.not_found(request)

    def _record(
        self, request: Request, at: float, status: int, credentials: bool, fault: str | None
    ) -> None:
        with self._lock:
            self.requests.append(Seen(request.method, request.path, status, at, credentials, fault))


def _write(h: _Handler, response: Response, *, truncate: bool) -> None:
    body = response.body
    if isinstance(body, bytes):
        length = len(body)
        chunks: Iterator[bytes] = iter([body])
    else:
        if response.length is None:
            raise ValueError("a streamed simulator body needs a length")
        length = response.length
        chunks = iter(body)
    h.send_response(response.status)
    for name, value in response.headers.items():
        h.send_header(name, value)
    h.send_header("Content-Length", str(length))
    if truncate:
        h.send_header("Connection", "close")
    h.end_headers()
    if h.command == "HEAD":
        return
    limit = length // 2 if truncate else length
    sent = 0
    try:
        for chunk in chunks:
            piece = chunk[: limit - sent] if sent + len(chunk) > limit else chunk
            if piece:
                h.wfile.write(piece)
                sent += len(piece)
            if sent >= limit:
                break
        h.wfile.flush()
    except (BrokenPipeError, ConnectionResetError):
        return
    if truncate:
        h.close_connection = True
        _reset(h)


def _reset(h: _Handler) -> None:
    h.close_connection = True
    try:
        h.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        return
