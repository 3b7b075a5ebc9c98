"""Every provider type this installation knows: the built-in specs, then those of installed
plug-ins, collected once when the settings are first imported.

A plug-in is a package that declares its spec in the ``retention.providers`` entry-point
group, under its type::

    [project.entry-points."retention.providers"]
    acme = "acme_retention.spec:SPEC"

The settings read the registry to validate ``[providers.NAME]`` tables (their ``type`` picks
the model, through one discriminated union), ``providers.build_provider`` builds an account's
adapter from it,
and the simulators' server, the demo and the tests list providers from it.
docs/architecture/modules.md, "Adding a provider", says what a plug-in holds and which tests
it must pass.

Two sources must never silently decide which adapter deletes a job, so a type is refused,
with the reason, when

* a plug-in cannot be imported, or what it names is not a ``ProviderSpec`` (or contradicts
  itself: ``ProviderSpec`` checks itself);
* its entry point's name is not the spec's type;
* two plug-ins, or a plug-in and a built-in provider, claim the same type: neither is used
  until one is uninstalled.

A refused type is left out of the union, so a configuration naming it fails to load, with
the reason (``refusal``) in place of "unknown provider type"; the rest of the installation
works as before. Nothing here imports an adapter or a simulator.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType
from typing import Annotated, Union

from pydantic import Field

from worker.errors import ConfigError
from worker.specs import daily, datocms, huawei_mpc, loom, unsiloed
from worker.specs.spec import ProviderSpec

GROUP = "retention.providers"
# In the order the simulators' server gives them ports (8101-8105).
BUILTIN: tuple[ProviderSpec, ...] = (
    daily.SPEC,
    loom.SPEC,
    huawei_mpc.SPEC,
    unsiloed.SPEC,
    datocms.SPEC,
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A provider type left out, and why: every source that claimed it is named."""

    type: str
    reason: str


def _source(entry: EntryPoint) -> str:
    dist = getattr(entry, "dist", None)
    package = f", package {dist.name} {dist.version}" if dist is not None else ""
    return f"the plug-in {entry.name!r} ({entry.value}{package})"


def _load(entry: EntryPoint) -> ProviderSpec | str:
    """The plug-in's spec, or why it cannot be used."""
    try:
        loaded = entry.load()
    except Exception as exc:  # a third party's import: whatever it raises, it is refused
        return f"{_source(entry)} cannot be loaded: {type(exc).__name__}: {exc}"
    if not isinstance(loaded, ProviderSpec):
        return f"{_source(entry)} names a {type(loaded).__name__}, not a ProviderSpec"
    if loaded.type != entry.name:
        return (
            f"{_source(entry)} declares the type {loaded.type!r}: the entry point's name "
            "must be its type"
        )
    return loaded


@dataclass(frozen=True)
class Registry:
    """Provider types by name, built-ins first, and the types refused."""

    specs: Mapping[str, ProviderSpec]
    refused: Mapping[str, Refusal]

    def spec(self, type_: str) -> ProviderSpec:
        try:
            return self.specs[type_]
        except KeyError:
            refusal = self.refused.get(type_)
            if refusal is not None:
                raise ConfigError(f"provider type {type_!r} is refused: {refusal.reason}") from None
            known = ", ".join(self.specs)
            raise ConfigError(
                f"unknown provider type {type_!r} (known: {known})",
                hint="Install the package that provides it, or check the spelling",
            ) from None

    def settings_union(self) -> object:
        """The type of a ``[providers.NAME]`` table: the settings models, told apart by
        ``type``, for pydantic. Built at run time, so the type checker sees ProviderCommon
        (``settings.ProviderSettings``)."""
        models = tuple(spec.settings for spec in self.specs.values())
        if len(models) == 1:
            return models[0]
        return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007


def collect(plugins: Iterable[EntryPoint], builtin: Iterable[ProviderSpec] = BUILTIN) -> Registry:
    """The registry of ``builtin`` and ``plugins``, refusing what cannot be told apart."""
    claims: dict[str, list[tuple[str, ProviderSpec | None]]] = {}
    for spec in builtin:
        claims.setdefault(spec.type, []).append((f"the built-in {spec.title}", spec))
    for entry in sorted(plugins, key=lambda e: (e.name, e.value)):
        loaded = _load(entry)
        if isinstance(loaded, str):
            claims.setdefault(entry.name, []).append((loaded, None))
        else:
            claims.setdefault(entry.name, []).append((_source(entry), loaded))
    specs: dict[str, ProviderSpec] = {}
    refused: dict[str, Refusal] = {}
    for type_, sources in claims.items():
        if len(sources) == 1 and sources[0][1] is not None:
            specs[type_] = sources[0][1]
        elif len(sources) == 1:
            refused[type_] = Refusal(type_, sources[0][0])
        else:
            named = " and ".join(source for source, _ in sources)
            refused[type_] = Refusal(
                type_,
                f"claimed by {named}: uninstall all but one (no adapter is chosen for you)",
            )
    return Registry(MappingProxyType(specs), MappingProxyType(refused))


def discover() -> Registry:
    """The built-in providers and the installed plug-ins."""
    return collect(entry_points(group=GROUP))


REGISTRY = discover()


def specs() -> tuple[ProviderSpec, ...]:
    """Every usable provider type, built-ins first."""
    return tuple(REGISTRY.specs.values())


def spec(type_: str) -> ProviderSpec:
    """The spec of a provider type; ConfigError, with the reason, for an unknown or refused
    one."""
    return REGISTRY.spec(type_)
