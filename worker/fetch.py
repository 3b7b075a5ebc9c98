"""Safe streaming downloads of the links providers hand out.

A provider's download link is untrusted input that points our worker at a host. The
policy, unless ``[downloads] allow_private_networks`` is set:

* only ``https`` URLs, without user:password;
* the host must resolve to public addresses only. The check runs inside the connection
  itself (``GuardedBackend``): the worker resolves the name, drops every address the policy
  forbids and connects to a permitted one, so a DNS answer that changes between the check
  and the connect cannot slip a private address through. TLS still verifies the hostname;
* redirects are followed by hand, each hop checked again;
* the download client carries no provider credentials at all, so none can leak to a
  download host, redirect or not;
* a body is checked against its Content-Length and the size the provider declared, and a
  wall-clock deadline caps each file (httpx's read timeout applies per read, not per file).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from worker.errors import DownloadError, RateLimited, UnsafeInput
from worker.keys import strip_query
from worker.settings import DownloadSettings

CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    allow_private_networks: bool = False

    def check_url(self, url: str) -> None:
        try:
            parts = urlsplit(url)
        except ValueError:
            raise UnsafeInput("the provider handed out a URL that does not parse") from None
        shown = strip_query(url)
        allowed = ("https", "http") if self.allow_private_networks else ("https",)
        if parts.scheme not in allowed:
            raise UnsafeInput(
                f"the provider handed out a {parts.scheme or 'scheme-less'} URL ({shown})",
                hint="Only https links are followed; set [downloads] allow_private_networks "
                "= true only for local simulators or MinIO",
            )
        if not parts.hostname:
            raise UnsafeInput(f"the provider handed out a URL without a host ({shown})")
        if parts.username or parts.password:
            raise UnsafeInput(f"the provider handed out a URL with credentials in it ({shown})")

    def address_allowed(self, address: str) -> bool:
        if self.allow_private_networks:
            return True
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_global and not ip.is_multicast


class UnsafeAddress(httpcore.ConnectError):
    """Raised inside the connection when a host resolves only to forbidden addresses."""


class GuardedBackend(httpcore.SyncBackend):
    """Resolve, filter by policy, then connect to a permitted address."""

    def __init__(self, policy: UrlPolicy) -> None:
        self._policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror}") from exc
        addresses = [str(info[4][0]) for info in infos]
        permitted = [a for a in dict.fromkeys(addresses) if self._policy.address_allowed(a)]
        if not permitted:
            raise UnsafeAddress(
                f"{host} resolves to {', '.join(sorted(set(addresses)))}, "
                "which are not public addresses"
            )
        last: Exception | None = None
        for address in permitted:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last = exc
        assert last is not None
        raise last


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with the guarded network backend underneath.

    httpx does not take a network backend as an argument, so the connection pool is built
    here with the same settings httpx would use. test_fetch proves the guard holds.
    """

    def __init__(self, policy: UrlPolicy, *, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy),
        )


def make_download_client(settings: DownloadSettings, *, max_connections: int = 64) -> httpx.Client:
    policy = UrlPolicy(settings.allow_private_networks)
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=16)
    return httpx.Client(
        transport=GuardedTransport(policy, limits=limits),
        timeout=httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout),
        follow_redirects=False,
        trust_env=False,
        headers={"Accept-Encoding": "identity", "User-Agent": "retention-worker"},
    )


class Download:
    """An open response body, read once, with its length checked at the end."""

    def __init__(
        self,
        response: httpx.Response,
        *,
        source: str,
        expected_size: int | None,
        deadline: float,
    ) -> None:
        self.response = response
        self.source = source
        self.expected_size = expected_size
        self.deadline = deadline
        self.bytes_read = 0
        length = response.headers.get("content-length")
        self.content_length: int | None = int(length) if length and length.isdigit() else None
        self.content_type: str | None = response.headers.get("content-type")
        self.content_encoding: str | None = response.headers.get("content-encoding")
        if (
            expected_size is not None
            and self.content_length is not None
            and expected_size != self.content_length
        ):
            raise DownloadError(
                f"{source} serves {self.content_length} bytes but the provider declared "
                f"{expected_size}",
                hint="Nothing was stored; the job will be tried again",
            )

    @property
    def size_hint(self) -> int | None:
        return self.content_length if self.content_length is not None else self.expected_size

    def chunks(self, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """The raw bytes as served (no content decoding), then a length check."""
        try:
            for chunk in self.response.iter_raw(chunk_size):
                self.bytes_read += len(chunk)
                if time.monotonic() > self.deadline:
                    raise DownloadError(
                        f"{self.source} did not finish within [downloads] max_seconds",
                        hint="Raise max_seconds for very large files",
                    )
                yield chunk
        except httpx.TimeoutException as exc:
            raise DownloadError(f"{self.source} stalled: {type(exc).__name__}") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.NetworkError) as exc:
            raise DownloadError(
                f"{self.source} broke off after {self.bytes_read} bytes ({type(exc).__name__})",
                hint="Nothing was stored; the job will be tried again",
            ) from exc
        for declared, what in (
            (self.content_length, "Content-Length"),
            (self.expected_size, "the provider's declared size"),
        ):
            if declared is not None and self.bytes_read != declared:
                raise DownloadError(
                    f"{self.source} ended after {self.bytes_read} bytes but {what} is {declared}",
                    hint="The body was truncated; nothing was stored and the job will be "
                    "tried again",
                )


def check_response(response: httpx.Response, source: str) -> None:
    """Translate a download's HTTP status into our errors (the body is not read)."""
    code = response.status_code
    if 200 <= code < 300:
        return
    if code == 429:
        retry_after = response.headers.get("retry-after")
        raise RateLimited(
            f"{source} answered 429",
            retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
        )
    raise DownloadError(
        f"{source} answered HTTP {code}",
        hint="Links expire; a fresh one is requested when the job is tried again",
    )


def _unsafe_cause(exc: BaseException) -> UnsafeAddress | None:
    """httpx re-raises httpcore's errors as its own; find our refusal in the chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, UnsafeAddress):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class Fetcher:
    """Opens provider-supplied links under the URL policy."""

    def __init__(self, client: httpx.Client, settings: DownloadSettings) -> None:
        self.client = client
        self.settings = settings
        self.policy = UrlPolicy(settings.allow_private_networks)

    @contextlib.contextmanager
    def open(self, url: str, *, expected_size: int | None = None) -> Iterator[Download]:
        deadline = time.monotonic() + self.settings.max_seconds
        current = url
        for _hop in range(self.settings.max_redirects + 1):
            self.policy.check_url(current)
            source = strip_query(current)
            try:
                response = self.client.send(self.client.build_request("GET", current), stream=True)
            except httpx.TimeoutException as exc:
                raise DownloadError(f"{source} timed out: {type(exc).__name__}") from exc
            except httpx.TransportError as exc:
                refused = _unsafe_cause(exc)
                if refused is not None:
                    raise UnsafeInput(
                        f"the provider's link to {source} is refused: {refused}",
                        hint="Set [downloads] allow_private_networks = true only for local "
                        "simulators or MinIO",
                    ) from None
                raise DownloadError(f"cannot reach {source}: {type(exc).__name__}") from exc
            if response.is_redirect and "location" in response.headers:
                location = response.headers["location"]
                response.close()
                current = urljoin(current, location)
                continue
            try:
                check_response(response, source)
                yield Download(
                    response, source=source, expected_size=expected_size, deadline=deadline
                )
            finally:
                response.close()
            return
        raise DownloadError(
            f"{strip_query(url)} redirected more than {self.settings.max_redirects} times"
        )
