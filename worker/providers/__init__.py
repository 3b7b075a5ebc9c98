"""Provider adapters, one module per vendor, built from their settings by type."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from worker.providers.base import Provider, RateLimiter
    from worker.settings import ProviderSettings

# type -> "module:class"; a module is imported only when an account of its type is used.
ADAPTERS = {
    "daily": "worker.providers.daily:DailyProvider",
    "loom": "worker.providers.loom:LoomProvider",
    "huawei_mpc": "worker.providers.huawei_mpc:HuaweiMpcProvider",
    "unsiloed": "worker.providers.unsiloed:UnsiloedProvider",
    "datocms": "worker.providers.datocms:DatoCmsProvider",
}


def build_provider(
    name: str, settings: ProviderSettings, *, limiter: RateLimiter | None = None
) -> Provider:
    """The adapter for one configured account: ``Adapter.build(name, settings, limiter=...)``."""
    module_name, class_name = ADAPTERS[settings.type].split(":")
    adapter = getattr(importlib.import_module(module_name), class_name)
    return cast("Provider", adapter.build(name, settings, limiter=limiter))
