"""The download policy: https to public addresses, checked at connect time and per redirect."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from worker.errors import DownloadError, UnsafeInput
from worker.fetch import Fetcher, UrlPolicy, make_download_client
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
