"""Specs as a plug-in would declare them, for tests/unit/test_provider_registry.py: loaded
through entry points (``importlib.metadata.EntryPoint``) like an installed package's."""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr

from worker.specs.spec import ProviderCommon, ProviderSpec


class AcmeSettings(ProviderCommon):
    """A made-up vendor's account."""

    type: Literal["acme"]
    base_url: str = "https://api.acme.example"
    token: SecretStr


SPEC = ProviderSpec(
    type="acme",
    title="Acme's transcoding API",
    settings=AcmeSettings,
    # Named, never imported: these tests build no account.
    adapter="tests.unit.plugin_specs:AcmeAdapter",
    facts={"deleting a job removes its outputs [I]": "every output is archived first"},
    default_rate_limit="5/second",
    lists_jobs=False,
)


class DailyAgain(ProviderCommon):
    type: Literal["daily"]
    api_key: SecretStr


# A plug-in that claims a built-in type.
DAILY = ProviderSpec(
    type="daily",
    title="another Daily adapter",
    settings=DailyAgain,
    adapter="tests.unit.plugin_specs:AcmeAdapter",
)

NOT_A_SPEC = {"type": "acme"}
