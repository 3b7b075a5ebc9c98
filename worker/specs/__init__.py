"""Every provider type, declared: one spec module per provider (its settings, the inert
fields of its record, the facts its documents leave open), the ``ProviderSpec`` they fill in,
and the registry that collects them with the installed plug-ins'.

A plug-in's spec needs only this package: ``from worker.specs import ProviderCommon,
ProviderSpec`` (and ``worker.specs.inert.inert`` for its table). Nothing here imports an
adapter, an HTTP client or a simulator.
"""

from worker.specs.spec import ProviderCommon, ProviderSpec

__all__ = ["ProviderCommon", "ProviderSpec"]
