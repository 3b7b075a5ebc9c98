"""The provider registry: one spec per provider type, the built-in ones and the plug-ins'
(the ``retention.providers`` entry-point group), and every type two sources claim refused."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Literal

import pytest
from pydantic import SecretStr

from tests.helpers import ROOT
from worker.errors import ConfigError
from worker.specs import registry
from worker.specs.registry import GROUP, collect
from worker.specs.spec import ProviderCommon, ProviderSpec, SpecError

BUILT_IN = ("daily", "loom", "huawei_mpc", "unsiloed", "datocms")


def plugin(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=GROUP)


ACME = plugin("acme", "tests.unit.plugin_specs:SPEC")


# -- the built-in providers -----------------------------------------------------------------


def test_the_five_built_in_providers_are_registered_in_the_order_of_their_ports() -> None:
    assert tuple(spec.type for spec in registry.BUILTIN) == BUILT_IN
    assert tuple(registry.REGISTRY.specs)[: len(BUILT_IN)] == BUILT_IN


@pytest.mark.parametrize("spec", registry.BUILTIN, ids=BUILT_IN)
def test_each_spec_names_the_adapter_of_its_own_type(spec: ProviderSpec) -> None:
    adapter = spec.adapter_class()
    assert getattr(adapter, "type", None) == spec.type
    assert getattr(adapter, "lists_jobs", None) is spec.lists_jobs


@pytest.mark.parametrize("spec", registry.BUILTIN, ids=BUILT_IN)
def test_each_spec_declares_what_its_documents_leave_open(spec: ProviderSpec) -> None:
    assert spec.facts
    assert spec.inert
    assert spec.simulator is not None


def test_loading_the_settings_imports_no_adapter_and_no_http_client() -> None:
    code = (
        "import sys, worker.settings\n"
        "print(sorted(m for m in sys.modules if m in ('httpx', 'boto3', 'worker.specs.daily') "
        "or m.startswith(('worker.simulators', 'worker.providers'))))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert run.stdout.split() == ["['worker.specs.daily']"]


# -- a spec checks itself -------------------------------------------------------------------


class _Other(ProviderCommon):
    type: Literal["other"]
    token: SecretStr


def _spec(**changes: object) -> ProviderSpec:
    fields: dict[str, object] = {
        "type": "other",
        "title": "Other",
        "settings": _Other,
        "adapter": "other.adapter:Adapter",
    }
    return ProviderSpec(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"type": "Other-Vendor"}, "must be lowercase letters"),
        ({"type": "another"}, r'must declare type: Literal\["another"\]'),
        ({"settings": dict}, "must be a subclass of ProviderCommon"),
        ({"adapter": "other.adapter.Adapter"}, "must look like 'package.module:attribute'"),
        ({"simulator": "other"}, "simulator 'other' must look like"),
        ({"default_rate_limit": "fast"}, "must look like '20/second'"),
        ({"facts": {"deletes are final": "so archive first"}}, "must be marked"),
        ({"inert": {"*": "everything"}}, "must start with a field name"),
        ({"inert": {"id": " "}}, "needs a reason"),
    ],
)
def test_a_spec_that_contradicts_itself_is_refused_when_declared(
    changes: dict[str, object], says: str
) -> None:
    with pytest.raises(SpecError, match=says):
        _spec(**changes)


# -- plug-ins -------------------------------------------------------------------------------


def test_a_plug_in_is_registered_after_the_built_in_providers() -> None:
    found = collect([ACME])
    assert tuple(found.specs) == (*BUILT_IN, "acme")
    assert found.spec("acme").settings.__name__ == "AcmeSettings"
    assert not found.refused


@pytest.mark.parametrize(
    ("entries", "refused", "says"),
    [
        (
            [plugin("acme", "acme_not_installed.spec:SPEC")],
            "acme",
            "the plug-in 'acme' .*cannot be loaded: ModuleNotFoundError",
        ),
        (
            [plugin("acme", "tests.unit.plugin_specs:NOT_A_SPEC")],
            "acme",
            "names a dict, not a ProviderSpec",
        ),
        (
            [plugin("acme_v2", "tests.unit.plugin_specs:SPEC")],
            "acme_v2",
            "declares the type 'acme': the entry point's name must be its type",
        ),
        (
            [ACME, plugin("acme", "tests.unit.plugin_specs:SPEC ")],
            "acme",
            "claimed by the plug-in 'acme' .* and the plug-in 'acme'",
        ),
        (
            [plugin("daily", "tests.unit.plugin_specs:DAILY")],
            "daily",
            "claimed by the built-in Daily's Batch Processor and the plug-in 'daily'",
        ),
    ],
    ids=["broken", "not-a-spec", "misnamed", "claimed-twice", "claims-a-built-in"],
)
def test_a_plug_in_that_cannot_be_told_apart_is_refused_with_the_reason(
    entries: list[EntryPoint], refused: str, says: str
) -> None:
    # when the registry is collected with the plug-in
    found = collect(entries)

    # then its type is left out, saying why; every other type stays
    assert refused not in found.specs
    assert set(found.specs) == set(BUILT_IN) - {refused}
    assert found.refused[refused].type == refused
    with pytest.raises(ConfigError, match=f"provider type '{refused}' is refused: .*{says}"):
        found.spec(refused)


def test_an_unknown_type_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown provider type 'acme' \\(known: daily, loom"):
        registry.spec("acme")


# -- an installed plug-in, end to end -------------------------------------------------------

PLUGIN = """
from __future__ import annotations

from typing import Literal

from pydantic import SecretStr

from worker.specs.spec import ProviderCommon, ProviderSpec


class AcmeSettings(ProviderCommon):
    type: Literal["acme"]
    base_url: str = "https://api.acme.example"
    token: SecretStr
    region: str = "eu"


class AcmeProvider:
    type = "acme"

    def __init__(self, name, settings):
        self.name, self.settings = name, settings

    @classmethod
    def build(cls, name, settings, *, limiter=None):
        return cls(name, settings)


SPEC = ProviderSpec(
    type="acme",
    title="Acme's transcoding API",
    settings=AcmeSettings,
    adapter="acme_retention:AcmeProvider",
    facts={"deleting a job removes its outputs [I]": "every output is archived first"},
    default_rate_limit="5/second",
)
"""


def install(site: Path, source: str) -> None:
    """A distribution as pip leaves it: the package, and its dist-info with the entry point."""
    (site / "acme_retention").mkdir()
    (site / "acme_retention" / "__init__.py").write_text(source)
    info = site / "acme_retention-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-retention\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\nacme = acme_retention:SPEC\n")


def retention(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{site}:{ROOT}"},
        timeout=120,
        check=False,
    )


def config(tmp_path: Path, table: str, name: str = "retention.toml") -> Path:
    path = tmp_path / name
    path.write_text(f'[archive]\nbucket = "archive"\n\n[providers.acme_eu]\n{table}\n')
    return path


def test_an_installed_plug_in_is_configured_validated_and_built_like_a_built_in_provider(
    tmp_path: Path,
) -> None:
    # given a package that declares a provider in the retention.providers group
    site = tmp_path / "site"
    site.mkdir()
    install(site, PLUGIN)
    good = config(tmp_path, 'type = "acme"\ntoken = "acme-secret-1"')

    # when a configuration names its type
    valid = retention(site, "--config", str(good), "config", "validate", "--json")
    shown = retention(site, "--config", str(good), "config", "show", "--json")
    schema = retention(site, "config", "schema")
    bad = config(tmp_path, 'type = "acme"\ntoken = "x"\nzone = "eu"', "bad.toml")
    invalid = retention(site, "--config", str(bad), "config", "validate", "--json")

    # then it validates as one of the worker's own, with its spec's default rate limit
    assert json.loads(valid.stdout)["ok"] is True, valid.stdout + valid.stderr
    provider = json.loads(shown.stdout)["providers"]["acme_eu"]
    assert provider["type"] == "acme"
    assert provider["rate_limit"] == "5/second"
    assert provider["token"] == "********"
    # and its keys are held to its own model, like any provider's
    problems = json.loads(invalid.stdout)["problems"]
    assert problems == [{"key": "providers.acme_eu.zone", "message": problems[0]["message"]}]
    # and the schema editors read describes it
    assert "AcmeSettings" in json.loads(schema.stdout)["$defs"]
    # and its adapter is what an account of its type is built with
    code = (
        "from worker.settings import load_settings\n"
        "from worker.providers import build_provider\n"
        f"settings = load_settings({str(good)!r})\n"
        "provider = build_provider('acme_eu', settings.provider('acme_eu'))\n"
        "print(type(provider).__module__, type(provider).__name__, provider.name)"
    )
    built = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{site}:{ROOT}"},
        check=False,
    )
    assert built.stdout.split() == ["acme_retention", "AcmeProvider", "acme_eu"], built.stderr


def test_a_configuration_naming_a_broken_plug_in_fails_saying_which_and_why(
    tmp_path: Path,
) -> None:
    # given a plug-in whose import fails, and a configuration that uses it
    site = tmp_path / "site"
    site.mkdir()
    install(site, PLUGIN + "\nimport acme_sdk_that_is_missing\n")
    path = config(tmp_path, 'type = "acme"\ntoken = "acme-secret-1"')

    # when the configuration is read
    run = retention(site, "--config", str(path), "config", "validate", "--json")

    # then it is refused, naming the plug-in, its package and the error, never the token
    (problem,) = json.loads(run.stdout)["problems"]
    assert run.returncode == 2
    assert problem["key"] == "providers.acme_eu"
    assert problem["message"] == textwrap.dedent(
        """\
        provider type 'acme' is refused: the plug-in 'acme' (acme_retention:SPEC, package \
acme-retention 1.0) cannot be loaded: ModuleNotFoundError: No module named \
'acme_sdk_that_is_missing'"""
    )
    assert "acme-secret-1" not in run.stdout + run.stderr
    # and a configuration of built-in providers only is not held back by it
    daily = tmp_path / "daily.toml"
    daily.write_text(
        '[archive]\nbucket = "archive"\n[providers.daily]\ntype = "daily"\napi_key = "k"\n'
    )
    assert retention(site, "--config", str(daily), "config", "validate").returncode == 0
