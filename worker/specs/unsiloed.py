"""Unsiloed's vision API, declared: its settings, the inert fields of its job record and
result, the facts its documents leave open, and its spec (shared/providers.md section 4;
seed 003). The adapter is ``worker/providers/unsiloed.py``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from worker.specs.inert import inert
from worker.specs.spec import ProviderCommon, ProviderSpec


class UnsiloedSettings(ProviderCommon):
    """Unsiloed's vision API jobs (providers.md section 4)."""

    type: Literal["unsiloed"]
    base_url: str = "https://visionapi.unsiloed.ai"
    # Sent as X-API-Key.
    api_key: SecretStr
    # A failed job has no result, and its delete removes the source document, which the
    # worker cannot fetch. By default such jobs are kept at Unsiloed and reported; true
    # deletes them anyway, with only their record archived.
    delete_failed_jobs: bool = False
    # The largest result document read (MiB); a larger answer is refused, not buffered.
    max_result_mib: int = Field(default=64, ge=1, le=4096)


# The fields of the job record and the result (shared/providers.md section 4) that name no
# data the delete destroys. The extraction's content is archived inside result.json: values
# shaped by the user's schema, which may hold any URL the document mentions [I].
_CONTENT = "the extraction's content, archived inside result.json [I]"
INERT = inert(
    {
        "job.id": "the job's id",
        "job.job_id": "the job's id",
        "job.status": "a status word",
        "job.type": "the kind of job (extraction, chunking...)",
        "job.created_at": "a time",
        "job.updated_at": "a time",
        "job.pdf_name": "the source document's name; file_url serves it",
        "job.pdf_hash": "the source document's digest",
        "job.user_id": "the owner's id",
        "job.error": "Unsiloed's error text",
        "result_json.job_id": "the job's id",
        "result_json.status": "a status word",
        "result_json.file_name": "the source document's name; file_url serves it",
        "result_json.created_at": "a time",
        "result_json.updated_at": "a time",
        "result_json.metadata.page_count": "a count",
        "result_json.metadata.order": "the reading order used",
        "result_json.metadata.schema": "the user's extraction schema: " + _CONTENT,
        "result_json.result": _CONTENT,
        "result_json.data": _CONTENT,
    }
)

FACTS = {
    "X-API-Key rather than the FAQ's Authorization: Bearer [I]": "X-API-Key is sent, as "
    "every jobs page shows",
    "a job in review may still change [I]": "review is not terminal: such a job is left alone",
    "pdf_hash is the digest of the bytes file_url serves [I]": "the archived source is "
    "checked against it; a mismatch keeps the job, the safe direction",
    "the shape of an error body [?]": "detail, error and message are read; a 404 means gone "
    "only in one of them",
    "what /result answers before completion [?]": "never asked before completed",
    "whether a 429 carries Retry-After [?]": "without it the client backs off exponentially",
    "the extracted values and schema name no stored file [I]": "declared inert: they are "
    "archived inside result.json",
}

SPEC = ProviderSpec(
    type="unsiloed",
    title="Unsiloed's vision API",
    settings=UnsiloedSettings,
    adapter="worker.providers.unsiloed:UnsiloedProvider",
    simulator="worker.simulators.seed:UNSILOED",
    inert=INERT,
    facts=FACTS,
    # The standard plan's documented limit; professional plans allow 1000/minute.
    default_rate_limit="100/minute",
    lists_jobs=False,
)
