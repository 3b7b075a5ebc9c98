"""Safe streaming downloads of the links providers hand out.

A provider's download link is untrusted input that points our worker at a host. The
policy, unless ``[downloads] allow_private_networks`` is set:

* only ``https`` URLs, without user:password;
* the host must resolve to public addresses only. The check runs inside the connection
  itself (``GuardedBackend``): the worker resolves the name, drops every address the policy
  forbids and connects to a permitted one, so a DNS answer that changes between the check
  and the connect cannot slip a private address through. TLS still verifies the hostname.
  An IPv6 address that carries an IPv4 address (mapped, translated, compatible, NAT64, 6to4,
  Teredo) is judged by the IPv4 address inside it (``embedded_ipv4``);
* redirects are followed by hand, each hop checked again;
* the download client carries no provider credentials at all, so none can leak to a
  download host, redirect or not;
* a body is checked against its Content-Length and the size the provider declared, and a
  wall-clock deadline caps each file (httpx's read timeout applies per read, not per file);
* a body whose end cannot be told from a cut connection (no Content-Length, not chunked, no
  size declared by the provider) is refused before anything is stored.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from worker.errors import DownloadError, RateLimited, UnsafeInput
from worker.http_headers import retry_after_seconds
from worker.keys import strip_query
from worker.settings import DownloadSettings

CHUNK = 1024 * 1024

_V4 = ipaddress.IPv4Address
_LOW32 = 0xFFFFFFFF
# IPv6 prefixes whose addresses carry an IPv4 address. Python's ``is_global`` calls several
# of them global whatever the IPv4 address inside (64:ff9b::10.0.0.1 is "global" in 3.11),
# and a NAT64 gateway or a 6to4 relay would carry the connection to that IPv4 address.
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # SIIT, RFC 2765
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated, RFC 4291
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052's well-known prefix
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215, local use


def embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...] | None:
    """The IPv4 addresses ``ip`` carries, or None when it is no form that carries one.

    An empty tuple means ``ip`` is in such a form but no translator would form it (it
    carries nothing that can be checked, so it is refused).

    * IPv4-mapped ``::ffff:0:0/96`` and IPv4-translated ``::ffff:0:0:0/96``: the last 32 bits;
    * IPv4-compatible ``::/96`` (but ``::`` and ``::1``, the unspecified and loopback
      addresses, which are refused as they are): the last 32 bits;
    * NAT64 ``64:ff9b::/96``: the last 32 bits;
    * NAT64 local use ``64:ff9b:1::/48`` (RFC 8215): a network may put a translator's prefix
      anywhere inside that /48, with a length of 48, 56, 64 or 96 bits, and RFC 6052 places
      the IPv4 address differently for each. Which one a local translator uses cannot be
      told from the address, so every reading is returned and all of them must be public.
      Bits 64-71 must be zero in every layout; an address with them set is no reading;
    * 6to4 ``2002::/16``: bits 16-48;
    * Teredo ``2001::/32``: the server in bits 32-64 and the client, inverted, in the last
      32 bits; both are returned.
    """
    value = int(ip)
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip in _TRANSLATED or ip in _NAT64:
        return (_V4(value & _LOW32),)
    if ip in _COMPATIBLE:
        return None if value <= 1 else (_V4(value),)
    if ip in _NAT64_LOCAL:
        return _rfc6052_readings(ip.packed)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo
    return None


def _rfc6052_readings(packed: bytes) -> tuple[ipaddress.IPv4Address, ...]:
    """Every IPv4 address RFC 6052 can embed in ``packed`` with a prefix of 48 to 96 bits."""
    if packed[8] != 0:  # the "u" octet, bits 64-71
        return ()
    return (
        _V4(packed[6:8] + packed[9:11]),  # /48
        _V4(packed[7:8] + packed[9:12]),  # /56
        _V4(packed[9:13]),  # /64
        _V4(packed[12:16]),  # /96
    )


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    allow_private_networks: bool = False

    def check_url(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - urlsplit checks the port only when it is read
        except ValueError:
            raise UnsafeInput("the provider handed out a URL that does not parse") from None
        link = strip_query(url)
        allowed = ("https", "http") if self.allow_private_networks else ("https",)
        if parts.scheme not in allowed:
            raise UnsafeInput(
                f"the provider handed out a {parts.scheme or 'scheme-less'} URL ({link})",
                hint="Only https links are followed; set [downloads] allow_private_networks "
                "= true only for local simulators or MinIO",
            )
        if not parts.hostname:
            raise UnsafeInput(f"the provider handed out a URL without a host ({link})")
        if parts.username or parts.password:
            raise UnsafeInput(f"the provider handed out a URL with credentials in it ({link})")

    def address_allowed(self, address: str) -> bool:
        """Whether the worker may connect to ``address``: a public one, or one that carries
        only public IPv4 addresses (judged exactly as those IPv4 addresses would be)."""
        if self.allow_private_networks:
            return True
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address):
            inside = embedded_ipv4(ip)
            if inside is not None:
                return bool(inside) and all(_public(v4) for v4 in inside)
        return _public(ip)


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
    """An open response body, read once, with its length checked as it streams and at the end.

    A body must have an end the worker can recognise: a Content-Length, chunked framing (or
    HTTP/2's own), or a size the provider declared to compare with. A body with none of them
    ends when the connection closes, and a connection cut halfway looks exactly like it: such
    a body is refused when it is opened, before anything is stored.
    """

    def __init__(
        self,
        response: httpx.Response,
        *,
        source: str,
        expected_size: int | None,
        deadline: float,
    ) -> None:
        self.response = response
        # The source reaches logs and the ledger: never with a signed query string.
        self.source = source = strip_query(source)
        self.expected_size = expected_size
        self.deadline = deadline
        self.bytes_read = 0
        length = response.headers.get("content-length")
        self.content_length: int | None = int(length) if length and length.isdigit() else None
        self.content_type: str | None = response.headers.get("content-type")
        self.content_encoding: str | None = response.headers.get("content-encoding")
        codings = response.headers.get("transfer-encoding", "").lower().split(",")
        self.chunked = "chunked" in (c.strip() for c in codings)
        # HTTP/2 and HTTP/3 frame every body and mark its end; only HTTP/1 has read-to-close.
        framed = self.chunked or not response.http_version.startswith("HTTP/1")
        if self.content_length is None and not framed and expected_size is None:
            raise DownloadError(
                f"{source} sent a body with no Content-Length, not chunked, and the provider "
                "declared no size: its end cannot be told from a cut connection",
                hint="Nothing was stored; the job will be tried again",
            )
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
        """The raw bytes as served (no content decoding), then a length check.

        A body that runs past a size declared for it is refused at the first chunk that
        does, not at its end: the provider's declared size may be all that bounds a chunked
        or read-to-close body.
        """
        declared = [
            (size, what)
            for size, what in (
                (self.content_length, "Content-Length"),
                (self.expected_size, "the provider's declared size"),
            )
            if size is not None
        ]
        most = min((size for size, _ in declared), default=None)
        try:
            for chunk in self.response.iter_raw(chunk_size):
                self.bytes_read += len(chunk)
                if time.monotonic() > self.deadline:
                    raise DownloadError(
                        f"{self.source} did not finish within [downloads] max_seconds",
                        hint="Raise max_seconds for very large files",
                    )
                if most is not None and self.bytes_read > most:
                    size, what = min(declared)
                    raise DownloadError(
                        f"{self.source} sent more than {what} ({size} bytes)",
                        hint="Nothing was stored; the job will be tried again",
                    )
                yield chunk
        except httpx.TimeoutException as exc:
            raise DownloadError(f"{self.source} stalled: {type(exc).__name__}") from exc
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.NetworkError) as exc:
            raise DownloadError(
                f"{self.source} broke off after {self.bytes_read} bytes ({type(exc).__name__})",
                hint="Nothing was stored; the job will be tried again",
            ) from exc
        if self.bytes_read == 0 and any(size for size, _ in declared):
            # Named apart from a short body: an empty answer is what a broken CDN or an
            # expired link serves with 200, and it must never stand in for the file.
            size, what = max(declared)
            raise DownloadError(
                f"{self.source} sent an empty body but {what} declared {size} bytes",
                hint="Nothing was stored; the job will be tried again",
            )
        for size, what in declared:
            if self.bytes_read != size:
                raise DownloadError(
                    f"{self.source} ended after {self.bytes_read} bytes but {what} is {size}",
                    hint="The body was truncated; nothing was stored and the job will be "
                    "tried again",
                )


def check_response(response: httpx.Response, source: str) -> None:
    """Translate a download's HTTP status into our errors (the body is not read)."""
    code = response.status_code
    if 200 <= code < 300:
        return
    if code == 429:
        raise RateLimited(
            f"{strip_query(source)} answered 429",
            retry_after=retry_after_seconds(response.headers, datetime.now(UTC)),
            hint="The job will be tried again",
        )
    raise DownloadError(
        f"{strip_query(source)} answered HTTP {code}",
        status_code=code,
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
