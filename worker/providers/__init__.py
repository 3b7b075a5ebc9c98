"""Provider adapters, one module per vendor beside its spec (``daily.py`` and
``daily_spec.py``), built from their settings through the registry (``registry.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.providers.base import Provider, RateLimiter
    from worker.providers.spec import ProviderCommon


def build_provider(
    name: str, settings: ProviderCommon, *, limiter: RateLimiter | None = None
) -> Provider:
    """The adapter for one configured account, built by its type's spec; the adapter's module
    is imported only now, when an account of its type is used."""
    from worker.providers import registry

    return registry.build(name, settings, limiter=limiter)
