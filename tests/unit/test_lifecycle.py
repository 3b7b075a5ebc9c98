"""The job lifecycle, declared once: every event, the sets derived from it, and the rule that
only the ledger's `transition` writes a job's state."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.helpers import ROOT
from worker.domain import (
    FINAL_STATES,
    INITIAL_STATE,
    LIFECYCLE,
    OPEN_STATES,
    OPERATOR_EVENTS,
    PAST_GATE_STATES,
    RESUMABLE_STATES,
    Event,
    JobSnapshot,
    JobState,
    Phase,
)
from worker.errors import LedgerError
from worker.ledger import Ledger

S = JobState
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TTL = timedelta(minutes=1)

# The table as a person reads it: (event, from-states, to-state or None for "unchanged").
EXPECTED = {
    Event.READ: ({S.PENDING, S.KEPT}, S.PENDING),
    Event.REREAD: ({S.ARCHIVED, S.DELETING}, None),
    Event.FILE_STORED: ({S.PENDING, S.DELETING}, None),
    Event.GONE: ({S.PENDING}, S.GONE),
    Event.KEEP: ({S.PENDING}, S.KEPT),
    Event.ARCHIVE: ({S.PENDING}, S.ARCHIVED),
    Event.REOPEN: ({S.ARCHIVED}, S.PENDING),
    Event.OPEN_GATE: ({S.ARCHIVED, S.DELETING}, S.DELETING),
    Event.AMEND: ({S.DELETING}, None),
    Event.KEEP_PAST_GATE: ({S.DELETING}, None),
    Event.DELETE_PENDING: ({S.DELETING}, None),
    Event.DROP_HANDLE: ({S.DELETING}, None),
    Event.PROVIDER_DELETED: ({S.DELETING}, S.CLEANING),
    Event.FINISH: ({S.CLEANING}, S.DELETED),
    Event.DEFER: ({S.PENDING, S.KEPT, S.ARCHIVED, S.DELETING, S.CLEANING}, None),
    Event.FAIL: ({S.PENDING, S.KEPT, S.ARCHIVED}, S.FAILED),
    Event.RETRY: ({S.FAILED, S.KEPT}, S.PENDING),
}


@pytest.mark.parametrize("event", list(Event))
def test_every_event_is_declared_with_its_states(event: Event) -> None:
    sources, target = EXPECTED[event]
    assert LIFECYCLE[event].sources == sources
    assert LIFECYCLE[event].target == target


def test_the_sets_of_states_are_derived_from_the_table() -> None:
    assert {S.DELETED, S.GONE} == FINAL_STATES
    assert {S.PENDING, S.KEPT, S.ARCHIVED, S.DELETING, S.CLEANING} == OPEN_STATES
    assert {S.DELETING, S.CLEANING} == PAST_GATE_STATES
    assert {S.ARCHIVED, S.DELETING, S.CLEANING} == RESUMABLE_STATES
    assert INITIAL_STATE == S.PENDING
    assert {Event.RETRY} == OPERATOR_EVENTS


def test_past_the_gate_a_job_never_fails_and_never_goes_back() -> None:
    # A delete may have happened there: only its answer may move the job on.
    for event, move in LIFECYCLE.items():
        if move.sources & PAST_GATE_STATES and move.target is not None:
            assert move.target in PAST_GATE_STATES | FINAL_STATES, event


def test_the_only_way_to_deleted_runs_through_the_gate() -> None:
    into_deleted = [e for e, m in LIFECYCLE.items() if m.target == S.DELETED]
    assert into_deleted == [Event.FINISH]
    assert LIFECYCLE[Event.FINISH].sources == {S.CLEANING}
    assert [e for e, m in LIFECYCLE.items() if m.target == S.CLEANING] == [Event.PROVIDER_DELETED]
    assert LIFECYCLE[Event.PROVIDER_DELETED].sources == {S.DELETING}
    assert [e for e, m in LIFECYCLE.items() if m.target == S.DELETING] == [Event.OPEN_GATE]


def _names_a_state(value: ast.AST) -> bool:
    text = ast.unparse(value)
    return "JobState" in text or "INITIAL_STATE" in text or "target" in text


def _writes_state(node: ast.AST) -> bool:
    """A write of a job's state: ``.values(state=...)``, a row dict ``{"state": <a state>}``
    (an insert), or ``values["state"] = ...``."""
    if isinstance(node, ast.Call):
        func = node.func
        named = isinstance(func, ast.Attribute) and func.attr == "values"
        return named and any(k.arg == "state" for k in node.keywords)
    if isinstance(node, ast.Dict):
        return any(
            isinstance(k, ast.Constant) and k.value == "state" and _names_a_state(v)
            for k, v in zip(node.keys, node.values, strict=True)
        )
    if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "state"
    return False


def test_no_code_but_the_ledgers_transition_writes_a_jobs_state() -> None:
    # The two places allowed: `transition` (every event) and `new_job` (the initial state).
    allowed = {("worker/ledger/writes.py", "transition"), ("worker/ledger/database.py", "new_job")}
    found = set()
    for path in sorted((ROOT / "worker").rglob("*.py")):
        relative = str(path.relative_to(ROOT))
        if "simulators" in relative or "migrations" in relative:
            continue
        tree = ast.parse(Path(path).read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef):
                continue
            if any(_writes_state(node) for node in ast.walk(function)):
                found.add((relative, function.name))
    assert found == allowed


def test_a_transition_from_a_state_the_event_does_not_leave_changes_nothing(
    sqlite_url: str,
) -> None:
    ledger = Ledger.open(sqlite_url)
    row = ledger.jobs.claim("daily", "j", owner="w", ttl=TTL, now=NOW)
    assert row is not None
    snapshot = JobSnapshot("j", "finished", Phase.SUCCEEDED, None, {"id": "j"})
    row = ledger.jobs.record_status(row, snapshot, owner="w", now=NOW)
    # The gate's event does not leave PENDING: the UPDATE matches nothing.
    with pytest.raises(LedgerError, match="gate stayed shut"):
        ledger.jobs.open_delete_gate(row, owner="w", now=NOW)
    with pytest.raises(LedgerError):
        ledger.jobs.mark_deleted(row, receipt_key="r", owner="w", now=NOW)
    after = ledger.query.get("daily", "j")
    assert after is not None
    assert after.state == S.PENDING
    assert ledger.query.audit_trail("daily", "j") == []
