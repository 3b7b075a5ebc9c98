"""What a request to track jobs must be (worker.tracking), each id held to its adapter's rules,
and what recording one changes in the ledger (OperatorCommands.track)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from worker.errors import TrackRefused
from worker.ledger import Ledger
from worker.ledger.schema import audit_events, jobs
from worker.settings import Settings
from worker.tracking import CLOCK_SKEW, MAX_IDS, TrackRequest, check_request, parse_request

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

ACCOUNTS: dict[str, dict[str, Any]] = {
    "daily": {"type": "daily", "api_key": "k"},
    "loom": {"type": "loom", "base_url": "https://loom.example/api", "key": "k", "secret": "s"},
    "mpc": {
        "type": "huawei_mpc",
        "base_url": "https://mpc.example.com",
        "project_id": "p1",
        "token": "t",
    },
    "unsiloed": {"type": "unsiloed", "api_key": "k"},
    "dato": {"type": "datocms", "api_token": "t"},
}
SETTINGS = Settings.model_validate({"archive": {"bucket": "acme-archive"}, "providers": ACCOUNTS})


def problems_of(provider: str, *job_ids: str) -> str | None:
    try:
        check_request(SETTINGS, TrackRequest(provider, job_ids), now=NOW)
    except TrackRefused as exc:
        return str(exc)
    return None


@pytest.mark.parametrize(
    ("provider", "job_id"),
    [
        ("daily", "3ab8faa2-8ba2-4ee6-bd15-003a92c18245"),
        ("loom", "R123"),
        ("unsiloed", "b2094a1c"),
        ("mpc", "3273178"),
        ("mpc", "0"),
        ("dato", "UPLOAD1/TRACK1"),
    ],
)
def test_an_id_of_its_providers_form_is_accepted(provider: str, job_id: str) -> None:
    assert problems_of(provider, job_id) is None


@pytest.mark.parametrize(
    ("provider", "job_id", "problem"),
    [
        ("loom", "R1/x", "contains a '/'"),
        ("loom", "../R1", "contains a '..' segment"),
        ("loom", "R1\n", "has spaces at its start or end"),
        ("loom", "", "is empty"),
        ("loom", "R\x001", "control character"),
        ("loom", "e\u0301", "composed form"),
        ("loom", "x" * 513, "longer than 512 characters"),
        ("daily", "/R1", "at its start or end"),
        ("mpc", "R1", "MPC task ids are whole numbers"),
        ("mpc", "-1", "MPC task ids are whole numbers"),
        ("mpc", "01", "MPC task ids are whole numbers"),
        ("dato", "UPLOAD1", "not 2 parts joined by '/'"),
        ("dato", "U/T/X", "not 2 parts joined by '/'"),
        ("dato", "U//T", "two together"),
    ],
)
def test_an_id_its_adapter_cannot_have_is_refused_naming_why(
    provider: str, job_id: str, problem: str
) -> None:
    message = problems_of(provider, job_id)
    assert message is not None
    assert f"job id {job_id!r} " in message
    assert problem in message


def test_every_bad_id_is_named_and_the_good_ones_are_not() -> None:
    message = problems_of("mpc", "1", "a", "2", "b")
    assert message is not None
    assert message.startswith("mpc: nothing was tracked:")
    assert "'a'" in message
    assert "'b'" in message
    assert "'1'" not in message
    assert "'2'" not in message


def test_a_provider_the_configuration_does_not_name_is_refused_with_those_it_does() -> None:
    message = problems_of("daily_eu", "x")
    assert message is not None
    assert "no provider named 'daily_eu'" in message
    assert "configured: daily, dato, loom, mpc, unsiloed" in message


def test_a_refusal_names_the_first_twenty_problems_and_counts_the_rest() -> None:
    message = problems_of("mpc", *(f"x{n}" for n in range(25)))
    assert message is not None
    assert "'x19'" in message
    assert "'x20'" not in message
    assert "... and 5 more" in message


def test_a_finish_time_up_to_the_allowed_skew_ahead_is_taken_and_past_it_refused() -> None:
    just_in = TrackRequest("loom", ("R1",), finished_at=NOW + CLOCK_SKEW)
    check_request(SETTINGS, just_in, now=NOW)
    past = TrackRequest("loom", ("R1",), finished_at=NOW + CLOCK_SKEW + timedelta(seconds=1))
    with pytest.raises(TrackRefused, match="is in the future"):
        check_request(SETTINGS, past, now=NOW)


def test_json_arguments_are_parsed_and_numbers_taken_as_ids() -> None:
    request = parse_request(
        "mpc",
        [3273178, "3273179"],
        options={"hold": True, "reason": "case 42", "finished_at": "2026-11-01T10:00:00+02:00"},
    )
    assert request == TrackRequest(
        "mpc",
        ("3273178", "3273179"),
        hold=True,
        reason="case 42",
        finished_at=datetime(2026, 11, 1, 8, 0, tzinfo=UTC),
    )
    (provider, job_ids), kwargs = request.arguments()
    assert parse_request(provider, job_ids, options=kwargs) == request


@pytest.mark.parametrize(
    ("args", "options", "problem"),
    [
        (("loom", "R1"), {}, "must be a list of job ids"),
        (("loom", []), {}, "the list of job ids is empty"),
        (("loom", [True]), {}, "id 1 is a bool"),
        (("loom", [None]), {}, "id 1 is a NoneType"),
        (("Loom!", ["R1"]), {}, "the first argument must be the name"),
        ((None, ["R1"]), {}, "the first argument must be the name"),
        (("loom", ["R1"]), {"hold": "yes"}, "hold must be true or false"),
        (("loom", ["R1"]), {"reason": "x" * 301}, "at most 300 characters"),
        (("loom", ["R1"]), {"finished_at": "2026-11-01 10:00"}, "must carry its UTC offset"),
        (("loom", ["R1"]), {"finished_at": "yesterday"}, "is not an ISO 8601 time"),
        (("loom", ["R1"]), {"finished_at": 1700000000}, "must be an ISO 8601 time"),
        (("loom", ["R1"]), {"held": True}, "unknown option(s) held"),
    ],
)
def test_arguments_that_are_not_a_request_are_refused_in_words(
    args: tuple[object, object], options: dict[str, object], problem: str
) -> None:
    with pytest.raises(TrackRefused) as refused:
        parse_request(*args, options=options)
    assert problem in str(refused.value)
    assert "nothing was tracked" in str(refused.value)


def test_too_many_ids_or_arguments_for_one_message_are_refused() -> None:
    with pytest.raises(TrackRefused, match=f"{MAX_IDS + 1} ids in one request"):
        parse_request("loom", [f"R{n}" for n in range(MAX_IDS + 1)])
    with pytest.raises(TrackRefused, match="1 argument\\(s\\) too many"):
        parse_request("loom", ["R1"], ["R2"])


def test_a_long_request_is_split_into_messages_of_at_most_the_limit() -> None:
    request = TrackRequest("loom", tuple(f"R{n}" for n in range(2500)), hold=True)
    batches = request.batches()
    assert [len(b.job_ids) for b in batches] == [1000, 1000, 500]
    assert all(b.hold for b in batches)
    assert sum((b.job_ids for b in batches), ()) == request.job_ids


# -- recording -----------------------------------------------------------------------------


def audit(ledger: Ledger) -> list[Any]:
    with ledger.engine.connect() as conn:
        return list(conn.execute(sa.select(audit_events).order_by(audit_events.c.id)).all())


def test_tracking_again_changes_nothing_and_records_nothing(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    first = ledger.operator.track("loom", ["R1", "R2", "R1"], now=NOW, detail={"via": "test"})
    events = audit(ledger)

    again = ledger.operator.track("loom", ["R2", "R1"], now=NOW + timedelta(minutes=1))

    assert (first.added, first.changed) == (["R1", "R2"], ["R1", "R2"])
    assert (again.added, again.changed, again.held) == ([], [], [])
    assert audit(ledger) == events
    assert [(e.event, e.job_id, e.detail) for e in events] == [
        ("tracked", "R1", {"new": True, "via": "test"}),
        ("tracked", "R2", {"new": True, "via": "test"}),
    ]


def test_tracking_a_listed_job_marks_it_tracked_once(ledger_url: str) -> None:
    # given a job the ledger knows from a hold, untracked
    ledger = Ledger.open(ledger_url)
    ledger.operator.set_hold("loom", "R1", held=True, now=NOW)

    first = ledger.operator.track("loom", ["R1"], now=NOW)
    again = ledger.operator.track("loom", ["R1"], now=NOW)

    assert (first.added, first.changed) == ([], ["R1"])
    assert again.changed == []
    row = ledger.query.get("loom", "R1")
    assert row is not None
    assert row.tracked
    assert [e.event for e in audit(ledger)] == ["hold", "tracked"]


def test_tracking_with_hold_holds_and_without_it_never_releases(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    held = ledger.operator.track("loom", ["R1"], now=NOW, hold=True, reason="case 42")
    ledger.operator.track("loom", ["R1"], now=NOW)

    row = ledger.query.get("loom", "R1")
    assert row is not None
    assert row.held
    assert held.held == ["R1"]
    assert [(e.event, e.detail.get("reason")) for e in audit(ledger)] == [
        ("tracked", "case 42"),
        ("hold", "case 42"),
    ]


def test_a_known_finish_time_starts_the_clock_of_a_waiting_job_only_ever_earlier(
    ledger_url: str,
) -> None:
    # given a job tracked with a finish time
    ledger = Ledger.open(ledger_url)
    earlier, later = NOW - timedelta(days=3), NOW - timedelta(days=1)
    ledger.operator.track("loom", ["R1"], now=NOW, finished_at=later)

    # when it is tracked again with a later, then an earlier one
    ledger.operator.track("loom", ["R1"], now=NOW, finished_at=NOW - timedelta(hours=1))
    after_later = ledger.query.get("loom", "R1")
    changed = ledger.operator.track("loom", ["R1"], now=NOW, finished_at=earlier)

    # then the clock only ever moved to the earlier one, and each move is audited
    assert after_later is not None
    assert after_later.terminal_at == later
    assert changed.changed == ["R1"]
    row = ledger.query.get("loom", "R1")
    assert row is not None
    assert row.terminal_at == earlier
    assert [e.detail.get("finished_at") for e in audit(ledger)] == [
        later.isoformat(),
        earlier.isoformat(),
    ]


def test_a_finish_time_leaves_a_job_past_waiting_alone(ledger_url: str) -> None:
    # given a job already archived
    ledger = Ledger.open(ledger_url)
    ledger.operator.track("loom", ["R1"], now=NOW)
    with ledger.engine.begin() as conn:
        conn.execute(jobs.update().values(state="archived"))

    changed = ledger.operator.track("loom", ["R1"], now=NOW, finished_at=NOW - timedelta(days=9))

    assert changed.changed == []
    row = ledger.query.get("loom", "R1")
    assert row is not None
    assert row.terminal_at is None
