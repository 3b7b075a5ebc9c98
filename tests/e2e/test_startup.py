"""The commands a person or a health check runs most start quickly: `retention --help` and
`retention status` load none of the heavy libraries, whichever views and commands the CLI
has. Each runs in a fresh interpreter, since this one has them all loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, config_data, write_config
from worker.ledger import Ledger

HEAVY = {
    *("boto3", "botocore", "celery", "kombu", "structlog", "rich", "httpx", "alembic"),
    "opentelemetry",
}

# Runs ``python -m worker ARGS``, then names on stderr every top-level package left loaded.
LOADED = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: print('LOADED', *sorted({k.split('.')[0] for k, v in "
    "sys.modules.items() if v is not None}), file=sys.__stderr__))\n"
    "runpy.run_module('worker', run_name='__main__', alter_sys=True)\n"
)


def loaded_by(*args: str, env: dict[str, str] | None = None) -> set[str]:
    run = subprocess.run(
        [sys.executable, "-c", LOADED, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    (line,) = [line for line in run.stderr.splitlines() if line.startswith("LOADED ")]
    return set(line.split()[1:])


@pytest.mark.parametrize("command", [("--help",), ("sweep", "--help"), ("report", "--help")])
def test_help_loads_no_heavy_library(command: tuple[str, ...]) -> None:
    assert loaded_by(*command) & HEAVY == set()


def test_status_in_a_pipe_loads_no_heavy_library(tmp_path: Path) -> None:
    # given: a ledger already migrated, as a deployed one is (a migration needs alembic)
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    Ledger.open(ledger).close()
    config = write_config(
        tmp_path / "retention.toml",
        config_data(
            bucket="archive",
            endpoint_url="http://127.0.0.1:9",
            ledger_url=ledger,
            providers={"daily": {"type": "daily", "api_key": "not-a-secret"}},
        ),
    )

    assert loaded_by("--config", str(config), "status") & HEAVY == set()
    assert loaded_by("--config", str(config), "status", "--json") & HEAVY == set()
    # not even where the OTEL_* variables ask for traces: only the commands that do work
    # set tracing up
    traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    assert loaded_by("--config", str(config), "status", env=traced) & HEAVY == set()
