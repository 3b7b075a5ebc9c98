"""What a provider is, declared once: its ``ProviderSpec``, and ``ProviderCommon``, the keys
every ``[providers.NAME]`` table accepts.

Each provider has a spec module (``worker/specs/daily.py`` for the adapter
``worker/providers/daily.py``) holding its settings model, the fields of its job record that
name no data its delete destroys (``inert``), the facts its documents leave open (``facts``),
and a ``SPEC`` that names them together with its adapter and its simulator.
``worker/specs/registry.py`` collects the built-in specs and those of installed plug-ins (the
``retention.providers`` entry-point group); the settings, the adapters' construction, the
simulators' server and the demo all read the registry, so a new provider is its three
modules and its tests.

The specs are a package of their own, below the settings (which read them) and below the
adapters (which import theirs), so that the settings never depend on an adapter, not even
through the package they share: the import contract forbids cycles between packages.

A spec module stays cheap to import: loading the configuration reads every spec (the
``type`` of each ``[providers.NAME]`` table picks a settings model), and ``retention status``
must not pay for an HTTP client. So the adapter and the simulator are named by dotted path
(``"module:attribute"``) and imported only when used: the adapter when an account of the
type is built, the simulator only by the demo and the tests (production never imports it).
"""

from __future__ import annotations

import builtins
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, get_args

from pydantic import Field, SecretStr, field_validator

from worker.settings_base import PROVIDER_NAME, Strict, check_cron, check_http_url, check_rate
from worker.specs.inert import Inert, inert

# Marks of a fact that the provider's documents do not settle (shared/providers.md): inferred
# from the docs or by analogy, or not found in any public source.
FACT_MARKS = ("[I]", "[?]")


class ProviderCommon(Strict):
    """Keys every provider accepts. ``None`` means "take it from [defaults]"."""

    base_url: str
    retain_days: int | None = Field(default=None, ge=0)
    schedule: str | None = None
    max_deletes_per_sweep: int | None = Field(default=None, ge=1)
    read_only: bool | None = None
    concurrency: int | None = Field(default=None, ge=1, le=64)
    max_read_age_seconds: int | None = Field(default=None, ge=1, le=3600)
    # Requests per period to this provider's API, e.g. "20/second".
    rate_limit: str | None = None
    # Seconds to wait for one API answer.
    timeout: float = Field(default=30.0, gt=0)
    # Sections of the provider's job record that the operator accepts losing, by name (for
    # Daily an `output` section such as "recording", for Loom an `output_files` key, for
    # Unsiloed "file_url", its source document). Files they name are neither archived nor a
    # reason to keep the job. Without this, a job whose record names a file the worker does
    # not recognise is kept at the provider.
    ignore_outputs: list[str] = Field(default_factory=list)
    # The memory parsing one of its JSON answers may take (MiB), counted on the answer's
    # bytes before it is parsed (providers.parsing.parse_cost, an upper bound): an answer that
    # could take more is refused unparsed and the job stays at the provider. With the body
    # itself, one answer costs at most its size cap (16 MiB; Unsiloed's max_result_mib) plus
    # this. Genuine answers count 3 (long texts) to 30 (compact small objects) times their
    # size.
    max_parse_mib: int = Field(default=256, ge=1, le=65536)

    if TYPE_CHECKING:
        # Each provider's model declares it as ``type: Literal["<its type>"]``, the union's
        # discriminator; declared here for the type checker only, so the file's key order
        # (and the generated schema) stays the providers' own.
        type: str

    _cron = field_validator("schedule")(check_cron)
    _rate = field_validator("rate_limit")(check_rate)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        return check_http_url(v, "https://api.daily.co/v1")

    def secret_values(self) -> tuple[str, ...]:
        """This account's credentials, to keep out of messages."""
        values = (getattr(self, name) for name in type(self).model_fields)
        return tuple(v.get_secret_value() for v in values if isinstance(v, SecretStr))


class SpecError(ValueError):
    """A spec that contradicts itself (a programming error in the provider's package)."""


def load(path: str) -> object:
    """The object a ``"package.module:attribute"`` path names, its module imported now."""
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def _check_path(what: str, path: str) -> None:
    module_name, colon, attribute = path.partition(":")
    if not (colon and module_name and attribute.isidentifier()):
        raise SpecError(f"{what} {path!r} must look like 'package.module:attribute'")


def type_of(model: type[ProviderCommon]) -> str | None:
    """The ``type`` a settings model answers to: its ``type: Literal["..."]``, else None."""
    info = model.model_fields.get("type")
    options = get_args(info.annotation) if info is not None else ()
    return options[0] if len(options) == 1 and isinstance(options[0], str) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderSpec:
    """One provider type: everything the worker, its demo and its tests need to know of it."""

    # The `type` key of a [providers.NAME] table; the settings model's Literal repeats it.
    type: str
    # The vendor and API, as messages and documents name it ("Daily's Batch Processor").
    title: str
    # The [providers.NAME] table's model: ProviderCommon plus the provider's own keys.
    settings: builtins.type[ProviderCommon]
    # "module:Class" of the adapter, imported when an account is built: a class whose
    # ``build(name, settings, limiter=...)`` makes the account's Provider (every
    # ``providers.base.BaseProvider`` has it).
    adapter: str
    # "module:ACCOUNT" of its simulated account (a ``worker.simulators.seed.SimulatedAccount``)
    # for the demo, the simulators' server and the tests; None when the provider ships none.
    simulator: str | None = None
    # The fields of its job record that name no data its delete destroys, each with its
    # reason (``specs.inert``): the whole-record walk passes over them.
    inert: Inert = field(default_factory=lambda: MappingProxyType({}))
    # What its documents leave open, each marked [I] (inferred) or [?] (unknown), with what
    # the adapter does about it and which key, if any, changes it.
    facts: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Requests per period when the table sets no `rate_limit`.
    default_rate_limit: str = "10/second"
    # False for an API without a list endpoint: its jobs come from `retention track`.
    lists_jobs: bool = True

    def __post_init__(self) -> None:
        if not PROVIDER_NAME.match(self.type):
            raise SpecError(
                f"provider type {self.type!r} must be lowercase letters, digits and '_', "
                "starting with a letter"
            )
        where = f"the {self.type} spec's"
        if not (isinstance(self.settings, type) and issubclass(self.settings, ProviderCommon)):
            raise SpecError(f"{where} settings must be a subclass of ProviderCommon")
        if type_of(self.settings) != self.type:
            raise SpecError(
                f"{where} settings model {self.settings.__name__} must declare "
                f'type: Literal["{self.type}"]'
            )
        _check_path(f"{where} adapter", self.adapter)
        if self.simulator is not None:
            _check_path(f"{where} simulator", self.simulator)
        try:
            check_rate(self.default_rate_limit)
            table = inert(self.inert)
        except ValueError as exc:
            raise SpecError(f"{where} {exc}") from None
        for fact in self.facts:
            if not any(mark in fact for mark in FACT_MARKS):
                raise SpecError(f"{where} fact {fact!r} must be marked [I] or [?]")
        object.__setattr__(self, "inert", table)
        object.__setattr__(self, "facts", MappingProxyType(dict(self.facts)))

    def adapter_class(self) -> object:
        """The adapter, imported now (``providers.build_provider`` builds accounts with it)."""
        return load(self.adapter)
