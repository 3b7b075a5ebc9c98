"""Configuration you can see and check offline: every problem at once, ${NAME:-default} and
embedded references, KEY_file and RETENTION_SECRETS_DIR, `config show` and `config schema`."""

from __future__ import annotations

import json
import logging
import os
import tomllib
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from tests.helpers import ROOT
from tests.json_at import at
from worker.cli import cli
from worker.config_view import MASK, effective_config, schema, schema_text
from worker.errors import ConfigError
from worker.logsetup import cli_level
from worker.redact import mask_url
from worker.render.config import render_toml
from worker.settings import load_settings, read_config
from worker.specs.daily import DailySettings
from worker.specs.loom import LoomSettings

MINIMAL = """
[archive]
bucket = "acme-vendor-archive"

[providers.daily]
type = "daily"
api_key = "${DAILY_API_KEY}"
"""

SECRET = "s3cr3t-daily-key-value"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RETENTION_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DAILY_API_KEY", SECRET)


def write(tmp_path: Path, text: str, name: str = "retention.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def daily_key(text: str, tmp_path: Path) -> str:
    daily = load_settings(write(tmp_path, text)).providers["daily"]
    assert isinstance(daily, DailySettings)
    return daily.api_key.get_secret_value()


# -- every problem at once ------------------------------------------------------------------


def test_every_bad_key_is_named_at_once_not_just_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: two unset references, a misspelt key, a bad type and a bad environment override
    monkeypatch.delenv("DAILY_API_KEY")
    monkeypatch.setenv("RETENTION_DEFAULTS__CONCURRENCY", "many")
    text = MINIMAL + (
        'retain_dayz = 3\npage_size = "big"\n'
        '[providers.loom]\ntype = "loom"\nbase_url = "https://l.example"\n'
        'key = "${LOOM_KEY}"\nsecret = "x"\n'
    )

    # when
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text))

    # then: one message, a line per problem, each with its key
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("invalid configuration in ")
    assert sorted(line.split()[0].rstrip(":") for line in lines[1:]) == [
        "defaults.concurrency",
        "providers.daily.api_key",
        "providers.daily.page_size",
        "providers.daily.retain_dayz",
        "providers.loom.key",
    ]
    assert "(set by RETENTION_DEFAULTS__CONCURRENCY)" in str(caught.value)


def test_a_reference_allowed_to_be_unset_is_reported_unchecked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAILY_API_KEY")
    report = read_config(write(tmp_path, MINIMAL), allow_unset=True)
    assert report.problems == ()
    assert report.unchecked == ("providers.daily.api_key",)


# -- references -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "  "])
def test_a_default_applies_when_the_variable_is_unset_or_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("DAILY_API_KEY")
    else:
        monkeypatch.setenv("DAILY_API_KEY", value)
    text = MINIMAL.replace("${DAILY_API_KEY}", "${DAILY_API_KEY:-fallback-key}")
    assert daily_key(text, tmp_path) == "fallback-key"


def test_a_reference_inside_a_longer_string_is_expanded_and_its_secret_known(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASS", "pg-pass-word")
    text = MINIMAL + '[ledger]\nurl = "postgresql+psycopg://u:${PGPASS}@db/x?a=$${kept}"\n'
    settings = load_settings(write(tmp_path, text))
    assert settings.ledger.url == "postgresql+psycopg://u:pg-pass-word@db/x?a=${kept}"
    assert "pg-pass-word" in settings.secret_values()


def test_a_stray_dollar_brace_is_refused_rather_than_kept(tmp_path: Path) -> None:
    text = MINIMAL.replace("${DAILY_API_KEY}", "${DAILY-API-KEY}")
    with pytest.raises(ConfigError, match=r"providers\.daily\.api_key: has a '\$\{' that is no"):
        load_settings(write(tmp_path, text))


# -- secrets from files ---------------------------------------------------------------------


def test_a_credential_is_read_from_a_file_beside_the_config_with_its_newline_stripped(
    tmp_path: Path,
) -> None:
    (tmp_path / "daily_key").write_text("key-from-a-file\n")
    text = MINIMAL.replace('api_key = "${DAILY_API_KEY}"', 'api_key_file = "daily_key"')
    assert daily_key(text, tmp_path) == "key-from-a-file"


def test_the_file_itself_may_be_named_by_a_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "k").write_text("key-from-a-named-file\r\n")
    monkeypatch.setenv("KEY_PATH", str(tmp_path / "k"))
    text = MINIMAL.replace('api_key = "${DAILY_API_KEY}"', 'api_key_file = "${KEY_PATH}"')
    assert daily_key(text, tmp_path) == "key-from-a-named-file"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", r"providers\.daily\.api_key_file: cannot read .*daily_key"),
        ("empty", r"providers\.daily\.api_key_file: .*daily_key is empty"),
        ("both", r"providers\.daily\.api_key_file: give api_key or api_key_file, not both"),
    ],
)
def test_a_secret_file_that_cannot_be_used_names_its_key_and_nothing_else(
    tmp_path: Path, setup: str, message: str
) -> None:
    if setup == "empty":
        (tmp_path / "daily_key").write_text("\n")
    line = 'api_key_file = "daily_key"'
    if setup == "both":
        line = f'api_key = "{SECRET}"\n{line}'
    text = MINIMAL.replace('api_key = "${DAILY_API_KEY}"', line)
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(write(tmp_path, text))
    assert len(str(caught.value).splitlines()) == 2  # no "is required" echo besides
    assert SECRET not in str(caught.value)


def test_only_credentials_may_be_read_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "bucket").write_text("acme-vendor-archive\n")
    text = MINIMAL.replace('bucket = "acme-vendor-archive"', 'bucket_file = "bucket"')
    with pytest.raises(ConfigError, match=r"archive\.bucket_file: unknown key"):
        load_settings(write(tmp_path, text))


def test_the_secrets_directory_supplies_values_by_variable_name_as_kubernetes_mounts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a Kubernetes secret volume: hidden ..data, and a link per key into it
    mount = tmp_path / "secrets"
    data = mount / "..2026_01_01_00_00_00.1"
    data.mkdir(parents=True)
    (data / "RETENTION_PROVIDERS__LOOM__SECRET").write_text("loom-secret-from-mount\n")
    (mount / "..data").symlink_to(data.name)
    (mount / "RETENTION_PROVIDERS__LOOM__SECRET").symlink_to(
        "..data/RETENTION_PROVIDERS__LOOM__SECRET"
    )
    monkeypatch.setenv("RETENTION_SECRETS_DIR", str(mount))
    text = MINIMAL + '[providers.loom]\ntype = "loom"\nbase_url = "https://l.example"\nkey = "k"\n'

    # when
    loom = load_settings(write(tmp_path, text)).providers["loom"]

    # then
    assert isinstance(loom, LoomSettings)
    assert loom.secret.get_secret_value() == "loom-secret-from-mount"


def test_a_secrets_directory_that_is_not_there_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETENTION_SECRETS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"RETENTION_SECRETS_DIR names .*nowhere.*not a dir"):
        load_settings(write(tmp_path, MINIMAL))


# -- config show ----------------------------------------------------------------------------


def test_show_resolves_defaults_overrides_and_references_and_masks_every_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a password in two URLs, a key by reference, an override and a default
    monkeypatch.setenv("RETENTION_PROVIDERS__DAILY__RETAIN_DAYS", "2")
    text = MINIMAL + (
        '[ledger]\nurl = "postgresql+psycopg://u:pg-pass-word@db/x"\n'
        '[broker]\nurl = "redis://:redis-pass-word@cache:6379/0"\n'
        "[defaults]\nmax_deletes_per_sweep = 50\n"
    )
    path = write(tmp_path, text)
    settings = load_settings(path)

    # when
    document = effective_config(settings, source=path)
    shown = render_toml(document) + json.dumps(document)

    # then
    daily = at(document, "providers", "daily")
    assert (
        at(daily, "retain_days"),
        at(daily, "max_deletes_per_sweep"),
        at(daily, "rate_limit"),
    ) == (
        2,
        50,
        "20/second",
    )
    assert at(daily, "api_key") == MASK
    assert at(document, "ledger", "url") == f"postgresql+psycopg://u:{MASK}@db/x"
    assert at(document, "broker", "url") == f"redis://:{MASK}@cache:6379/0"
    assert at(document, "source", "environment_overrides") == [
        "RETENTION_PROVIDERS__DAILY__RETAIN_DAYS"
    ]
    for secret in (SECRET, "pg-pass-word", "redis-pass-word"):
        assert secret not in shown
    # and the TOML reads back as the same configuration
    assert tomllib.loads(render_toml(document))["providers"]["daily"]["retain_days"] == 2


def test_show_masks_the_credentials_in_a_urls_query_string_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: passwords that psycopg and redis-py read from the query string, one of them
    # percent-encoded, and a custom bucket endpoint with a token
    text = MINIMAL + (
        'custom_bucket_endpoint_url = "https://s3.example/?token=endpoint-token-1"\n'
        '[ledger]\nurl = "postgresql+psycopg://u@db/x?password=pg-query-pass&sslmode=require'
        '&sslpassword=pg-key-pass"\n'
        '[broker]\nurl = "redis://cache:6379/0?username=app&password=redis%40query-pass"\n'
    )
    path = write(tmp_path, text)

    # when
    document = effective_config(load_settings(path), source=path)
    shown = render_toml(document) + json.dumps(document)

    # then: the credentials are masked, and the rest of each URL is shown as it is
    assert at(document, "ledger", "url") == (
        f"postgresql+psycopg://u@db/x?password={MASK}&sslmode=require&sslpassword={MASK}"
    )
    assert at(document, "broker", "url") == f"redis://cache:6379/0?username=app&password={MASK}"
    assert at(document, "providers", "daily", "custom_bucket_endpoint_url") == (
        f"https://s3.example/?token={MASK}"
    )
    for secret in ("pg-query-pass", "pg-key-pass", "query-pass", "endpoint-token-1"):
        assert secret not in shown


def test_every_credential_in_a_url_is_a_secret_the_redactor_knows(tmp_path: Path) -> None:
    # given: a credential in every URL the configuration can hold, as written and encoded
    text = (
        '[archive]\nbucket = "acme-vendor-archive"\n'
        'endpoint_url = "https://s3.example/?X-Api-Key=archive-key-2"\n'
        '[ledger]\nurl = "postgresql+psycopg://u:pg%2Fuser-pass@db/x?sslpassword=pg-key-pass"\n'
        '[broker]\nurl = "redis://cache/0?password=redis%40query-pass"\n'
        '[metrics]\npushgateway_url = "https://ops:push-pass-3@push.example"\n'
        '[providers.daily]\ntype = "daily"\napi_key = "${DAILY_API_KEY}"\n'
        'custom_bucket_endpoint_url = "https://s3.example/?token=endpoint-token-1"\n'
    )
    # then: each is known as written and as the driver decodes it
    secrets = load_settings(write(tmp_path, text)).secret_values()
    for value in (
        "endpoint-token-1",
        "archive-key-2",
        "pg%2Fuser-pass",
        "pg/user-pass",
        "pg-key-pass",
        "redis%40query-pass",
        "redis@query-pass",
        "push-pass-3",
    ):
        assert value in secrets


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:p@db:5432/x", f"postgresql://u:{MASK}@db:5432/x"),
        ("redis://:p@cache/0", f"redis://:{MASK}@cache/0"),
        ("sqlite:///retention.db", "sqlite:///retention.db"),
        ("https://user@host/x", "https://user@host/x"),
    ],
)
def test_a_url_shows_everything_but_its_password(url: str, shown: str) -> None:
    assert mask_url(url) == shown


# -- config schema --------------------------------------------------------------------------


def test_the_checked_in_schema_is_what_config_schema_prints() -> None:
    printed = CliRunner().invoke(cli, ["config", "schema"])
    assert printed.exit_code == 0
    checked_in = (ROOT / "config" / "retention.schema.json").read_text()
    regenerate = "run: retention config schema > config/retention.schema.json"
    assert printed.output == checked_in, regenerate
    assert printed.output == schema_text()


def test_the_schema_accepts_the_example_and_a_key_read_from_a_file() -> None:
    validator = jsonschema.Draft202012Validator(schema())
    example = tomllib.loads((ROOT / "config" / "retention.example.toml").read_text())
    assert list(validator.iter_errors(example)) == []
    daily = example["providers"]["daily"]
    daily["api_key_file"] = daily.pop("api_key")
    assert list(validator.iter_errors(example)) == []
    del daily["api_key_file"]
    assert list(validator.iter_errors(example)) != []


# -- logs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "at_terminal", "verbosity", "level"),
    [
        (None, False, 0, logging.INFO),
        (None, True, 0, logging.WARNING),
        (None, False, 1, logging.DEBUG),
        (None, False, 5, logging.DEBUG),
        (None, False, -1, logging.WARNING),
        (None, True, -1, logging.ERROR),
        (None, False, -9, logging.CRITICAL),
        ("DEBUG", True, 0, logging.DEBUG),
        ("ERROR", False, 1, logging.WARNING),
        ("nonsense", False, 0, logging.INFO),
    ],
)
def test_the_log_level_starts_from_the_environment_and_moves_a_step_per_flag(
    monkeypatch: pytest.MonkeyPatch, env: str | None, at_terminal: bool, verbosity: int, level: int
) -> None:
    if env is None:
        monkeypatch.delenv("RETENTION_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("RETENTION_LOG_LEVEL", env)
    assert cli_level(verbosity, at_terminal=at_terminal) == level
