"""`retention track` by hand: ids as arguments or one a line from a file or stdin, each held to
its provider's rules before anything is recorded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, config_data, run_cli, write_config
from worker.ledger import Ledger


def a_config(tmp_path: Path) -> tuple[Path, str]:
    ledger_url = f"sqlite:///{tmp_path}/ledger.db"
    loom = {"type": "loom", "base_url": "http://127.0.0.1:9/api", "key": "k", "secret": "s"}
    mpc = {
        "type": "huawei_mpc",
        "base_url": "http://127.0.0.1:9",
        "project_id": "p1",
        "token": "t",
    }
    data = config_data(
        bucket="acme-archive",
        endpoint_url="http://127.0.0.1:9",
        ledger_url=ledger_url,
        providers={"loom": loom, "mpc": mpc},
    )
    return write_config(tmp_path / "retention.toml", data), ledger_url


def test_ids_come_from_a_file_one_a_line_past_blank_lines_and_comments(tmp_path: Path) -> None:
    # given
    config, ledger_url = a_config(tmp_path)
    ids = tmp_path / "ids.txt"
    ids.write_text("# submitted today\nR1\n\n  R2  \r\nR3\n")

    # when
    run = run_cli("track", "loom", "R0", "--from-file", str(ids), "--json", config=config)

    # then
    assert run.code == 0, run.stderr
    document = run.only_json()
    assert document["tracking"] == ["R0", "R1", "R2", "R3"]
    assert document["new"] == ["R0", "R1", "R2", "R3"]
    query = Ledger.open(ledger_url).query
    assert all(query.get("loom", ref) is not None for ref in ("R0", "R1", "R2", "R3"))


def test_ids_come_from_stdin_with_a_dash(tmp_path: Path) -> None:
    config, _ = a_config(tmp_path)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker",
            "--config",
            str(config),
            "track",
            "mpc",
            "--from-file",
            "-",
        ],
        input="3273178\n3273179\n",
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "tracking 2 job(s) of mpc; 2 new" in run.stdout


def test_one_bad_line_refuses_the_file_naming_the_line_and_records_nothing(
    tmp_path: Path,
) -> None:
    config, ledger_url = a_config(tmp_path)
    ids = tmp_path / "ids.txt"
    ids.write_text("3273178\n# a comment\nR2\n3273180\n")

    run = run_cli("track", "mpc", "--from-file", str(ids), "--json", config=config)

    assert run.code == 1
    error = json.loads(run.stderr.strip().splitlines()[-1])
    assert "line 3: job id 'R2' is not an MPC task id" in error["message"]
    assert "Traceback" not in run.stderr
    assert Ledger.open(ledger_url).query.get("mpc", "3273178") is None


def test_no_ids_at_all_is_a_usage_error(tmp_path: Path) -> None:
    config, _ = a_config(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n")
    run = run_cli("track", "loom", "--from-file", str(empty), config=config)
    assert run.code == 2
    assert "give job ids, or --from-file PATH" in run.stderr


def test_hold_reason_and_finish_time_are_recorded_as_given(tmp_path: Path) -> None:
    config, ledger_url = a_config(tmp_path)
    run = run_cli(
        "track",
        "loom",
        "R1",
        "--hold",
        "--reason",
        "case 42",
        "--finished-at",
        "2026-01-02T03:04:05+01:00",
        config=config,
    )
    assert run.code == 0, run.stderr
    assert "1 newly held" in run.stdout
    row = Ledger.open(ledger_url).query.get("loom", "R1")
    assert row is not None
    assert row.held
    assert row.terminal_at is not None
    assert row.terminal_at.isoformat() == "2026-01-02T02:04:05+00:00"
