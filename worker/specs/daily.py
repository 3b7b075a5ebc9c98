"""Daily's Batch Processor, declared: its settings, the inert fields of its job record, the
facts its documents leave open, and its spec (shared/providers.md section 1; seed 000). The
adapter is ``worker/providers/daily.py``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from worker.specs.inert import inert
from worker.specs.spec import ProviderCommon, ProviderSpec


class DailySettings(ProviderCommon):
    """Daily's Batch Processor (providers.md section 1)."""

    type: Literal["daily"]
    base_url: str = "https://api.daily.co/v1"
    api_key: SecretStr
    # Buckets of the user's own that a Daily domain writes outputs to (batch_processor_bucket).
    # Daily's delete leaves those objects; the worker archives them, then removes them.
    custom_buckets: list[str] = Field(default_factory=list)
    # Where the custom buckets are served, when not by the archive's endpoint. Server-side
    # copy is used only when both share one endpoint.
    custom_bucket_endpoint_url: str | None = None
    # Jobs per list page; Daily allows at most 100.
    page_size: int = Field(default=100, ge=1, le=100)


# The fields of Daily's job record (seed 000) that name no data its delete destroys.
INERT = inert(
    {
        "id": "the job's id",
        "preset": "the preset the job was submitted with",
        "status": "the job's status word",
        "error": "Daily's error text",
        "input.sourceType": "the kind of source the user submitted",
        "input.recordingId": "the user's recording, which has a lifecycle of its own [I]",
        "input.uri": "the URL the user submitted; Daily never owned it",
        "output.*.format": "the file type of the output beside it",
        "output.*[*].format": "the file type of the output beside it",
    }
)

FACTS = {
    "the list shares Daily's cursor pagination (limit, starting_after) [I]": "the listing "
    "stops on a short page and refuses a cursor that does not advance; page_size sets the page",
    "the batch processor has the 20 requests/second tier of most endpoints [I]": "the default "
    "rate_limit; set rate_limit to change it",
    "a job Daily does not know answers 404 [I]": "404 means gone only with Daily's error body; "
    "a DELETE answered so is confirmed by a GET",
    "the delete answers 200 with the job [I]": "any 2xx is taken; a non-empty error in it is a "
    "partial delete, sent again",
    "access links are short-lived and have no documented lifetime [I]": "links are asked for "
    "right before each download",
    "whether access links serve outputs in a custom bucket [?]": "those outputs are read from "
    "the bucket itself (custom_buckets, custom_bucket_endpoint_url)",
    "what deleting a submitted or processing job does [?]": "never asked: only a terminal job "
    "is deleted",
    "a recording (input.recordingId) outlives the job's delete [I]": "declared inert: the "
    "delete is documented to remove the job and its outputs only",
}

SPEC = ProviderSpec(
    type="daily",
    title="Daily's Batch Processor",
    settings=DailySettings,
    adapter="worker.providers.daily:DailyProvider",
    simulator="worker.simulators.seed:DAILY",
    inert=INERT,
    facts=FACTS,
    # Daily's documented tier for "most endpoints" is 20 requests per second; the batch
    # processor is not named in that table, so this is an inference (providers.md 1(g)).
    default_rate_limit="20/second",
    lists_jobs=True,
)
