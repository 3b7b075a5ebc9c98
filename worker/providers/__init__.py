"""Provider adapters, one module per vendor, built from their settings by type."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.providers.base import Provider, RateLimiter
    from worker.settings import ProviderSettings


def build_provider(
    name: str, settings: ProviderSettings, *, limiter: RateLimiter | None = None
) -> Provider:
    """The adapter for one configured account. Adapters are imported only when used."""
    if settings.type == "daily":
        from worker.providers.daily import DailyProvider

        return DailyProvider.build(name, settings, limiter=limiter)
    raise NotImplementedError(f"no adapter for provider type {settings.type!r}")
