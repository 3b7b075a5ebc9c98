"""Provider adapters, one module per vendor (``daily.py``), each declared by its spec
(``worker/specs/daily.py``), built from their settings through the registry.

The specs and the registry sit below the settings (the settings read them); the adapters sit
above, among the other adapters. Only this function joins the two: it imports an adapter's
module when an account of its type is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from worker.providers.base import BaseProvider, Provider, RateLimiter
    from worker.specs.spec import ProviderCommon

    class Adapter(Protocol):
        """What a spec's ``adapter`` names (every ``BaseProvider`` is one)."""

        def build(
            self, name: str, settings: ProviderCommon, *, limiter: RateLimiter | None = None
        ) -> Provider: ...


def build_provider(
    name: str, settings: ProviderCommon, *, limiter: RateLimiter | None = None
) -> Provider:
    """The adapter for one configured account, built by the class its type's spec names."""
    from worker.specs import registry

    adapter = cast("Adapter", registry.spec(settings.type).adapter_class())
    return adapter.build(name, settings, limiter=limiter)


def job_id_problem(settings: ProviderCommon, job_id: str) -> str | None:
    """Why ``job_id`` cannot be a job of an account with these settings, by its adapter's
    rules (``BaseProvider.job_id_problem``), or None. Nothing is asked of the provider. A
    plug-in's adapter that is no ``BaseProvider`` is held to the rule every id meets
    (``keys.job_id_problem``: one archive folder, as given)."""
    from worker.keys import job_id_problem as folder_problem
    from worker.specs import registry

    adapter = registry.spec(settings.type).adapter_class()
    if not hasattr(adapter, "job_id_problem"):
        return folder_problem(job_id)
    return cast("type[BaseProvider[Any]]", adapter).job_id_problem(job_id)
