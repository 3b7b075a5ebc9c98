"""What every provider adapter is, and the HTTP plumbing they share.

An adapter translates one vendor's API into our types (``JobSnapshot``, ``Artifact``,
``DeleteAnswer``) and our errors. Nothing outside ``worker/providers`` knows a vendor's
JSON or error codes.

The shared ``HttpApi``:

* maps HTTP outcomes onto the error tree: 429 is ``RateLimited``; 5xx, timeouts and
  resets are ``ProviderUnavailable``; other 4xx are ``ProviderRejected``; an answer that
  is not the JSON we expect is ``BadResponse``, and so is a 404 the adapter did not accept
  as its provider's word (a gateway's, or a wrong base URL's: the job is read again later,
  and a fixed ``base_url`` heals it without a person retrying each job);
* retries the transient ones a few times within a short budget, honouring ``Retry-After``
  and ``X-RateLimit-Reset`` (tenacity). Longer outages defer the job to a later sweep;
* reads every wait a provider asks for with one parser, ``http_headers.retry_after_seconds``:
  seconds or an HTTP date, never more than ``MAX_DEFERRAL`` (6 h) whatever the header says,
  and waited inline only up to ``MAX_INLINE_WAIT`` (60 s); a longer wait defers the job;
* caps the size of every body it reads, and parses it with ``parsing.parse_json``, which
  bounds the nesting depth of every JSON document and the memory parsing one may take, so a
  hostile or broken answer cannot exhaust memory or the stack. One answer thus takes at most
  its body cap plus ``max_parse_mib`` over what the process held before: at the defaults
  16 + 256 MiB, and 64 + 256 MiB for an Unsiloed result (``max_result_mib``), for each answer
  read at once (a sweep reads up to its ``concurrency``);
* takes a token from the provider's rate limiter before every request;
* consults the current ``send_guard`` right before every request goes out, retries included,
  so the pipeline can stop a delete whose claim it no longer holds.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, Self, TypedDict, TypeVar

import httpx
import limits
import tenacity
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from worker import shared_redis
from worker.domain import (
    Artifact,
    DeleteAnswer,
    JobGone,
    JobSnapshot,
    ListedJob,
)
from worker.errors import (
    BadResponse,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    WorkerError,
)
from worker.http_headers import MAX_DEFERRAL, retry_after_seconds
from worker.keys import job_id_problem
from worker.logging import get_logger
from worker.metrics import recorders
from worker.providers.parsing import MAX_PARSE_BYTES, MIB, parse_json
from worker.redact import Redactor

if TYPE_CHECKING:
    from worker.specs.spec import ProviderCommon

log = get_logger(__name__)

MAX_BODY_BYTES = 16 * MIB
# A wait a provider asks for beyond this defers the job instead of holding a worker.
MAX_INLINE_WAIT = 60.0


class Provider(Protocol):
    """One configured provider account."""

    name: str
    type: ClassVar[str]
    # False for APIs with no list endpoint: their jobs come from `retention track`.
    lists_jobs: ClassVar[bool]
    # How many job ids one `lookup` request takes; 0 when the API has no batch lookup.
    lookup_batch_size: ClassVar[int]

    def list_jobs(self) -> Iterator[list[ListedJob]]:
        """The provider's jobs, one page at a time."""
        ...

    def get_job(self, job_id: str) -> JobSnapshot | JobGone:
        """The job's status, read fresh."""
        ...

    def lookup(self, job_ids: list[str]) -> list[ListedJob]:
        """The status of several jobs in one request (at most ``lookup_batch_size``).

        Jobs the provider does not return are simply absent; only ``get_job`` decides that a
        job is gone.
        """
        ...

    def artifacts(self, snapshot: JobSnapshot) -> list[Artifact]:
        """Every file the provider's delete would destroy, with fresh links."""
        ...

    def open_artifact(
        self, artifact: Artifact
    ) -> contextlib.AbstractContextManager[httpx.Response]:
        """Open a ``ProviderOrigin`` artifact with the provider's own credentials."""
        ...

    def delete(self, job_id: str) -> DeleteAnswer:
        """Delete the job at the provider. Only ``delete.delete_job`` calls this."""
        ...

    def poll_delete(self, job_id: str, handle: str) -> DeleteAnswer:
        """Follow an asynchronous delete the provider accepted earlier."""
        ...

    def check_credentials(self) -> None:
        """The cheapest authenticated request; raises ProviderRejected on a bad key."""
        ...

    def close(self) -> None: ...


class ApiOptions(TypedDict, total=False):
    """What sets one provider's API client apart: its credentials and how it words errors."""

    headers: Mapping[str, str]
    auth: httpx.Auth | None
    error_detail: ErrorDetail


SettingsT = TypeVar("SettingsT", bound="ProviderCommon")


class BaseProvider(Generic[SettingsT]):
    """One account's settings and API client, and defaults for the optional parts of the
    protocol. An adapter names its credentials in ``api_options``; ``build`` does the rest."""

    name: str
    type: ClassVar[str] = ""
    lists_jobs: ClassVar[bool] = False
    lookup_batch_size: ClassVar[int] = 0

    def __init__(self, name: str, settings: SettingsT, api: HttpApi) -> None:
        self.name = name
        self.settings = settings
        self.api = api

    @classmethod
    def build(cls, name: str, settings: SettingsT, *, limiter: RateLimiter | None = None) -> Self:
        api = HttpApi(
            provider=name,
            base_url=settings.base_url,
            timeout=settings.timeout,
            limiter=limiter,
            max_parse=settings.max_parse_mib * MIB,
            secrets=settings.secret_values(),
            **cls.api_options(settings),
        )
        return cls(name, settings, api)

    @classmethod
    def api_options(cls, settings: SettingsT) -> ApiOptions:
        raise NotImplementedError(f"{cls.__name__} names no API credentials")

    @classmethod
    def job_id_problem(cls, job_id: str) -> str | None:
        """Why ``job_id`` cannot be one of this provider's job ids, or None: what `retention
        track` and the ``retention.track`` task hold each id to before the ledger records it.
        By default the id is one archive folder as it stands (``keys.job_id_problem``); an
        adapter whose ids have a known form says so on top (Huawei MPC's are numbers)."""
        return job_id_problem(job_id)

    def list_jobs(self) -> Iterator[list[ListedJob]]:
        return iter(())

    def lookup(self, job_ids: list[str]) -> list[ListedJob]:
        return []

    def open_artifact(
        self, artifact: Artifact
    ) -> contextlib.AbstractContextManager[httpx.Response]:
        raise WorkerError(
            f"{self.type} has no provider-hosted artifacts", provider=self.name, permanent=True
        )

    def poll_delete(self, job_id: str, handle: str) -> DeleteAnswer:
        raise WorkerError(
            f"{self.type} deletes are synchronous; there is nothing to poll",
            provider=self.name,
            job_id=job_id,
            permanent=True,
        )

    def close(self) -> None:
        self.api.close()


# -- rate limits ---------------------------------------------------------------------------


class RateLimiter:
    """A moving-window limit per provider account, in process memory or shared in Redis.

    A shared limit whose Redis cannot be reached raises RedisUnavailable: nothing is sent,
    since no process could then tell how many requests the others sent.
    """

    def __init__(self, rate: str, key: str, storage_uri: str = "memory://") -> None:
        self.item = limits.parse(rate)
        self.key = key
        self.address: str | None = None
        options: dict[str, float] = {}
        if storage_uri.startswith(shared_redis.SCHEMES):
            self.address = shared_redis.address_of_url(storage_uri)
            options = {
                "socket_connect_timeout": shared_redis.CONNECT_TIMEOUT,
                "socket_timeout": shared_redis.COMMAND_TIMEOUT,
            }
            # The broker's unix:// is redis+unix:// to the limits library.
            if storage_uri.startswith("unix://"):
                storage_uri = "redis+" + storage_uri
        self.limiter = MovingWindowRateLimiter(storage_from_string(storage_uri, **options))

    def acquire(self, *, max_wait: float = 300.0) -> None:
        if self.address is None:
            self._acquire(max_wait)
            return
        with shared_redis.redis_errors(self.address, "taking a slot of the shared rate limit"):
            self._acquire(max_wait)

    def _acquire(self, max_wait: float) -> None:
        deadline = time.monotonic() + max_wait
        while not self.limiter.hit(self.item, "retention", self.key):
            reset = self.limiter.get_window_stats(self.item, "retention", self.key).reset_time
            pause = min(max(reset - time.time(), 0.005), 1.0)
            if time.monotonic() + pause > deadline:
                raise RateLimited(
                    f"our own rate limit ({self.item}) kept every slot busy for {max_wait:.0f} s"
                )
            time.sleep(pause)


# -- reading an answer ----------------------------------------------------------------------


def need(mapping: Any, key: str, kind: type | tuple[type, ...], *, what: str) -> Any:
    """``mapping[key]`` if it is of ``kind``, else a BadResponse naming the field."""
    if not isinstance(mapping, Mapping):
        raise BadResponse(f"{what} is not a JSON object")
    value = mapping.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise BadResponse(f"{what} has no {names} field {key!r}")
    return value


# -- HTTP ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiResponse:
    status: int
    headers: httpx.Headers
    data: Any = field(repr=False)


def _retry_after(headers: httpx.Headers) -> float | None:
    return retry_after_seconds(headers, datetime.now(UTC))


def _wait(state: tenacity.RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return min(exc.retry_after, MAX_INLINE_WAIT)
    backoff: float = tenacity.wait_exponential_jitter(multiplier=0.5, max=8)(state)
    return backoff


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, _GuardRefused):
        return False
    if isinstance(exc, RateLimited):
        return exc.retry_after is None or exc.retry_after <= MAX_INLINE_WAIT
    return isinstance(exc, ProviderUnavailable)


# -- the send guard ------------------------------------------------------------------------

# A check the pipeline sets around a dangerous call (the provider's delete): it raises when
# the job's claim is no longer ours. A context variable so that it belongs to the job that
# set it, in its own thread, and follows no other job's requests.
_send_guard: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "retention_send_guard", default=None
)


@contextlib.contextmanager
def send_guard(check: Callable[[], None]) -> Iterator[None]:
    """Run ``check`` right before every request ``HttpApi`` sends inside this block.

    It runs after the rate limiter's token is taken and after any pacing wait, immediately
    before the request goes out, and again before each retry: the moment that matters is
    when the request leaves, not when it was queued, and a worker paused past its lease (a
    long GC, a stopped VM, a rate-limit wait) must not send a delete when it wakes. If
    ``check`` raises, the request is not sent and the exception propagates unchanged; it is
    never retried. Guards nest: an inner guard adds to the outer one, never replaces it.
    """
    outer = _send_guard.get()
    if outer is None:
        combined = check
    else:

        def combined() -> None:
            outer()
            check()

    token = _send_guard.set(combined)
    try:
        yield
    finally:
        _send_guard.reset(token)


def _consult_send_guard() -> None:
    """Run the current guard, if any; whatever it raises propagates as it is."""
    guard = _send_guard.get()
    if guard is not None:
        guard()


class _GuardRefused(Exception):
    """Carries a guard's exception through tenacity, which must not retry it whatever its
    type (a guard may well raise a ProviderError); ``request`` re-raises the original."""

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


ErrorDetail = Callable[[int, Any], str | None]


def not_the_providers_404(label: str, detail: str, base_url: str) -> BadResponse:
    """A 404 that is not the provider's own word about a job. Never "gone", and not a
    refusal for a person to retry by hand: transient, naming the base URL to check."""
    return BadResponse(
        f"{label} answered 404{detail}: not the provider's own answer (a gateway's, or a "
        "wrong base URL's)",
        hint=f"Check base_url ({base_url}); nothing is marked gone, and the job is read "
        "again on a later sweep",
    )


def transport_cause(exc: httpx.TransportError) -> str:
    """Why a request got no answer, in a person's words, from the error httpx wraps:
    connection refused, a host name DNS did not resolve, a TLS handshake that failed, a
    timeout. What a check prints, and what a deferred job's error says."""
    node: BaseException | None = exc
    for _ in range(8):  # httpx -> httpcore -> the socket's own error
        if node is None:
            break
        if isinstance(node, ssl.SSLCertVerificationError):
            return f"TLS: the server's certificate was not accepted ({node.verify_message})"
        if isinstance(node, ssl.SSLError):
            return f"TLS handshake failed ({node.reason or node})"
        if isinstance(node, socket.gaierror):
            return f"DNS did not resolve the host name ({node.strerror or node})"
        if isinstance(node, ConnectionRefusedError):
            return "connection refused"
        if isinstance(node, ConnectionResetError):
            return "connection reset"
        node = node.__cause__ or node.__context__
    if isinstance(exc, httpx.ConnectTimeout):
        return "no connection within the timeout"
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within the timeout ({type(exc).__name__})"
    detail = str(exc)[:200]
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def request_url(exc: httpx.TransportError, fallback: str) -> str:
    """The URL a failed request went to, without its query string: parameters are for the
    API, not for a message (some APIs take a token there)."""
    try:
        url = exc.request.url
    except RuntimeError:  # raised before a request was built
        return fallback
    return str(url.copy_with(query=None, fragment=None))


class HttpApi:
    """A provider's API over one pooled httpx client."""

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        timeout: float,
        limiter: RateLimiter | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        error_detail: ErrorDetail | None = None,
        transport: httpx.BaseTransport | None = None,
        attempts: int = 4,
        max_body: int = MAX_BODY_BYTES,
        max_parse: int = MAX_PARSE_BYTES,
        secrets: Iterable[str] = (),
    ) -> None:
        self.provider = provider
        self.base_url = base_url
        # A provider that repeats a credential back in its error (or a signed link) must not
        # put it into our messages: every detail taken from an answer passes through this.
        self.redactor = Redactor(secrets)
        self.limiter = limiter
        self.error_detail = error_detail
        self.attempts = attempts
        self.max_body = max_body
        self.max_parse = max_parse
        # Honour X-RateLimit-Remaining: 0 with its X-RateLimit-Reset before the next request,
        # instead of spending one on a 429 (DatoCMS sends these on every answer).
        self._pace_lock = threading.Lock()
        self._not_before = 0.0
        self.client = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"User-Agent": "retention-worker", **(headers or {})},
            auth=auth,
            transport=transport,
            # A redirect from a provider's API is unexpected; following it could carry our
            # credentials to another host. Treat it as an error instead.
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    def close(self) -> None:
        self.client.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json_body: Any = None,
        ok: Sequence[int] = (200,),
        accept: Sequence[int] = (),
        what: str | None = None,
        retry: bool = True,
        max_body: int | None = None,
    ) -> ApiResponse:
        """Send one request (retrying transient failures); return it if its status is in
        ``ok`` or ``accept``, else raise the matching error. ``max_body`` raises the body cap
        for one call (a large document the provider serves)."""
        label = what or f"{method} {path}"
        attempts = self.attempts if retry else 1
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts) | tenacity.stop_after_delay(90),
            wait=_wait,
            retry=tenacity.retry_if_exception(_retryable),
            reraise=True,
            before_sleep=self._log_retry(label),
        )
        try:
            result: ApiResponse = retrying(
                self._once,
                method,
                path,
                params,
                json_body,
                tuple(ok),
                tuple(accept),
                label,
                max_body or self.max_body,
            )
        except _GuardRefused as refused:
            original = refused.original
        except WorkerError as exc:
            # Every error names its provider, even where no job is involved (a credentials
            # check); the pipeline adds the job.
            raise exc.for_job(self.provider) from exc.__cause__
        else:
            return result
        # Raised outside the handler so the guard's error keeps its own context, unchanged.
        raise original

    def _log_retry(self, label: str) -> Callable[[tenacity.RetryCallState], None]:
        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "provider_request_retrying",
                provider=self.provider,
                request=label,
                attempt=state.attempt_number,
                error=str(exc),
                wait_s=round(state.upcoming_sleep, 2),
            )

        return before_sleep

    def _once(
        self,
        method: str,
        path: str,
        params: Any,
        json_body: Any,
        ok: tuple[int, ...],
        accept: tuple[int, ...],
        label: str,
        max_body: int,
    ) -> ApiResponse:
        self._wait_for_window()
        if self.limiter is not None:
            self.limiter.acquire()
        try:
            _consult_send_guard()
        except Exception as exc:
            raise _GuardRefused(exc) from None
        # Counted from here, when the request leaves: waits for a token or a window are ours.
        sent = time.monotonic()
        answered: int | None = None
        failure = "network"
        try:
            with self.client.stream(method, path, params=params, json=json_body) as response:
                answered = response.status_code
                raw = self._read_capped(response, label, max_body)
                self._note_window(response.headers)
        except httpx.TimeoutException as exc:
            failure = "timeout"
            url = request_url(exc, self.base_url)
            raise ProviderUnavailable(
                f"{label} timed out waiting for {url} ({type(exc).__name__})",
                hint="The job will be tried again",
            ) from exc
        except httpx.TransportError as exc:
            url = request_url(exc, self.base_url)
            cause = self.redactor.scrub(transport_cause(exc))
            raise ProviderUnavailable(
                f"{label} failed: {url} could not be reached: {cause}",
                hint="The job will be tried again",
            ) from exc
        finally:
            # Every attempt, retries included: a 429 or a 5xx that tenacity retries is one.
            recorders.record_provider_request(
                self.provider,
                method,
                status=answered,
                error=failure,
                seconds=time.monotonic() - sent,
            )
        status = response.status_code
        data: Any = None
        content_type = response.headers.get("content-type", "")
        if raw and ("json" in content_type or raw.startswith((b"{", b"["))):
            try:
                data = parse_json(
                    raw,
                    what=f"the answer to {label}",
                    max_parse=self.max_parse,
                    provider=self.provider,
                )
            except BadResponse:
                if status in ok:
                    raise
        if status in ok or status in accept:
            return ApiResponse(status=status, headers=response.headers, data=data)
        raise self._refusal(status, response.headers, data, label)

    def _refusal(self, status: int, headers: httpx.Headers, data: Any, label: str) -> WorkerError:
        """The error an answer outside ``ok`` and ``accept`` means, in the error tree."""
        detail = self.error_detail(status, data) if self.error_detail else None
        detail = self.redactor.scrub(detail) if detail else None
        suffix = f": {detail}" if detail else ""
        if status == 429:
            return RateLimited(
                f"{label} was rate limited (429){suffix}",
                retry_after=_retry_after(headers),
                hint="The job will be tried again",
            )
        if status >= 500:
            return ProviderUnavailable(
                f"{label} answered {status}{suffix}",
                hint="The provider is failing; the job will be tried again",
            )
        if status in (401, 403):
            return ProviderRejected(
                f"{label} answered {status}{suffix}",
                hint="Check the provider's credentials in the configuration",
            )
        if 300 <= status < 400:
            return BadResponse(f"{label} answered an unexpected redirect ({status})")
        if status == 404:
            return not_the_providers_404(label, suffix, self.base_url)
        return ProviderRejected(f"{label} answered {status}{suffix}")

    @contextlib.contextmanager
    def stream(self, method: str, path: str, *, what: str) -> Iterator[httpx.Response]:
        """Open a body served by the provider's API, with its credentials, to stream it.

        The caller checks the status (``fetch.check_response``) and reads the raw bytes; the
        body is asked for without content encoding so the bytes stored are the ones served.
        """
        self._wait_for_window()
        if self.limiter is not None:
            self.limiter.acquire()
        _consult_send_guard()
        opened = False
        try:
            with self.client.stream(
                method, path, headers={"Accept-Encoding": "identity"}
            ) as response:
                # Counted, not timed: the body streams for as long as the file is large.
                recorders.record_provider_request(
                    self.provider, method, status=response.status_code
                )
                opened = True
                self._note_window(response.headers)
                yield response
        except httpx.TimeoutException as exc:
            if not opened:
                recorders.record_provider_request(
                    self.provider, method, status=None, error="timeout"
                )
            raise ProviderUnavailable(f"{what} timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            if not opened:
                recorders.record_provider_request(
                    self.provider, method, status=None, error="network"
                )
            raise ProviderUnavailable(f"{what} failed: {type(exc).__name__}") from exc

    def _wait_for_window(self) -> None:
        """Wait out a window the provider said is spent, if it ends within the inline cap.

        A window that ends later is not slept through: holding a worker for it only to send a
        request that would be refused helps no one. The job is deferred until it ends.
        """
        with self._pace_lock:
            pause = self._not_before - time.monotonic()
        if pause > MAX_INLINE_WAIT:
            raise RateLimited(
                f"{self.provider}'s rate-limit window has no requests left for {pause:.0f} s more",
                retry_after=min(pause, MAX_DEFERRAL),
                hint="Nothing was sent; the job will be tried again once the window resets",
            )
        if pause > 0:
            time.sleep(pause)

    def _note_window(self, headers: httpx.Headers) -> None:
        remaining = headers.get("x-ratelimit-remaining")
        if remaining is None or remaining.strip() != "0":
            return
        reset = _retry_after(
            httpx.Headers({"x-ratelimit-reset": headers.get("x-ratelimit-reset", "1")})
        )
        with self._pace_lock:
            # reset is at most MAX_DEFERRAL; _wait_for_window decides to sleep or defer.
            self._not_before = max(self._not_before, time.monotonic() + (reset or 1.0))

    def _read_capped(self, response: httpx.Response, label: str, max_body: int) -> bytearray:
        """The body, refused past ``max_body``; grown in one buffer, so a large answer is held
        once while it is read (chunks and their join would hold it twice)."""
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body:
            raise BadResponse(f"the answer to {label} is larger than {max_body} bytes")
        body = bytearray()
        for chunk in response.iter_bytes():
            if len(body) + len(chunk) > max_body:
                raise BadResponse(f"the answer to {label} is larger than {max_body} bytes")
            body += chunk
        return body
