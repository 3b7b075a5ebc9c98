"""Provider adapters, one module per vendor, built from their settings by type."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from worker.providers.base import BaseProvider, Provider, RateLimiter
    from worker.settings import ProviderSettings

# type -> "module:class"; a module is imported only when an account of its type is used.
ADAPTERS = {
    "daily": "worker.providers.daily:DailyProvider",
    "loom": "worker.providers.loom:LoomProvider",
    "huawei_mpc": "worker.providers.huawei_mpc:HuaweiMpcProvider",
    "unsiloed": "worker.providers.unsiloed:UnsiloedProvider",
    "datocms": "worker.providers.datocms:DatoCmsProvider",
}


def adapter_class(type_: str) -> type[BaseProvider[Any]]:
    """The adapter of a provider type, its module imported now."""
    module_name, class_name = ADAPTERS[type_].split(":")
    return cast(
        "type[BaseProvider[Any]]", getattr(importlib.import_module(module_name), class_name)
    )


def build_provider(
    name: str, settings: ProviderSettings, *, limiter: RateLimiter | None = None
) -> Provider:
    """The adapter for one configured account: ``Adapter.build(name, settings, limiter=...)``."""
    return cast("Provider", adapter_class(settings.type).build(name, settings, limiter=limiter))


def job_id_problem(settings: ProviderSettings, job_id: str) -> str | None:
    """Why ``job_id`` cannot be a job of an account with these settings, by its adapter's
    rules (``BaseProvider.job_id_problem``), or None. Nothing is asked of the provider."""
    return adapter_class(settings.type).job_id_problem(job_id)
