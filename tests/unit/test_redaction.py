"""The log redactor: known secrets, signed URLs and credential headers never reach a line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from worker.logging import REDACTED, Redactor, configure_logging, get_logger, register_secrets


@pytest.mark.parametrize(
    ("text", "leak"),
    [
        ("GET https://cdn.example/a.txt?X-Amz-Signature=deadbeef&X-Amz-Credential=AK", "deadbeef"),
        (
            "headers={'Authorization': b'AWS4-HMAC-SHA256 Credential=AKIAX/2026, Signature=ab12'}",
            "ab12",
        ),
        ("Authorization: Bearer abcdefghijkl", "abcdefghijkl"),
        ("'X-API-Key': 'unsiloed-key-999'", "unsiloed-key-999"),
        ("postgresql+psycopg://user:hunter22@db/ledger", "hunter22"),
        (
            "SDK-HMAC-SHA256 Access=QTWAOYTTINDUT2QVKYUC, SignedHeaders=x, Signature=7be66680",
            "7be66680",
        ),
    ],
)
def test_shapes_of_secrets_are_scrubbed(text: str, leak: str) -> None:
    assert leak not in Redactor().scrub(text)


def test_registered_secrets_are_scrubbed_anywhere() -> None:
    redactor = Redactor(["my-very-secret-key"])
    assert (
        redactor.scrub("error: key my-very-secret-key refused") == f"error: key {REDACTED} refused"
    )


def test_keys_that_name_credentials_are_redacted_whatever_their_value() -> None:
    redacted = Redactor().scrub_value(
        {"api_token": "x", "nested": {"password": "y"}, "key": "s3/k"}
    )
    assert redacted == {"api_token": REDACTED, "nested": {"password": REDACTED}, "key": "s3/k"}


@pytest.fixture
def debug_logs() -> Iterator[io.StringIO]:
    """Logging at DEBUG into a buffer, put back to quiet afterwards for the tests that follow."""
    stream = io.StringIO()
    configure_logging(level=logging.DEBUG, json=True, stream=stream)
    yield stream
    configure_logging(level=logging.WARNING, json=True, stream=io.StringIO())


def test_log_lines_and_library_records_are_scrubbed_at_debug(debug_logs: io.StringIO) -> None:
    stream = debug_logs
    register_secrets(["another-secret-value-42"])
    get_logger("test").info("step", note="another-secret-value-42", api_key="plain-key")
    logging.getLogger("botocore.endpoint").debug(
        "Sending http request: headers={'Authorization': b'AWS4-HMAC-SHA256 Signature=ffee'}"
    )
    logging.getLogger("httpx").info(
        'HTTP Request: GET https://x.test/f?X-Amz-Signature=abcd "HTTP/1.1 200 OK"'
    )
    try:
        raise RuntimeError("boom with another-secret-value-42")
    except RuntimeError:
        get_logger("test").exception("failed")
    output = stream.getvalue()
    for leak in ("another-secret-value-42", "plain-key", "ffee", "abcd"):
        assert leak not in output
    events = [json.loads(line) for line in output.splitlines()]
    assert next(e["event"] for e in events) == "step"
    assert all("timestamp" in e and "level" in e for e in events)


def test_request_bodies_in_library_records_are_logged_as_their_length(
    debug_logs: io.StringIO,
) -> None:
    # botocore's DEBUG record of an upload carries the part itself in its arguments.
    part = bytearray(b"customer recording " * 500_000)
    logging.getLogger("botocore.endpoint").debug(
        "Making request for %s with params: %s",
        "UploadPart",
        {"url_path": "/bucket/key", "body": part, "headers": {"Content-MD5": "abc="}},
    )
    (line,) = debug_logs.getvalue().splitlines()
    assert f"<{len(part)} bytes>" in line
    assert "customer recording" not in line
    assert "Content-MD5" in line
    assert "/bucket/key" in line
    assert len(line) < 2000
