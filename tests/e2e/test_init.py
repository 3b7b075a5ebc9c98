"""`retention init`: a first configuration for the providers named, every secret a ${NAME}
reference, that `retention config validate` passes once its variables are set."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import get_args

import pytest
from pydantic import SecretStr

from tests.helpers import run_cli
from worker.config_init import types

# A value each variable could hold, by the key that reads it.
VALUES = {"base_url": "https://api.example.com", "project_id": "0a1b2c3d"}


def values_for(variables: dict[str, str]) -> dict[str, str]:
    return {
        name: VALUES.get(key.rsplit(".", 1)[-1], f"value-of-{name}")
        for name, key in variables.items()
    }


@pytest.mark.parametrize("provider_type", sorted(types()))
def test_init_writes_a_config_that_validates_once_its_variables_are_set(
    provider_type: str, tmp_path: Path
) -> None:
    # given / when
    config = tmp_path / "retention.toml"
    run = run_cli("init", provider_type, "--bucket", "my-archive", "-o", str(config), "--json")

    # then: it is written and passes validation with its variables let unset
    assert run.code == 0, run.stderr
    document = run.only_json()
    assert document["ok"] is True
    assert document["providers"] == [provider_type]
    variables = document["variables"]
    assert set(document["unset"]) == set(variables)
    assert document["next"] == [
        f"retention --config {config} config validate",
        f"retention --config {config} check",
        f"retention --config {config} sweep --dry-run",
    ]
    # and every secret in it is a reference, never a value
    table = tomllib.loads(config.read_text())["providers"][provider_type]
    fields = types()[provider_type].settings.model_fields
    secrets = [
        key
        for key in table
        if SecretStr in (fields[key].annotation, *get_args(fields[key].annotation))
    ]
    assert secrets
    assert all(re.fullmatch(r"\$\{[A-Z0-9_]+\}", table[key]) for key in secrets)
    # and validation fails while they are unset, naming each
    unset = run_cli("config", "validate", str(config))
    assert unset.code == 2
    for name in variables:
        assert name in unset.stderr + unset.stdout

    # when the variables are set
    valid = run_cli("config", "validate", str(config), "--json", env=values_for(variables))

    # then
    assert valid.code == 0, valid.stdout + valid.stderr
    assert valid.only_json()["providers"] == [provider_type]


def test_several_providers_and_a_second_account_of_a_type(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "retention.toml"
    run = run_cli(
        "init", "daily", "daily_eu=daily", "unsiloed", "--bucket", "my-archive", "-o", str(config)
    )
    assert run.code == 0, run.stderr
    assert "DAILY_API_KEY" in run.stdout
    assert "DAILY_EU_API_KEY" in run.stdout
    assert "read_only = true" in run.stdout
    data = tomllib.loads(config.read_text())
    assert list(data["providers"]) == ["daily", "daily_eu", "unsiloed"]
    assert data["providers"]["daily_eu"] == {"type": "daily", "api_key": "${DAILY_EU_API_KEY}"}
    assert data["defaults"]["read_only"] is True
    # The ledger is SQLite beside the file unless LEDGER_URL says otherwise.
    assert (
        data["ledger"]["url"]
        == f"${{LEDGER_URL:-sqlite:///{config.parent.resolve()}/retention.db}}"
    )
    env = {"DAILY_API_KEY": "a", "DAILY_EU_API_KEY": "b", "UNSILOED_API_KEY": "c"}
    shown = run_cli("--config", str(config), "config", "show", "--json", env=env)
    assert shown.code == 0, shown.stderr
    assert shown.only_json()["providers"]["daily_eu"]["api_key"] == "********"


def test_huawei_gets_the_key_pair_with_the_token_offered_instead(tmp_path: Path) -> None:
    config = tmp_path / "retention.toml"
    assert run_cli("init", "huawei_mpc", "--bucket", "my-archive", "-o", str(config)).code == 0
    text = config.read_text()
    assert 'access_key = "${HUAWEI_MPC_ACCESS_KEY}"' in text
    assert 'secret_key = "${HUAWEI_MPC_SECRET_KEY}"' in text
    assert '# token = "${HUAWEI_MPC_TOKEN}"' in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("dailyy",), "'dailyy' is not a provider type (known: daily, loom"),
        (("x=daily", "x=loom"), "'x' is named twice"),
        (("Daily=daily",), "'Daily' cannot name a provider"),
        (("daily", "--bucket", "My_Bucket"), "--bucket 'My_Bucket' is not a valid S3 bucket name"),
    ],
)
def test_what_cannot_be_written_is_refused_in_one_line(
    args: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    bucket = () if "--bucket" in args else ("--bucket", "my-archive")
    config = tmp_path / "retention.toml"
    run = run_cli("init", *args, *bucket, "-o", str(config))
    assert run.code == 2
    assert message in run.stderr
    assert not config.exists()


def test_an_existing_file_is_kept_unless_forced(tmp_path: Path) -> None:
    config = tmp_path / "retention.toml"
    config.write_text("# mine\n")
    run = run_cli("init", "daily", "--bucket", "my-archive", "-o", str(config))
    assert run.code == 2
    assert "Pass --force" in run.stderr
    assert config.read_text() == "# mine\n"
    forced = run_cli(
        "init", "daily", "--bucket", "my-archive", "-o", str(config), "--force", "--json"
    )
    assert forced.code == 0
    assert json.loads(forced.stdout)["file"] == str(config)
