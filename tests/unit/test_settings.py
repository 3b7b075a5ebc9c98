"""The configuration contract: TOML, ${NAME} references, RETENTION_* overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import ROOT
from worker.errors import ConfigError
from worker.settings import load_settings
from worker.specs.daily import DailySettings

MINIMAL = """
[archive]
bucket = "acme-vendor-archive"

[providers.daily]
type = "daily"
api_key = "${DAILY_API_KEY}"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "retention.toml"
    path.write_text(text)
    return path


def test_the_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DAILY_API_KEY",
        "LOOM_KEY",
        "LOOM_SECRET",
        "MPC_ACCESS_KEY",
        "MPC_SECRET_KEY",
        "UNSILOED_API_KEY",
        "DATOCMS_API_TOKEN",
    ):
        monkeypatch.setenv(name, f"{name.lower()}-value")
    settings = load_settings(ROOT / "config" / "retention.example.toml")
    assert settings.archive.bucket == "acme-vendor-archive"
    assert settings.policy("daily").retain_days == 3
    assert sorted(settings.providers) == ["daily", "datocms", "loom", "mpc", "unsiloed"]


def test_defaults_fill_in_what_a_provider_leaves_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAILY_API_KEY", "k-123456")
    policy = load_settings(write(tmp_path, MINIMAL)).policy("daily")
    assert (policy.retain_days, policy.schedule, policy.max_deletes_per_sweep) == (
        7,
        "0 * * * *",
        1000,
    )
    assert policy.rate_limit == "20/second"
    assert policy.read_only is False


def test_a_string_written_as_a_reference_is_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAILY_API_KEY", "from-the-environment")
    daily = load_settings(write(tmp_path, MINIMAL)).providers["daily"]
    assert isinstance(daily, DailySettings)
    assert daily.api_key.get_secret_value() == "from-the-environment"


def test_a_missing_reference_names_the_key_and_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAILY_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"providers\.daily\.api_key .*DAILY_API_KEY"):
        load_settings(write(tmp_path, MINIMAL))


def test_an_empty_reference_names_the_key_and_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAILY_API_KEY", "  ")
    with pytest.raises(ConfigError, match=r"providers\.daily\.api_key .*DAILY_API_KEY.*empty"):
        load_settings(write(tmp_path, MINIMAL))


def test_environment_variables_override_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAILY_API_KEY", "from-file-ref")
    monkeypatch.setenv("RETENTION_PROVIDERS__DAILY__API_KEY", "from-override")
    monkeypatch.setenv("RETENTION_PROVIDERS__DAILY__RETAIN_DAYS", "2")
    monkeypatch.setenv("RETENTION_ARCHIVE__PREFIX", "vendor/")
    settings = load_settings(write(tmp_path, MINIMAL))
    daily = settings.providers["daily"]
    assert isinstance(daily, DailySettings)
    assert daily.api_key.get_secret_value() == "from-override"
    assert settings.policy("daily").retain_days == 2
    assert settings.archive.prefix == "vendor/"


def test_the_path_comes_from_retention_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAILY_API_KEY", "k-123456")
    monkeypatch.setenv("RETENTION_CONFIG", str(write(tmp_path, MINIMAL)))
    assert load_settings().archive.bucket == "acme-vendor-archive"


def test_no_path_at_all_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RETENTION_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="--config PATH or set RETENTION_CONFIG"):
        load_settings()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('bucket = "acme-vendor-archive"', 'bucket = "Bad_Bucket"'), "archive.bucket"),
        (('bucket = "acme-vendor-archive"', ""), r"archive\.bucket: is required"),
        (
            ('type = "daily"', 'type = "daily"\nretain_dayz = 3'),
            r"providers\.daily\.retain_dayz: unknown key",
        ),
        (('type = "daily"', 'type = "daily"\nretain_days = -1'), r"providers\.daily\.retain_days"),
        (('type = "daily"', 'type = "dialy"'), "unknown provider type"),
        (
            ('type = "daily"', 'type = "daily"\nschedule = "hourly"'),
            r"providers\.daily\.schedule: must be a five-field cron",
        ),
        (("[providers.daily]", "[providers.Daily-EU]"), "lowercase letters"),
        (('type = "daily"', 'type = "daily"\nrate_limit = "fast"'), "rate_limit"),
    ],
)
def test_a_bad_config_names_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: tuple[str, str], message: str
) -> None:
    monkeypatch.setenv("DAILY_API_KEY", "k-123456")
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, MINIMAL.replace(*edit)))


def test_invalid_toml_says_where(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid TOML.*line"):
        load_settings(write(tmp_path, "[archive\nbucket = 1"))


def test_errors_and_reprs_never_show_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-daily-key-value"
    monkeypatch.setenv("DAILY_API_KEY", secret)
    text = MINIMAL + '\n[ledger]\nurl = "postgresql+psycopg://u:pg-pass-word@db/x"\n'
    settings = load_settings(write(tmp_path, text))
    assert secret not in repr(settings)
    assert "pg-pass-word" not in repr(settings)
    assert settings.secret_values() >= {secret, "pg-pass-word"}
    bad = text.replace('type = "daily"', 'type = "daily"\nretain_days = "x"')
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, bad))
    assert secret not in str(caught.value)


def test_an_unknown_provider_name_lists_the_configured_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAILY_API_KEY", "k-123456")
    settings = load_settings(write(tmp_path, MINIMAL))
    with pytest.raises(ConfigError, match=r"no provider named 'loom'.*configured: daily"):
        settings.provider("loom")
