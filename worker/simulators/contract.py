"""The contract every provider adapter keeps, written once and run against each simulator:
the base a provider's tests subclass, the built-in ones' and a plug-in's alike.

Each provider's test file describes its provider once and subclasses ``Contract``::

    from worker.simulators.contract import Call, Contract, Description, WrongKey

    class TestDailyContract(Contract):
        description = Description(name="daily", simulator=..., ...)

pytest then runs every ``test_`` method below against that provider's adapter and simulator,
over real HTTP on 127.0.0.1, with the ids reading ``TestDailyContract::test_...``. A new
provider needs one ``Description`` and those two lines; the cases here stay as they are. The
adapter is built as the worker builds it, through the registry from a settings table, so a
plug-in's provider is tested the way it will run; its simulator is a ``SimServer``
(``worker/simulators/http.py``), which gives every case its faults (``inject``) and what was
asked of it (``seen``). docs/architecture/modules.md, "Adding a provider", says what else a
plug-in holds.

Why a base class rather than a parametrized fixture over a list of descriptions:

* a provider's file stays the whole story of that provider: ``pytest
  tests/providers/test_loom_contract.py`` runs Loom's contract and Loom's own tests together;
* the description sits beside the provider's keys and helpers, so this module names no vendor
  and holds no credentials;
* this module is not collected on its own (it is not a test module), so no case runs twice
  and no collection hook or star-import is needed to reach it;
* a subclass without a description errors on every case, where a list left one entry short
  would quietly run four providers.

The cases, whatever the vendor:

* credentials: a wrong key is a permanent ``ProviderRejected`` on every call, in the vendor's
  words with our advice, and never shows a credential; the right key passes
  ``check_credentials`` in one request that touches no job;
* 429: retried after the wait it asks for, or at once without one; one that outlasts the
  inline retries is ``RateLimited`` (transient); a wait beyond ``MAX_INLINE_WAIT`` defers the
  job at once instead of holding a worker;
* 5xx and a reset connection: retried, then ``ProviderUnavailable`` (transient), on a read
  and on a delete; an answer slower than the timeout is ``ProviderUnavailable`` too;
* a malformed answer (not JSON, the wrong shape, nested too deep, too large) is
  ``BadResponse`` (transient), never a crash and never "gone";
* a status word the adapter does not know is never terminal;
* downloads carry no credentials;
* a bare 404 (HTML, an empty body, JSON without the vendor's error shape) never reads as gone,
  on a read or on a delete, and is not the vendor's word about the job either: a transient
  ``BadResponse`` that names ``base_url`` (a gateway's or a wrong base URL's answer), so the
  job is read again on later sweeps and a fixed base URL heals it without a person retrying
  each job.

Faults come from ``SimServer.inject`` on the request a ``Call`` names, so no case depends on
a simulator's own knobs. Backoff between retries is cut to 10 ms (the ``fresh`` fixture),
except a wait the provider asked for, which is the real one: these cases are about what is
retried and how often, not how long the jitter is.

``Description.gaps`` lists the cases a provider does not pass yet, each with its reason: the
case runs as a strict xfail, so fixing the adapter turns it into a failure that asks for the
entry to be removed.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

import pytest
import tenacity
from pydantic import TypeAdapter

from worker.domain import JobSnapshot, LinkOrigin, Phase
from worker.errors import (
    BadResponse,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
)
from worker.fetch import Fetcher, make_download_client
from worker.providers import base, build_provider
from worker.providers.base import (
    MAX_BODY_BYTES,
    MAX_INLINE_WAIT,
    BaseProvider,
    HttpApi,
    Provider,
)
from worker.providers.parsing import MAX_JSON_DEPTH
from worker.settings import DownloadSettings, ProviderSettings
from worker.simulators.http import Seen, SimServer

SimT = TypeVar("SimT", bound=SimServer)


class Adapter(Provider, Protocol):
    """An adapter as the cases drive it: the Provider protocol, and the HTTP client whose
    attempts and timeout some cases tune (every adapter is a ``BaseProvider``)."""

    api: HttpApi


Connect = Callable[..., Adapter]

PROVIDER_SETTINGS: TypeAdapter[ProviderSettings] = TypeAdapter(ProviderSettings)
# A code or text the vendor's error body carries, to find again in our message.
VENDOR_WORDS = "SIM-FAULT-7"
# A wait a 429 asks for that is far past MAX_INLINE_WAIT: an hour.
LONG_WAIT = 3600


@dataclass(frozen=True)
class Call:
    """One request the adapter sends, as ``SimServer.inject`` and ``SimServer.seen`` match it."""

    method: str
    path: str  # a regex searched in the request's path


@dataclass(frozen=True)
class WrongKey:
    """Credentials the provider refuses, and what the refusal must say."""

    label: str
    # Replace the right credentials' entries in the settings (None removes one).
    settings: Mapping[str, str | None]
    # Regexes the message matches: the vendor's words and our advice.
    says: tuple[str, ...]
    # What the message must not contain, besides every credential.
    never_says: tuple[str, ...] = ()


@dataclass(frozen=True)
class Description(Generic[SimT]):
    """What the contract needs to know about one provider."""

    # The account name the adapter is built under; its messages say "<name> job <id>: ...".
    name: str
    # A new, unstarted simulator.
    simulator: Callable[[], SimT]
    # The account's settings with the right credentials, as a config file would give them.
    settings: Callable[[SimT], dict[str, Any]]
    # The credentials in those settings: no message may show one.
    secrets: tuple[str, ...]
    wrong_keys: tuple[WrongKey, ...]
    # Add a finished job with files to archive; return its id.
    add_finished_job: Callable[[SimT], str]
    # Add a job whose status word is the given one, outputs and all; return its id.
    add_job_saying: Callable[[SimT, str], str]
    # The request get_job sends, and the one delete sends.
    read: Call
    delete: Call
    # An error body in the vendor's shape carrying the given code or text.
    error_body: Callable[[str], object]
    # What a 404 without the vendor's error shape says (a transient BadResponse, never
    # "gone"); the regex may hold "{job}" for the job's id, and must name base_url.
    bare_404_says: str
    # Bare 404 bodies worth trying besides the usual HTML, empty and shapeless JSON ones.
    bare_404_bodies: tuple[object, ...] = ()
    # The path regex of the simulator's download host, or None for an adapter that hands
    # out no download links (its archive is the job record).
    downloads: str | None = None
    # Case name -> why this provider does not pass it yet (the case runs as a strict xfail).
    gaps: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Malformed:
    label: str
    body: Callable[[], str | bytes]  # built when the case runs: one of them is 16 MiB
    says: str  # a regex the message matches


MALFORMED = [
    Malformed("not-json", lambda: "{not json", "not valid JSON"),
    Malformed("array", lambda: "[]", "not a JSON object"),
    Malformed("string", lambda: '"finished"', "not a JSON object"),
    Malformed("null", lambda: "null", "not a JSON object"),
    Malformed("another-object", lambda: '{"unexpected": true}', r"has no \w+ field '\w+'"),
    Malformed(
        "too-deep",
        lambda: "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
        f"nested deeper than {MAX_JSON_DEPTH} levels",
    ),
    Malformed(
        "too-large",
        lambda: b'{"pad": "' + b"x" * MAX_BODY_BYTES + b'"}',
        f"larger than {MAX_BODY_BYTES} bytes",
    ),
]
# Words no provider documents, one shaped like a terminal word, one empty.
UNKNOWN_WORDS = ["paused", "ARCHIVED", "completed_partially", ""]
BARE_404_BODIES: list[object] = [
    "<html><body>404 Not Found</body></html>",
    b"",
    {"status": 404},
    [],
]

Fault = Literal["status", "reset"]


def _quick(wait: Callable[[tenacity.RetryCallState], float]) -> Callable[..., float]:
    """Backoff cut to 10 ms; a wait the provider asked for (a 429's header) stays real."""

    def quick(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return wait(state)
        return 0.01

    return quick


class Contract:
    """The cases; a provider's test file subclasses this with its ``description``."""

    description: ClassVar[Description[Any]]

    # -- fixtures ------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def simulator(cls) -> Iterator[SimServer]:
        """One simulator per provider class, each case adding jobs of its own: a simulator per
        case cost some ten seconds over the five (stopping a server waits out a poll
        interval). No case changes the simulator's own settings, only its faults."""
        sim = cls.description.simulator()
        sim.start()
        yield sim
        sim.stop()

    @pytest.fixture(autouse=True)
    def fresh(
        self, simulator: SimServer, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
    ) -> None:
        """No fault or request left from the case before; quick backoff; and the provider's
        known gaps marked."""
        simulator.clear_faults()
        simulator.requests.clear()
        monkeypatch.setattr(base, "_wait", _quick(base._wait))
        gap = self.description.gaps.get(request.function.__name__)
        if gap is not None:
            request.applymarker(pytest.mark.xfail(raises=AssertionError, reason=gap, strict=True))

    @pytest.fixture
    def connect(self, simulator: SimServer) -> Iterator[Connect]:
        """Builds adapters through the registry, settings overridable; closes them after."""
        built: list[Adapter] = []

        def connect(**settings: Any) -> Adapter:
            data = {**self.description.settings(simulator), **settings}
            adapter = build_provider(self.description.name, PROVIDER_SETTINGS.validate_python(data))
            assert isinstance(adapter, BaseProvider)
            built.append(adapter)
            return adapter

        yield connect
        for adapter in built:
            adapter.close()

    # -- helpers -------------------------------------------------------------------------

    def finished_job(self, simulator: SimServer) -> str:
        return self.description.add_finished_job(simulator)

    def break_call(
        self, simulator: SimServer, call: Call, kind: Fault = "status", **fault: Any
    ) -> None:
        simulator.inject(kind, method=call.method, path=call.path, **fault)

    def seen(self, simulator: SimServer, call: Call) -> list[Seen]:
        return simulator.seen(call.method, call.path)

    def send(self, adapter: Adapter, which: str, job_id: str) -> object:
        return adapter.get_job(job_id) if which == "read" else adapter.delete(job_id)

    def call_of(self, which: str) -> Call:
        return self.description.read if which == "read" else self.description.delete

    def assert_job_still_readable(
        self, adapter: Adapter, simulator: SimServer, job_id: str
    ) -> None:
        simulator.clear_faults()
        assert isinstance(adapter.get_job(job_id), JobSnapshot)

    # -- credentials ---------------------------------------------------------------------

    def test_a_wrong_key_is_a_permanent_refusal_on_every_call_without_the_key(
        self, simulator: SimServer, connect: Connect
    ) -> None:
        # given a finished job, and each set of credentials the provider refuses
        job_id = self.finished_job(simulator)
        for wrong in self.description.wrong_keys:
            adapter = connect(**wrong.settings)
            shown = [v for v in wrong.settings.values() if v]
            # when the key is checked and the job read
            calls: list[Callable[[], object]] = [
                adapter.check_credentials,
                functools.partial(adapter.get_job, job_id),
            ]
            for call in calls:
                with pytest.raises(ProviderRejected) as caught:
                    call()

                # then each is refused for good, saying why, showing no credential
                message = str(caught.value)
                assert caught.value.permanent, wrong.label
                for pattern in wrong.says:
                    assert re.search(pattern, message), (wrong.label, pattern, message)
                for secret in (*self.description.secrets, *shown, *wrong.never_says):
                    assert secret not in message, (wrong.label, secret)
        assert all(s.authorization for s in simulator.requests)

    def test_a_wrong_key_is_refused_in_a_message_that_names_the_provider(
        self, connect: Connect
    ) -> None:
        adapter = connect(**self.description.wrong_keys[0].settings)
        with pytest.raises(ProviderRejected) as caught:
            adapter.check_credentials()
        assert caught.value.provider == self.description.name
        assert str(caught.value).startswith(f"{self.description.name}: ")

    def test_a_refusal_that_echoes_the_key_back_never_shows_it(
        self, simulator: SimServer, connect: Connect
    ) -> None:
        # given a provider that repeats the credentials it refused in its error
        echo = " and ".join(self.description.secrets)
        simulator.inject(status=401, body=self.description.error_body(f"bad key {echo}"))

        # when the key is checked
        with pytest.raises(ProviderRejected) as caught:
            connect().check_credentials()

        # then the refusal is ours to show: without any of them
        for secret in self.description.secrets:
            assert secret not in str(caught.value)

    def test_the_right_key_passes_the_check_in_one_request_that_touches_no_job(
        self, simulator: SimServer, connect: Connect
    ) -> None:
        job_id = self.finished_job(simulator)
        connect().check_credentials()
        (seen,) = simulator.requests
        assert seen.authorization
        assert seen.status < 500
        assert not any(part in seen.path for part in job_id.split("/"))
        delete = self.description.delete
        assert not (seen.method == delete.method and re.search(delete.path, seen.path))

    # -- 429 -----------------------------------------------------------------------------

    def test_a_429_is_retried_after_the_wait_it_asks_for(
        self, simulator: SimServer, connect: Connect
    ) -> None:
        job_id = self.finished_job(simulator)
        read = self.description.read
        body = self.description.error_body(VENDOR_WORDS)
        self.break_call(simulator, read, status=429, headers={"Retry-After": "1"}, body=body)
        started = time.monotonic()
        assert isinstance(connect().get_job(job_id), JobSnapshot)
        assert time.monotonic() - started >= 0.9
        assert [s.status for s in self.seen(simulator, read)] == [429, 200]

    def test_a_429_without_a_wait_is_retried(self, simulator: SimServer, connect: Connect) -> None:
        job_id = self.finished_job(simulator)
        read = self.description.read
        self.break_call(simulator, read, status=429, body=self.description.error_body("slow"))
        assert isinstance(connect().get_job(job_id), JobSnapshot)
        assert [s.status for s in self.seen(simulator, read)] == [429, 200]

    def test_a_429_that_outlasts_the_inline_retries_is_rate_limited_not_fatal(
        self, simulator: SimServer, connect: Connect
    ) -> None:
        # given a provider that answers every read with its 429, without a wait
        job_id = self.finished_job(simulator)
        read = self.description.read
        body = self.description.error_body(VENDOR_WORDS)
        self.break_call(simulator, read, status=429, body=body, times=100)
        adapter = connect()

        # when the job is read
        with pytest.raises(RateLimited) as caught:
            adapter.get_job(job_id)

        # then every inline attempt was spent, and the job is deferred in the vendor's words
        assert len(self.seen(simulator, read)) == adapter.api.attempts
        assert not caught.value.permanent
        assert caught.value.retry_after is None
        assert re.search(f"429.*{VENDOR_WORDS}", str(caught.value))

    @pytest.mark.parametrize("header", ["Retry-After", "X-RateLimit-Reset"])
    def test_a_429_asking_for_a_long_wait_defers_instead_of_holding_a_worker(
        self, simulator: SimServer, connect: Connect, header: str
    ) -> None:
        job_id = self.finished_job(simulator)
        read = self.description.read
        body = self.description.error_body(VENDOR_WORDS)
        self.break_call(simulator, read, status=429, headers={header: str(LONG_WAIT)}, body=body)
        with pytest.raises(RateLimited) as caught:
            connect().get_job(job_id)
        assert LONG_WAIT > MAX_INLINE_WAIT
        assert caught.value.retry_after == LONG_WAIT
        assert not caught.value.permanent
        assert VENDOR_WORDS in str(caught.value)
        assert len(self.seen(simulator, read)) == 1

    # -- 5xx, resets, timeouts -----------------------------------------------------------

    @pytest.mark.parametrize("kind", ["status", "reset"])
    def test_a_5xx_or_a_reset_connection_is_retried(
        self, simulator: SimServer, connect: Connect, kind: Fault
    ) -> None:
        job_id = self.finished_job(simulator)
        read = self.description.read
        body = self.description.error_body("unavailable")
        self.break_call(simulator, read, kind, status=503, body=body, times=2)
        assert isinstance(connect().get_job(job_id), JobSnapshot)
        assert [s.fault for s in self.seen(simulator, read)] == [kind, kind, None]

    @pytest.mark.parametrize("which", ["read", "delete"])
    @pytest.mark.parametrize("kind", ["status", "reset"])
    def test_a_provider_that_keeps_failing_is_unavailable_not_fatal(
        self, simulator: SimServer, connect: Connect, kind: Fault, which: str
    ) -> None:
        # given a provider that answers every read (or delete) with a 500, or not at all
        job_id = self.finished_job(simulator)
        call = self.call_of(which)
        body = self.description.error_body(VENDOR_WORDS)
        self.break_call(simulator, call, kind, status=500, body=body, times=100)
        adapter = connect()

        # when the job is read (or deleted)
        with pytest.raises(ProviderUnavailable) as caught:
            self.send(adapter, which, job_id)

        # then every inline attempt was spent, and the job is deferred, still there
        assert not caught.value.permanent
        assert len(self.seen(simulator, call)) == adapter.api.attempts
        if kind == "status":
            assert re.search(f"answered 500.*{VENDOR_WORDS}", str(caught.value))
        self.assert_job_still_readable(adapter, simulator, job_id)

    def test_an_answer_slower_than_the_timeout_is_unavailable_not_fatal(
        self, simulator: SimServer, connect: Connect
    ) -> None:
        # given a read answered after 0.3 s, and an adapter that waits 0.1 s
        job_id = self.finished_job(simulator)
        read = self.description.read
        simulator.inject("delay", method=read.method, path=read.path, seconds=0.3)
        adapter = connect(timeout=0.1)
        adapter.api.attempts = 1

        # when the job is read
        with pytest.raises(ProviderUnavailable, match="timed out") as caught:
            adapter.get_job(job_id)

        # then it is transient; the slow answer is let finish so no later case sees it
        assert not caught.value.permanent
        deadline = time.monotonic() + 5
        while not self.seen(simulator, read) and time.monotonic() < deadline:
            time.sleep(0.02)

    # -- malformed answers ---------------------------------------------------------------

    @pytest.mark.parametrize("malformed", MALFORMED, ids=[m.label for m in MALFORMED])
    def test_a_malformed_answer_is_a_bad_response_never_gone(
        self, simulator: SimServer, connect: Connect, malformed: Malformed
    ) -> None:
        job_id = self.finished_job(simulator)
        read = self.description.read
        self.break_call(simulator, read, status=200, body=malformed.body())
        adapter = connect()
        with pytest.raises(BadResponse) as caught:
            adapter.get_job(job_id)
        assert not caught.value.permanent
        assert re.search(malformed.says, str(caught.value)), str(caught.value)
        self.assert_job_still_readable(adapter, simulator, job_id)

    # -- status --------------------------------------------------------------------------

    @pytest.mark.parametrize("word", UNKNOWN_WORDS, ids=[w or "empty" for w in UNKNOWN_WORDS])
    def test_a_status_word_the_adapter_does_not_know_is_never_terminal(
        self, simulator: SimServer, connect: Connect, word: str
    ) -> None:
        job_id = self.description.add_job_saying(simulator, word)
        snap = connect().get_job(job_id)
        assert isinstance(snap, JobSnapshot)
        assert snap.phase == Phase.UNKNOWN
        assert not snap.terminal

    # -- downloads -----------------------------------------------------------------------

    def test_downloads_carry_no_credentials(self, simulator: SimServer, connect: Connect) -> None:
        # given a finished job's artifacts, each behind a download link
        if self.description.downloads is None:
            pytest.skip(f"{self.description.name} hands out no download links")
        job_id = self.finished_job(simulator)
        adapter = connect()
        snap = adapter.get_job(job_id)
        assert isinstance(snap, JobSnapshot)
        links = [a.origin for a in adapter.artifacts(snap) if isinstance(a.origin, LinkOrigin)]
        assert links

        # when the pipeline's download client fetches each
        settings = DownloadSettings(allow_private_networks=True)
        with make_download_client(settings) as client:
            fetcher = Fetcher(client, settings)
            for link in links:
                with fetcher.open(link.url) as download:
                    assert b"".join(download.chunks())

        # then the download host saw each once, and never a credential
        downloads = simulator.seen("GET", self.description.downloads)
        assert len(downloads) == len(links)
        assert not any(s.authorization for s in downloads)

    # -- gone ----------------------------------------------------------------------------

    @pytest.mark.parametrize("which", ["read", "delete"])
    def test_a_bare_404_never_reads_as_gone(
        self, simulator: SimServer, connect: Connect, which: str
    ) -> None:
        # given a 404 without the vendor's error shape, as a gateway or a wrong base_url gives
        job_id = self.finished_job(simulator)
        call = self.call_of(which)
        says = self.description.bare_404_says.format(job=re.escape(job_id))
        assert "base_url" in says
        adapter = connect()
        bodies = (*BARE_404_BODIES, *self.description.bare_404_bodies)
        for body in bodies:
            self.break_call(simulator, call, status=404, body=body)

            # when the job is read (or deleted)
            with pytest.raises(ProviderError) as caught:
                self.send(adapter, which, job_id)

            # then it is not gone, and not for a person to retry: a bad response, saying so
            assert type(caught.value) is BadResponse, body
            assert not caught.value.permanent
            assert re.search(says, str(caught.value)), (body, str(caught.value))
        # and each 404 was taken as it came, once, without a retry
        assert [s.status for s in self.seen(simulator, call)] == [404] * len(bodies)
        self.assert_job_still_readable(adapter, simulator, job_id)
