"""HttpApi's defences against hostile or broken answers: body size and JSON depth caps."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from worker.errors import BadResponse
from worker.providers.base import MAX_JSON_DEPTH, HttpApi, parse_json


def api(handler: httpx.MockTransport, *, max_body: int = 1024) -> HttpApi:
    return HttpApi(
        provider="p",
        base_url="https://api.test",
        timeout=5,
        transport=handler,
        max_body=max_body,
        attempts=1,
    )


def test_a_body_larger_than_the_cap_is_refused_without_reading_it_all() -> None:
    served = []

    def stream() -> httpx.SyncByteStream:
        class Endless(httpx.SyncByteStream):
            def __iter__(self) -> Iterator[bytes]:
                for _ in range(10_000):
                    served.append(1)
                    yield b"x" * 1024

        return Endless()

    transport = httpx.MockTransport(lambda request: httpx.Response(200, stream=stream()))
    with pytest.raises(BadResponse, match="larger than 1024 bytes"):
        api(transport).request("GET", "/jobs")
    assert len(served) < 10


def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, content=b"{}", headers={"Content-Length": "99999"})
    )
    with pytest.raises(BadResponse, match="larger than"):
        api(transport).request("GET", "/jobs")


def test_a_larger_cap_can_be_given_for_one_call() -> None:
    body = b'{"a": "' + b"x" * 5000 + b'"}'
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    assert api(transport).request("GET", "/result", max_body=10_000).data["a"] == "x" * 5000


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100_000])
def test_json_nested_too_deep_is_a_bad_response_not_a_crash(depth: int) -> None:
    with pytest.raises(BadResponse):
        parse_json(b"[" * depth + b"]" * depth, what="an answer")


def test_json_at_the_depth_limit_parses() -> None:
    assert parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, what="an answer")


def test_a_redirect_from_an_api_is_not_followed_with_our_credentials() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": "https://elsewhere.test/steal"})

    with pytest.raises(BadResponse, match="redirect"):
        api(httpx.MockTransport(handler)).request("GET", "/jobs")
    assert seen == ["https://api.test/jobs"]
