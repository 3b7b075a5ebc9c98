"""Loom Analytics' Claudio transcription API, declared: its settings, the inert fields of its
job details, the facts its documents leave open, and its spec (shared/providers.md section 2;
seed 001). The adapter is ``worker/providers/loom.py``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from worker.specs.inert import inert
from worker.specs.spec import ProviderCommon, ProviderSpec


class LoomSettings(ProviderCommon):
    """Loom Analytics' Claudio transcription API (providers.md section 2)."""

    type: Literal["loom"]
    # Per team, handed out by the team admin; there is no public default.
    base_url: str
    # Both travel in the JSON body of every call, never in a URL or header.
    key: SecretStr
    secret: SecretStr
    # Loom documents about 30 s for a details call.
    timeout: float = Field(default=60.0, gt=0)


# The output_files keys Loom documents: lists of files, and one link.
OUTPUT_LISTS = ("transcripts", "processed_input_media")
# The fields of Loom's job details (seed 001) that name no data its delete destroys: the
# delete removes every file, so only what describes the job or a file already archived.
_FILE_FACTS = {
    "filename": "the name of the file its download_url serves, archived under that name",
    "file_type": "the kind of file (audio, attachment) beside it",
    "file_subtype": "the kind of output (final_transcript) beside it",
    "file_size": "the size of the file beside it",
    "language_code": "the language of the transcript beside it",
}
INERT = inert(
    {
        "success": "whether the call succeeded",
        "msg": "Loom's message about the call",
        "err_code": "Loom's error code",
        "job_data.job_info.job_reference_id": "the job's id",
        "job_data.job_info.job_name": "the name the user gave the job",
        "job_data.job_info.status": "a status word",
        "job_data.job_info.profile_name": "the transcription profile's name",
        "job_data.job_info.submitted_at": "a time",
        "job_data.job_info.completed_at": "a time",
        "job_data.job_info.total_audio_length": "a duration in seconds",
        "job_data.job_info.is_blank_audio": "a flag",
        "job_data.job_info.error_message": "Loom's error text",
        **{f"job_data.job_files.input_files[*].{k}": why for k, why in _FILE_FACTS.items()},
        **{
            f"job_data.job_files.output_files.{section}[*].{k}": why
            for section in OUTPUT_LISTS
            for k, why in _FILE_FACTS.items()
        },
    }
)

FACTS = {
    "the API's host [?]": "handed out per team by its admin: base_url has no default",
    "details and delete are POSTs [I]": "every call is a POST, the credentials in its body",
    "a list endpoint [?]": "none: jobs come from `retention track`",
    "job_info.status words other than 'completed' [?]": "ignored: the msg prefix and "
    "output_files decide the status",
    "the format of completed_at [?]": "read when it parses; otherwise the retention clock "
    "starts at the worker's first sighting",
    "how long download links last [?]": "the details are read again for fresh links before "
    "each download",
    "'Job data not found' (ERR_C_TA_DJTA_001) comes with a 400 [I]": "read from the "
    "body of a 200 or a 400 alike",
    "a rate limit [?]": "none documented: the default rate_limit is a gentle 5/second",
}

SPEC = ProviderSpec(
    type="loom",
    title="Loom Analytics' Claudio transcription API",
    settings=LoomSettings,
    adapter="worker.providers.loom:LoomProvider",
    simulator="worker.simulators.seed:LOOM",
    inert=INERT,
    facts=FACTS,
    # Loom documents no rate limit [?]; a gentle default, configurable.
    default_rate_limit="5/second",
    lists_jobs=False,
)
