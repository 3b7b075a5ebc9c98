"""HttpApi's defences against hostile or broken answers: body size and JSON depth caps, capped
waits (Retry-After, X-RateLimit-Reset), and the send guard that stops a request unsent."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from httpx import MockTransport

from worker.errors import BadResponse, LedgerError, ProviderUnavailable, RateLimited
from worker.http_headers import MAX_DEFERRAL, retry_after_seconds
from worker.providers.base import (
    MAX_INLINE_WAIT,
    HttpApi,
    RateLimiter,
    _retryable,
    send_guard,
)
from worker.providers.parsing import MAX_JSON_DEPTH, parse_json
from worker.simulators.http import Request, Response, SimServer, route


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


# -- a provider that cannot be reached: where, and why ---------------------------------------


@pytest.fixture
def closed_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port: int = probe.getsockname()[1]
    probe.close()
    return port


@pytest.fixture
def not_tls() -> Iterator[int]:
    """A port that answers a TLS handshake with plain text."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def answer() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def unreachable(base_url: str) -> ProviderUnavailable:
    client = HttpApi(provider="p", base_url=base_url, timeout=5, attempts=1)
    with pytest.raises(ProviderUnavailable) as caught:
        client.request("GET", "/batch-processor", params={"limit": "1", "token": "t0ken"})
    client.close()
    return caught.value


def test_a_refused_connection_names_the_url_and_the_cause(closed_port: int) -> None:
    error = unreachable(f"http://127.0.0.1:{closed_port}/v1")
    message = str(error)
    assert f"http://127.0.0.1:{closed_port}/v1/batch-processor" in message
    assert "connection refused" in message
    assert "t0ken" not in message  # no query string
    # the sweep's hint: a job is tried again
    assert "tried again" in message


def test_a_host_name_that_does_not_resolve_says_dns() -> None:
    message = str(unreachable("http://no-such-host.invalid/v1"))
    assert "http://no-such-host.invalid/v1/batch-processor" in message
    assert "DNS" in message
    assert "no-such-host.invalid" in message


def test_a_tls_handshake_that_fails_says_tls(not_tls: int) -> None:
    message = str(unreachable(f"https://127.0.0.1:{not_tls}"))
    assert f"https://127.0.0.1:{not_tls}/batch-processor" in message
    assert "TLS" in message


# -- Retry-After and X-RateLimit-Reset: one parser, always capped ----------------------------

NOW = datetime(2026, 10, 21, 7, 0, 0, tzinfo=UTC)
TEN_YEARS = 10 * 365 * 86400  # above this, X-RateLimit-Reset is read as an epoch timestamp


def http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "120"}, 120.0),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"Retry-After": " 30 "}, 30.0),
        ({"Retry-After": str(MAX_DEFERRAL - 1)}, MAX_DEFERRAL - 1),
        ({"Retry-After": str(MAX_DEFERRAL)}, MAX_DEFERRAL),
        ({"Retry-After": str(MAX_DEFERRAL + 1)}, MAX_DEFERRAL),
        ({"Retry-After": "99999999999999999999"}, MAX_DEFERRAL),
        ({"Retry-After": "9" * 400}, MAX_DEFERRAL),  # beyond a float: inf, capped
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "-5"}, None),
        ({"Retry-After": "1e9"}, None),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": ""}, None),
        ({}, None),
        ({"Retry-After": http_date(NOW + timedelta(hours=1))}, 3600.0),
        ({"Retry-After": http_date(NOW + timedelta(hours=6, seconds=-1))}, MAX_DEFERRAL - 1),
        ({"Retry-After": http_date(NOW + timedelta(hours=6, seconds=1))}, MAX_DEFERRAL),
        ({"Retry-After": "Wed, 21 Oct 2036 07:28:00 GMT"}, MAX_DEFERRAL),
        ({"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}, MAX_DEFERRAL),
        ({"Retry-After": http_date(NOW - timedelta(hours=1))}, 0.0),
        ({"Retry-After": "Mon, 01 Jan 0001 00:00:00 GMT"}, 0.0),
        ({"Retry-After": "Fri, 31 Dec 99999 23:59:59 GMT"}, None),
        ({"Retry-After": "Wed, 21 Oct 2026 07:28:00"}, 1680.0),  # no zone: read as GMT
        ({"X-RateLimit-Reset": "30"}, 30.0),
        ({"X-RateLimit-Reset": str(TEN_YEARS)}, MAX_DEFERRAL),  # seconds, capped
        ({"X-RateLimit-Reset": str(TEN_YEARS + 1)}, 0.0),  # an epoch in 1979: passed
        ({"X-RateLimit-Reset": str(int(NOW.timestamp()) + 100)}, 100.0),
        ({"X-RateLimit-Reset": str(int(NOW.timestamp()) + 7 * 3600)}, MAX_DEFERRAL),
        ({"X-RateLimit-Reset": "99999999999999999999"}, MAX_DEFERRAL),
        ({"X-RateLimit-Reset": http_date(NOW + timedelta(minutes=2))}, 120.0),
        ({"Retry-After": "5", "X-RateLimit-Reset": "50"}, 5.0),
        ({"Retry-After": "garbage", "X-RateLimit-Reset": "50"}, 50.0),
    ],
)
def test_a_providers_wait_is_read_as_seconds_or_a_date_and_capped(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert retry_after_seconds(httpx.Headers(headers), NOW) == seconds


def test_a_naive_now_is_read_as_utc() -> None:
    headers = httpx.Headers({"Retry-After": http_date(NOW + timedelta(seconds=90))})
    assert retry_after_seconds(headers, NOW.replace(tzinfo=None)) == 90.0


def rate_limited(headers: dict[str, str]) -> RateLimited:
    served: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        served.append(1)
        return httpx.Response(429, headers=headers)

    with pytest.raises(RateLimited) as caught:
        HttpApi(
            provider="p", base_url="https://api.test", timeout=5, transport=MockTransport(handler)
        ).request("GET", "/jobs")
    assert served == [1], "a wait longer than the inline cap is not waited out"
    return caught.value


def test_a_huge_retry_after_defers_the_job_by_at_most_six_hours() -> None:
    exc = rate_limited({"Retry-After": "99999999999999999999"})
    assert exc.retry_after is not None
    assert exc.retry_after <= MAX_DEFERRAL
    datetime.now(UTC) + timedelta(seconds=exc.retry_after)  # no OverflowError


def test_a_retry_after_date_years_ahead_defers_the_job_by_at_most_six_hours() -> None:
    exc = rate_limited({"Retry-After": "Wed, 21 Oct 2036 07:28:00 GMT"})
    assert exc.retry_after == MAX_DEFERRAL


def test_a_wait_just_over_the_inline_cap_defers_instead_of_waiting() -> None:
    exc = rate_limited({"Retry-After": str(int(MAX_INLINE_WAIT) + 1)})
    assert exc.retry_after == MAX_INLINE_WAIT + 1


def test_the_inline_cap_is_about_a_minute() -> None:
    assert MAX_INLINE_WAIT == 60.0
    assert MAX_DEFERRAL == 6 * 3600


@pytest.mark.parametrize(
    ("retry_after", "inline"),
    [(None, True), (0.0, True), (MAX_INLINE_WAIT, True), (MAX_INLINE_WAIT + 0.001, False)],
)
def test_a_429_is_retried_inline_only_up_to_the_inline_cap(
    retry_after: float | None, inline: bool
) -> None:
    assert _retryable(RateLimited("429", retry_after=retry_after)) is inline


def test_a_short_retry_after_is_waited_out_inline() -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(200)])
    transport = MockTransport(lambda request: next(answers))
    api = HttpApi(provider="p", base_url="https://api.test", timeout=5, transport=transport)
    assert api.request("GET", "/jobs").status == 200


def paced_api(reset: str) -> tuple[HttpApi, list[int]]:
    """An API whose first answer says no requests remain until ``reset``."""
    served: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        served.append(1)
        return httpx.Response(
            200, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
        )

    api = HttpApi(
        provider="p", base_url="https://api.test", timeout=5, transport=MockTransport(handler)
    )
    return api, served


def test_pacing_waits_a_short_window_out_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    api, served = paced_api("2")
    api.request("GET", "/a")
    api.request("GET", "/b")
    assert served == [1, 1]
    assert len(slept) == 1
    assert 1.0 < slept[0] <= 2.0


@pytest.mark.parametrize("reset", ["3600", "99999999999999999999", "Wed, 21 Oct 2036 07:28:00 GMT"])
def test_pacing_never_sleeps_past_the_inline_cap_and_defers_instead(
    monkeypatch: pytest.MonkeyPatch, reset: str
) -> None:
    # Given an answer that says no requests remain for an hour (or for ever)
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    api, served = paced_api(reset)
    api.request("GET", "/a")
    # When the next request comes
    with pytest.raises(RateLimited) as caught:
        api.request("GET", "/b")
    # Then it is not sent, nothing slept, and the job is deferred by at most six hours
    assert served == [1]
    assert slept == []
    assert caught.value.retry_after is not None
    assert MAX_INLINE_WAIT < caught.value.retry_after <= MAX_DEFERRAL


# -- the send guard --------------------------------------------------------------------------


class Api(SimServer):
    @route("GET", "/jobs")
    def jobs(self, request: Request) -> Response:
        return Response.json({"jobs": []})

    @route("DELETE", "/jobs/(?P<job>[^/]+)")
    def delete(self, request: Request) -> Response:
        return Response.json({"deleted": request.params["job"]})

    @route("GET", "/file")
    def file(self, request: Request) -> Response:
        return Response(200, b"bytes")


@pytest.fixture
def server() -> Iterator[Api]:
    with Api() as sim:
        assert isinstance(sim, Api)
        yield sim


def real_api(server: Api, **options: Any) -> HttpApi:
    return HttpApi(provider="p", base_url=server.origin, timeout=5, **options)


def test_a_guard_that_raises_stops_the_request_before_it_is_sent(server: Api) -> None:
    # Given a guard that says the job's claim is lost
    lost = LedgerError("the claim on job 1 is held by another worker")

    def claim_lost() -> None:
        raise lost

    # When the delete is sent under it
    with send_guard(claim_lost), pytest.raises(LedgerError) as caught:
        real_api(server).request("DELETE", "/jobs/1")
    # Then the server saw nothing, and the guard's own error came out, unchanged
    assert server.requests == []
    assert caught.value is lost


def test_a_passing_guard_lets_the_request_through(server: Api) -> None:
    calls: list[int] = []
    with send_guard(lambda: calls.append(1)):
        answer = real_api(server).request("DELETE", "/jobs/1")
    assert answer.data == {"deleted": "1"}
    assert calls == [1]
    assert [seen.method for seen in server.requests] == ["DELETE"]


def test_the_guard_is_consulted_again_before_each_retry(server: Api) -> None:
    server.inject(path="/jobs/1", status=429, headers={"Retry-After": "0"}, times=2)
    calls: list[int] = []
    with send_guard(lambda: calls.append(1)):
        real_api(server).request("DELETE", "/jobs/1")
    assert len(calls) == 3
    assert [seen.status for seen in server.requests] == [429, 429, 200]


def test_a_guard_that_fails_on_a_retry_stops_the_retry(server: Api) -> None:
    server.inject(path="/jobs/1", status=503)
    calls: list[int] = []

    def second_call_fails() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise LedgerError("the claim expired while the first attempt ran")

    with send_guard(second_call_fails), pytest.raises(LedgerError):
        real_api(server).request("DELETE", "/jobs/1")
    assert len(calls) == 2
    assert [seen.status for seen in server.requests] == [503]


def test_a_guard_error_is_never_retried_whatever_its_type(server: Api) -> None:
    calls: list[int] = []

    def unavailable() -> None:
        calls.append(1)
        raise ProviderUnavailable("a guard that looks transient")

    with send_guard(unavailable), pytest.raises(ProviderUnavailable):
        real_api(server).request("DELETE", "/jobs/1")
    assert calls == [1]
    assert server.requests == []


def test_the_guard_runs_after_the_rate_limit_token_and_right_before_sending(
    server: Api,
) -> None:
    order: list[str] = []

    class Recording(RateLimiter):
        def acquire(self, *, max_wait: float = 300.0) -> None:
            super().acquire(max_wait=max_wait)
            order.append("token")

    server.on_request = lambda request: order.append("sent")
    limiter = Recording("100/second", "p")
    with send_guard(lambda: order.append("guard")):
        real_api(server, limiter=limiter).request("GET", "/jobs")
    assert order == ["token", "guard", "sent"]


def test_a_guard_stops_a_streamed_download_too(server: Api) -> None:
    def claim_lost() -> None:
        raise LedgerError("claim lost")

    api = real_api(server)
    with send_guard(claim_lost), pytest.raises(LedgerError), api.stream("GET", "/file", what="f"):
        pytest.fail("the body was opened")
    assert server.requests == []
    with api.stream("GET", "/file", what="f") as response:  # no guard outside the block
        assert response.read() == b"bytes"


def test_nested_guards_are_all_consulted(server: Api) -> None:
    calls: list[str] = []

    def refuse() -> None:
        calls.append("inner")
        raise LedgerError("inner refuses")

    with (
        send_guard(lambda: calls.append("outer")),
        send_guard(refuse),
        pytest.raises(LedgerError),
    ):
        real_api(server).request("GET", "/jobs")
    assert calls == ["outer", "inner"]
    assert server.requests == []


def test_a_guard_belongs_to_its_own_thread_of_work(server: Api) -> None:
    # A context variable: a guard set for one job is not seen by another thread's requests.
    def refuse() -> None:
        raise LedgerError("claim lost")

    api = real_api(server)
    errors: list[BaseException] = []

    def other_job() -> None:
        try:
            api.request("GET", "/jobs")
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    with send_guard(refuse):
        thread = threading.Thread(target=other_job)
        thread.start()
        thread.join()
    assert errors == []
    assert len(server.requests) == 1
