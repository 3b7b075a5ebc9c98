"""The log redactor: known secrets, signed URLs and credential headers never reach a line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from worker.logging import get_logger
from worker.logsetup import configure_logging
from worker.redact import REDACTED, URL_MASK, Redactor, mask_url, register_secrets, url_credentials


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
        # Credentials in a query string, which redis-py and psycopg both read.
        ("Error connecting to redis://cache:6379/0?password=hunter33x", "hunter33x"),
        ("redis://cache/0?db=1&password=p%40ss-word-1&ssl_cert_reqs=none", "ss-word-1"),
        ("postgresql+psycopg://u@db/x?sslmode=require&sslpassword=key-pass-9", "key-pass-9"),
        ("postgresql://db/x?token=tok-98765&application_name=w", "tok-98765"),
        # libpq's key=value form of the same, as a driver may echo it.
        ("invalid dsn: host=db user=u password=libpq-pass-7 dbname=x", "libpq-pass-7"),
        ("host=db sslpassword='key pass 8' dbname=x", "key pass 8"),
        ("ledger_open_failed db_password=pw-console-1 attempt=2", "pw-console-1"),
    ],
)
def test_shapes_of_secrets_are_scrubbed(text: str, leak: str) -> None:
    assert leak not in Redactor().scrub(text)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # The userinfo's password, as before.
        ("postgresql://u:p@db:5432/x", f"postgresql://u:{URL_MASK}@db:5432/x"),
        ("redis://:p@cache/0", f"redis://:{URL_MASK}@cache/0"),
        # Query parameters redis-py and psycopg read as credentials; the others are kept.
        (
            "redis://cache:6379/0?password=s3cret&health_check_interval=5",
            f"redis://cache:6379/0?password={URL_MASK}&health_check_interval=5",
        ),
        (
            "rediss://cache/0?username=app&password=p%40ss&ssl_cert_reqs=required"
            "&ssl_password=kp&ssl_keyfile=/k.pem",
            f"rediss://cache/0?username=app&password={URL_MASK}&ssl_cert_reqs=required"
            f"&ssl_password={URL_MASK}&ssl_keyfile=/k.pem",
        ),
        (
            "postgresql+psycopg://u:one@db/x?password=two&sslpassword=three&sslmode=verify-full"
            "&options=-csearch_path%3Ds",
            f"postgresql+psycopg://u:{URL_MASK}@db/x?password={URL_MASK}&sslpassword={URL_MASK}"
            "&sslmode=verify-full&options=-csearch_path%3Ds",
        ),
        (
            "https://gw.example/p?token=a&api_key=b&pass=c&pwd=d&client_secret=e&page=2#top",
            f"https://gw.example/p?token={URL_MASK}&api_key={URL_MASK}&pass={URL_MASK}"
            f"&pwd={URL_MASK}&client_secret={URL_MASK}&page=2#top",
        ),
        # A name spelt with percent escapes is still the name a driver reads.
        ("redis://cache/0?pass%77ord=x1", f"redis://cache/0?pass%77ord={URL_MASK}"),
        # SQLAlchemy reads a password up to the first @, a / or ? in it included.
        ("postgresql://u:pa/ss@db/x", f"postgresql://u:{URL_MASK}@db/x"),
        ("postgresql://u:pa?ss@db/x", f"postgresql://u:{URL_MASK}@db/x"),
        ("sqlite:///retention.db", "sqlite:///retention.db"),
        ("https://user@host/x", "https://user@host/x"),
        ("redis://cache:6379/0?db=2", "redis://cache:6379/0?db=2"),
    ],
)
def test_a_url_shows_everything_but_the_credentials_a_driver_reads(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_a_urls_credentials_are_known_in_every_form_a_driver_may_read() -> None:
    found = url_credentials(
        "redis://app:p%40ss-word@cache/0?password=q%2Bw+x&ssl_password=kp&db=1&username=app"
    )
    # as written, as percent-decoded (redis-py, libpq), and with + as a space (parse_qs)
    assert {"p%40ss-word", "p@ss-word", "q%2Bw+x", "q+w+x", "q+w x", "kp"} <= found
    assert not found & {"app", "1", "cache"}


def test_the_credentials_in_a_url_are_scrubbed_once_registered() -> None:
    redactor = Redactor(url_credentials("postgresql://u@db/x?password=p%40ss-value"))
    # a driver's message that echoes the value it decoded
    assert "p@ss-value" not in redactor.scrub('FATAL: password "p@ss-value" rejected')


def test_a_json_line_stays_one_when_a_credential_in_it_is_scrubbed() -> None:
    line = json.dumps(
        {"error": "dsn host=db password=pw-12345", "url": "redis://h/0?password=pw-67890"}
    )
    scrubbed = json.loads(Redactor().scrub(line))
    assert scrubbed == {
        "error": f"dsn host=db password={REDACTED}",
        "url": f"redis://h/0?password={REDACTED}",
    }


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


@pytest.mark.parametrize(
    ("description", "kept"), [("raised expected", False), ("raised unexpected", True)]
)
def test_a_tasks_expected_error_is_logged_without_the_traceback_celery_attaches(
    debug_logs: io.StringIO, description: str, kept: bool
) -> None:
    # Celery's trace logs a task's failure with its formatted traceback in the record's data,
    # even for an error the task's `throws` names (retention.track's refusals).
    context = {"id": "t1", "exc": "TrackRefused('loom: nothing was tracked')"}
    context |= {
        "traceback": "Traceback (most recent call last):\n  ...",
        "description": description,
    }
    logging.getLogger("celery.app.trace").log(
        logging.INFO, "Task %(id)s %(description)s: %(exc)s", context, extra={"data": context}
    )
    (event,) = [json.loads(line) for line in debug_logs.getvalue().splitlines()]
    assert event["event"] == f"Task t1 {description}: TrackRefused('loom: nothing was tracked')"
    assert ("Traceback" in json.dumps(event)) is kept
