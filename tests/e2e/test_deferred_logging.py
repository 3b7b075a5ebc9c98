"""A command that logs nothing does not load structlog; one that logs gets its lines whole.

The command line asks for its logging (``worker.logsetup.configure_logging``) before structlog is
imported. Each test runs in a fresh interpreter, since this one has structlog loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, config_data, write_config
from worker.ledger import Ledger

# Runs ``python -m worker ARGS``, then names on stderr every module left loaded.
LOADED = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: print('LOADED', *sorted(k for k, v in sys.modules.items() "
    "if v is not None), file=sys.__stderr__))\n"
    "runpy.run_module('worker', run_name='__main__', alter_sys=True)\n"
)


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def loaded(stderr: str) -> set[str]:
    for line in stderr.splitlines():
        if line.startswith("LOADED "):
            return set(line.split()[1:])
    raise AssertionError(f"no module list in: {stderr[-2000:]}")


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_status_does_not_load_structlog(tmp_path: Path) -> None:
    # given: a ledger already migrated, as a deployed one is (a migration logs its steps)
    Ledger.open(f"sqlite:///{tmp_path}/ledger.db").close()
    config = write_config(
        tmp_path / "retention.toml",
        config_data(
            bucket="archive",
            endpoint_url="http://127.0.0.1:9",
            ledger_url=f"sqlite:///{tmp_path}/ledger.db",
            providers={},
        ),
    )

    run = python(LOADED, "--config", str(config), "status")

    assert run.returncode == 0, run.stderr[-3000:]
    modules = loaded(run.stderr)
    assert "structlog" not in modules
    assert "worker.logging" not in modules


def test_a_library_record_sets_structured_logging_up_and_is_written_whole() -> None:
    # given: the command's logging asked for, structlog not yet loaded
    code = (
        "import logging, sys\n"
        "from worker.cli import Context\n"
        "Context(None, log_format='json').start_logging()\n"
        "assert 'structlog' not in sys.modules\n"
        "logging.getLogger('botocore').info('below the libraries level')\n"
        "logging.getLogger('botocore').warning('retrying %s', 'PutObject')\n"
        "logging.getLogger('worker.x').info('an info line')\n"
        "print('structlog' in sys.modules)\n"
    )

    run = python(code)

    # then: the first record loaded structlog; each line is JSON on stderr, at its level
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout == "True\n"
    lines = json_lines(run.stderr)
    assert [(line["event"], line["level"]) for line in lines] == [
        ("retrying PutObject", "warning"),
        ("an info line", "info"),
    ]


def test_a_structlog_logger_imported_later_writes_in_the_format_asked_for() -> None:
    # given: the command's logging asked for, then a module that logs through structlog
    code = (
        "import sys\n"
        "from worker.cli import Context\n"
        "Context(None, log_format='json').start_logging()\n"
        "from worker.logging import get_logger\n"
        "get_logger('worker.job').info('job_finished', job_id='j-1', api_key='k-secret')\n"
    )

    run = python(code)

    # then: a JSON line on stderr, redacted; nothing on stdout (structlog's default)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout == ""
    (line,) = json_lines(run.stderr)
    assert line["event"] == "job_finished"
    assert line["job_id"] == "j-1"
    assert "k-secret" not in run.stderr
