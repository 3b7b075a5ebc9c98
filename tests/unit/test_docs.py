"""The README's configuration reference names every key the settings accept."""

from __future__ import annotations

import re
from typing import get_args

import pytest
from pydantic import BaseModel

from tests.helpers import ROOT
from worker import settings

README = (ROOT / "README.md").read_text()
REFERENCE = README[README.index("## Configuration reference") : README.index("## Commands")]
SECTIONS: dict[str, type[BaseModel]] = {
    "archive": settings.ArchiveSettings,
    "ledger": settings.LedgerSettings,
    "broker": settings.BrokerSettings,
    "defaults": settings.DefaultsSettings,
    "downloads": settings.DownloadSettings,
    "worker": settings.WorkerSettings,
    "metrics": settings.MetricsSettings,
}


def section(name: str) -> str:
    start = REFERENCE.index(f"**`[{name}]`**")
    following = REFERENCE.find("**`[", start + 1)
    return REFERENCE[start : following if following != -1 else None]


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_every_key_of_a_section_is_in_the_reference(name: str) -> None:
    text = section(name)
    missing = [key for key in SECTIONS[name].model_fields if f"`{key}`" not in text]
    assert missing == []


def test_every_provider_key_is_in_the_reference() -> None:
    text = section("providers.NAME")
    for cls in settings.provider_classes():
        kind = get_args(cls.model_fields["type"].annotation)[0]
        row = re.search(rf"^\| `{kind}` \|.*$", text, re.M)
        assert row is not None, kind
        for key in cls.model_fields:
            assert f"`{key}`" in text, (kind, key)


def test_the_example_config_names_every_key_too() -> None:
    example = (ROOT / "config" / "retention.example.toml").read_text()
    for name, cls in SECTIONS.items():
        for key in cls.model_fields:
            assert re.search(rf"^#?\s*{key}\s*=", example, re.M), (name, key)


def test_the_metrics_section_says_how_several_workers_on_one_host_export() -> None:
    text = README[README.index("### Metrics") : README.index("## Runbook")]
    several = text[text.index("**Several workers on one host**") :]
    for needed in ("RETENTION_METRICS__PORT", "PROMETHEUS_MULTIPROC_DIR", "metrics_not_served"):
        assert needed in several, needed
