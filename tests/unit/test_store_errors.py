"""The ledger out of reach, at each edge where the worker uses it: one error of ours
(transient, exit code 3) that names the store and where it is, never its password."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from worker import exits
from worker.domain import utcnow
from worker.errors import LedgerUnavailable, StoreUnavailable
from worker.ledger import Ledger


@pytest.fixture
def port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        found: int = probe.getsockname()[1]
    return found


@pytest.mark.parametrize("kind", ["postgresql", "sqlite-folder", "sqlite-under-a-file"])
def test_a_ledger_that_cannot_be_opened_is_unavailable_and_named(
    kind: str, port: int, tmp_path: Path
) -> None:
    if kind == "postgresql":
        url = f"postgresql+psycopg://retention:ledger-pass-81c2@127.0.0.1:{port}/retention"
        shown = f"127.0.0.1:{port}/retention"
    elif kind == "sqlite-folder":
        (tmp_path / "ledger.db").mkdir()
        url = shown = f"sqlite:///{tmp_path}/ledger.db"
    else:
        (tmp_path / "file").write_text("not a folder")
        url = shown = f"sqlite:///{tmp_path}/file/ledger.db"
    with pytest.raises(LedgerUnavailable) as caught:
        Ledger.open(url)
    message = str(caught.value)
    assert message.startswith("the ledger at ")
    assert shown in message
    assert "ledger-pass-81c2" not in message
    assert isinstance(caught.value, StoreUnavailable)
    assert exits.is_unreachable(caught.value)


def test_a_ledger_that_goes_away_after_it_was_opened_is_unavailable(tmp_path: Path) -> None:
    # given: a ledger opened and used, whose file then becomes a folder (a lost volume)
    database = tmp_path / "ledger.db"
    ledger = Ledger.open(f"sqlite:///{database}")
    ledger.close()
    for path in tmp_path.glob("ledger.db*"):
        path.unlink()
    database.mkdir()

    # when / then: reads and writes alike raise the ledger's own error
    with pytest.raises(LedgerUnavailable):
        ledger.query.get("daily", "j1")
    with pytest.raises(LedgerUnavailable):
        ledger.operator.set_hold("daily", "j1", held=True, now=utcnow())
