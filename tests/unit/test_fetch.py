"""The download policy: https to public addresses, checked at connect time and per redirect."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from tests.rawhttp import RawServer, chunked, fixed, generated
from worker.errors import DownloadError, RateLimited, UnsafeInput
from worker.fetch import Fetcher, UrlPolicy, check_response, make_download_client
from worker.http_headers import MAX_DEFERRAL
from worker.settings import DownloadSettings
from worker.simulators.http import Request, Response, SimServer, route


class Files(SimServer):
    @route("GET", "/file")
    def file(self, request: Request) -> Response:
        return Response(200, b"0123456789", {"Content-Type": "text/plain"})

    @route("GET", "/hop/(?P<n>[0-9]+)")
    def hop(self, request: Request) -> Response:
        n = int(request.params["n"])
        target = "/file" if n == 0 else f"/hop/{n - 1}"
        return Response(302, b"", {"Location": target})

    @route("GET", "/to-ftp")
    def to_ftp(self, request: Request) -> Response:
        return Response(302, b"", {"Location": "ftp://127.0.0.1/file"})


@pytest.fixture
def files() -> Iterator[Files]:
    with Files() as server:
        assert isinstance(server, Files)
        yield server


def fetcher(**options: object) -> Fetcher:
    settings = DownloadSettings.model_validate(options)
    return Fetcher(make_download_client(settings), settings)


def read(f: Fetcher, url: str, expected: int | None = None) -> bytes:
    with f.open(url, expected_size=expected) as download:
        return b"".join(download.chunks())


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("224.0.0.1", False),
        ("0.0.0.0", False),
    ],
)
def test_only_public_addresses_are_allowed_by_default(address: str, allowed: bool) -> None:
    assert UrlPolicy().address_allowed(address) is allowed


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/f",
        "ftp://example.com/f",
        "file:///etc/passwd",
        "https://user:pw@example.com/f",
        "https:///nohost",
        "https://example.com:port/f?X-Amz-Signature=secret",
    ],
)
def test_unsafe_urls_are_refused_before_any_request(url: str) -> None:
    with pytest.raises(UnsafeInput):
        UrlPolicy().check_url(url)


def test_a_link_to_a_private_address_is_refused_at_connect_time(files: Files) -> None:
    # https to loopback passes the scheme check; the guarded connection then refuses it.
    with pytest.raises(UnsafeInput, match="not public addresses"):
        read(fetcher(), f"https://127.0.0.1:{files.port}/file")
    with pytest.raises(UnsafeInput, match="not public addresses"):
        read(fetcher(), "https://169.254.169.254/latest/meta-data/")
    assert files.requests == []


def test_private_networks_can_be_allowed_for_simulators(files: Files) -> None:
    assert read(fetcher(allow_private_networks=True), f"{files.origin}/file") == b"0123456789"


def test_redirects_are_followed_by_hand_and_each_hop_is_checked(files: Files) -> None:
    f = fetcher(allow_private_networks=True, max_redirects=3)
    assert read(f, f"{files.origin}/hop/2") == b"0123456789"
    with pytest.raises(DownloadError, match="redirected more than 3 times"):
        read(f, f"{files.origin}/hop/5")
    with pytest.raises(UnsafeInput, match="ftp"):
        read(f, f"{files.origin}/to-ftp")


def test_a_truncated_body_is_an_error_not_a_short_file(files: Files) -> None:
    files.inject("truncate", path="/file")
    with pytest.raises(DownloadError, match=r"broke off|ended after"):
        read(fetcher(allow_private_networks=True), f"{files.origin}/file")


def test_a_body_that_differs_from_the_declared_size_is_refused(files: Files) -> None:
    with pytest.raises(DownloadError, match="declared 11"):
        read(fetcher(allow_private_networks=True), f"{files.origin}/file", expected=11)


def test_the_download_client_sends_no_credentials(files: Files) -> None:
    read(fetcher(allow_private_networks=True), f"{files.origin}/file")
    assert [seen.authorization for seen in files.requests] == [False]


# -- IPv6 forms that carry an IPv4 address ---------------------------------------------------

PRIVATE_IPV4 = ["10.0.0.1", "127.0.0.1", "169.254.169.254", "192.168.1.1", "100.64.0.1"]


def _v6(value: int) -> str:
    return str(ipaddress.IPv6Address(value))


def _v4(address: str) -> int:
    return int(ipaddress.IPv4Address(address))


def mapped(v4: str) -> str:
    return _v6((0xFFFF << 32) | _v4(v4))


def translated(v4: str) -> str:
    return _v6((0xFFFF << 48) | _v4(v4))  # ::ffff:0:a.b.c.d (SIIT, RFC 2765)


def compatible(v4: str) -> str:
    return _v6(_v4(v4))


def nat64(v4: str) -> str:
    return _v6((0x64FF9B << 96) | _v4(v4))


def nat64_local_48(v4: str) -> str:
    """64:ff9b:1::/48 with the IPv4 address in RFC 6052's /48 layout (bits 48-63, 72-87).

    The suffix repeats the address so every other reading a translator could use (/56, /64,
    /96) decodes to a public address too when the address is public."""
    b = ipaddress.IPv4Address(v4).packed
    packed = bytes.fromhex("0064ff9b0001") + b[0:2] + b"\x00" + b[2:4] + b + b[1:2]
    return str(ipaddress.IPv6Address(packed))


def nat64_local_96(v4: str) -> str:
    return _v6((0x0064FF9B0001 << 80) | _v4(v4))


def six_to_four(v4: str) -> str:
    return _v6((0x2002 << 112) | (_v4(v4) << 80) | 1)


def teredo(server: str, client: str) -> str:
    return _v6((0x20010000 << 96) | (_v4(server) << 64) | (_v4(client) ^ 0xFFFFFFFF))


FORMS: dict[str, Callable[[str], str]] = {
    "mapped ::ffff:0:0/96": mapped,
    "translated ::ffff:0:0:0/96": translated,
    "compatible ::/96": compatible,
    "nat64 64:ff9b::/96": nat64,
    "nat64 local 64:ff9b:1::/48, /48 layout": nat64_local_48,
    "nat64 local 64:ff9b:1::/48, /96 layout": nat64_local_96,
    "6to4 2002::/16": six_to_four,
    "teredo client 2001::/32": lambda v4: teredo("8.8.4.4", v4),
    "teredo server 2001::/32": lambda v4: teredo(v4, "8.8.4.4"),
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("inside", PRIVATE_IPV4)
def test_an_ipv6_address_carrying_a_private_ipv4_address_is_refused(form: str, inside: str) -> None:
    address = FORMS[form](inside)
    assert UrlPolicy().address_allowed(address) is False, address


@pytest.mark.parametrize(
    "form",
    [f for f in FORMS if "/96 layout" not in f],  # that layout's other readings are 0.x
)
def test_an_ipv6_address_carrying_a_public_ipv4_address_is_judged_by_it(form: str) -> None:
    address = FORMS[form]("8.8.8.8")
    assert UrlPolicy().address_allowed(address) is True, address


def test_the_forms_are_built_as_the_rfcs_lay_them_out() -> None:
    # Python decodes three of the forms itself; the builders above must agree with it.
    assert ipaddress.IPv6Address(mapped("10.0.0.1")).ipv4_mapped == ipaddress.IPv4Address(
        "10.0.0.1"
    )
    assert ipaddress.IPv6Address(six_to_four("10.0.0.1")).sixtofour == ipaddress.IPv4Address(
        "10.0.0.1"
    )
    assert ipaddress.IPv6Address(teredo("8.8.4.4", "10.0.0.1")).teredo == (
        ipaddress.IPv4Address("8.8.4.4"),
        ipaddress.IPv4Address("10.0.0.1"),
    )
    assert nat64("10.0.0.1") == "64:ff9b::a00:1"
    assert nat64_local_96("10.0.0.1") == "64:ff9b:1::a00:1"


def test_a_local_nat64_address_is_refused_if_any_layout_reads_a_private_address() -> None:
    # Public in the /48 layout (8.8.8.8), 10.0.0.1 in the /96 layout: a translator using a
    # /96 prefix inside 64:ff9b:1::/48 would connect to 10.0.0.1.
    address = "64:ff9b:1:808:8:800:a00:1"
    assert ipaddress.IPv6Address(address).packed[12:] == ipaddress.IPv4Address("10.0.0.1").packed
    assert UrlPolicy().address_allowed(address) is False


def test_a_local_nat64_address_in_the_96_layout_is_refused_even_for_a_public_address() -> None:
    # The price of not knowing the local translator's prefix length: its /48 reading of
    # 64:ff9b:1::808:808 is 0.0.0.0, so the address is refused. Fail closed.
    assert UrlPolicy().address_allowed(nat64_local_96("8.8.8.8")) is False


def test_a_local_nat64_address_with_its_reserved_octet_set_is_refused() -> None:
    # RFC 6052: bits 64-71 are zero in every layout; no translator forms this address.
    assert UrlPolicy().address_allowed("64:ff9b:1:808:108:808:808:808") is False


@pytest.mark.parametrize("address", ["::", "::1", "::2", "::ffff:0:0"])
def test_the_unspecified_and_loopback_addresses_stay_refused(address: str) -> None:
    assert UrlPolicy().address_allowed(address) is False


def test_private_networks_allowed_allows_every_form() -> None:
    assert UrlPolicy(allow_private_networks=True).address_allowed(nat64("10.0.0.1")) is True


# -- downloads whose end cannot be told from a cut connection --------------------------------

SIGNED = "?X-Amz-Signature=secret-signature"


def local() -> Fetcher:
    return fetcher(allow_private_networks=True)


@pytest.fixture
def raw() -> Iterator[RawServer]:
    body = b"0123456789"
    with RawServer(
        {
            "/read-to-close": fixed(body),
            "/chunked": chunked([b"01234", b"56789"]),
            "/length": fixed(body, {"Content-Length": "10"}),
            "/length-garbage": fixed(body, {"Content-Length": "ten"}),
            "/chunked-empty": chunked([]),
            "/chunked-long": chunked(generated(64 * 1024 * 1024, 64 * 1024), last_chunk=False),
            "/length-zero": fixed(b"", {"Content-Length": "0"}),
        }
    ) as server:
        yield server


def test_a_body_with_no_length_no_chunks_and_no_declared_size_is_refused(raw: RawServer) -> None:
    # Given a host that frames nothing: the body ends when the connection closes, so a cut
    # connection would look like the end of the file
    opened = []
    # When the worker opens it
    url = f"{raw.origin}/read-to-close{SIGNED}"
    with pytest.raises(DownloadError) as caught, local().open(url):
        opened.append(True)
    # Then it is refused before anything could be stored, and the message says why
    message = str(caught.value)
    assert opened == []
    assert f"{raw.origin}/read-to-close" in message
    assert "secret-signature" not in message
    assert "Content-Length" in message
    assert "tried again" in message
    assert not caught.value.permanent


def test_a_content_length_that_is_not_a_number_is_refused(raw: RawServer) -> None:
    # h11 refuses the answer itself; it must not pass as a body of unknown length.
    with pytest.raises(DownloadError, match="length-garbage"):
        read(local(), f"{raw.origin}/length-garbage")


def test_a_chunked_body_is_accepted_without_a_declared_size(raw: RawServer) -> None:
    assert read(local(), f"{raw.origin}/chunked") == b"0123456789"


def test_a_body_with_a_content_length_is_accepted(raw: RawServer) -> None:
    assert read(local(), f"{raw.origin}/length") == b"0123456789"


def test_a_read_to_close_body_is_accepted_and_checked_when_the_provider_declared_its_size(
    raw: RawServer,
) -> None:
    assert read(local(), f"{raw.origin}/read-to-close", expected=10) == b"0123456789"
    with pytest.raises(DownloadError, match="ended after 10 bytes"):
        read(local(), f"{raw.origin}/read-to-close", expected=11)


def test_an_empty_chunked_body_is_refused_when_a_size_was_declared(raw: RawServer) -> None:
    with pytest.raises(DownloadError, match=r"empty body.*declared 10 bytes"):
        read(local(), f"{raw.origin}/chunked-empty", expected=10)


def test_an_empty_body_is_accepted_when_it_was_declared_empty(raw: RawServer) -> None:
    # A client each: the raw server closes every connection, and a pooled one could be
    # picked up again just before its close arrives.
    assert read(local(), f"{raw.origin}/length-zero") == b""
    assert read(local(), f"{raw.origin}/chunked-empty", expected=0) == b""
    assert read(local(), f"{raw.origin}/chunked-empty") == b""


def test_a_body_running_past_its_declared_size_is_refused_as_soon_as_it_does(
    raw: RawServer,
) -> None:
    # Given a chunked body of 64 MiB for an output the provider declared at 1 MiB
    f = fetcher(allow_private_networks=True)
    declared = 1024 * 1024
    taken: list[int] = []

    def consume() -> None:
        with f.open(f"{raw.origin}/chunked-long", expected_size=declared) as download:
            taken.extend(len(chunk) for chunk in download.chunks(64 * 1024))

    # When it streams
    with pytest.raises(DownloadError, match="more than the provider's declared size"):
        consume()
    # Then it is refused at the first chunk past the size, not at the end of the stream
    assert sum(taken) <= declared


# -- Retry-After on a download ---------------------------------------------------------------


def answer(status: int, headers: dict[str, str]) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=httpx.Request("GET", "https://x/f"))


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), ("99999999999999999999", MAX_DEFERRAL), ("soon", None)],
)
def test_a_429_on_a_download_carries_a_capped_wait(value: str, seconds: float | None) -> None:
    with pytest.raises(RateLimited) as caught:
        check_response(answer(429, {"Retry-After": value}), "https://x/f")
    assert caught.value.retry_after == seconds


def test_a_429_on_a_download_reads_an_http_date() -> None:
    later = datetime.now(UTC) + timedelta(minutes=10)
    with pytest.raises(RateLimited) as caught:
        check_response(answer(429, {"Retry-After": format_datetime(later, usegmt=True)}), "f")
    assert caught.value.retry_after is not None
    assert 590 <= caught.value.retry_after <= 600
