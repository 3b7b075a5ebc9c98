"""DatoCMS upload tracks, declared: its settings, the inert members of a track resource, the
facts its documents leave open, and its spec (shared/providers.md section 5; seed 004). The
adapter is ``worker/providers/datocms.py``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from worker.settings_base import check_http_url
from worker.specs.inert import inert
from worker.specs.spec import ProviderCommon, ProviderSpec


class DatoCmsSettings(ProviderCommon):
    """DatoCMS upload tracks and asynchronous job results (providers.md section 5)."""

    type: Literal["datocms"]
    base_url: str = "https://site-api.datocms.com"
    api_token: SecretStr
    # A sandbox environment's name, sent as X-Environment; the primary one when unset.
    environment: str | None = None
    # Uploads whose tracks are listed at each sweep; tracks of other uploads are looked after
    # only when tracked by id (UPLOAD_ID/TRACK_ID).
    upload_ids: list[str] = Field(default_factory=list)
    # Mux's stream host, where a subtitle track's WebVTT is fetched (a public playback id's
    # text needs no credentials, and none are sent). ignore_outputs takes "audio_media"
    # (audio tracks, whose media cannot be archived, are deleted with their record only)
    # and "subtitles_media" (subtitle tracks are deleted without their text, none fetched).
    stream_base_url: str = "https://stream.mux.com"

    @field_validator("stream_base_url")
    @classmethod
    def _stream_base_url(cls, v: str) -> str:
        return check_http_url(v, "https://stream.mux.com")


# The members of a track resource (seed 004, shared/providers.md section 5) that name no data
# the delete destroys.
INERT = inert(
    {
        "id": "the track's id",
        "type": "the resource type (upload_track)",
        "attributes.type": "the kind of track (subtitles, audio)",
        "attributes.name": "the track's display name",
        "attributes.language_code": "a language",
        "attributes.closed_captions": "a flag",
        "attributes.status": "a status word",
        "attributes.error": "DatoCMS's reason for an errored track",
        "links": "JSON:API links to API resources, not files",
        "relationships": "JSON:API relationships to API resources (the upload), not files",
    }
)

FACTS = {
    "an upload's tracks come in one unpaginated list [I]": "the list is taken as whole",
    "the delete removes the track's media at Mux [I]": "a subtitle track's WebVTT is "
    "archived first; an audio track, whose media cannot be fetched, is kept unless "
    "ignore_outputs names audio_media",
    "a DatoCMS track id is Mux's text track id [I]": "the WebVTT is fetched from "
    "stream_base_url/{playback id}/text/{track id}.vtt",
    "an errored track has no media at Mux [I]": "its record is all that is archived",
    "whether the DELETE is ever answered synchronously [?]": "a 200 or 204 is taken as done",
    "whether a job result's id equals the job's [?]": "not checked; a payload naming another "
    "track is refused",
    "the HTTP status of each error code [?]": "the code and its transient flag decide; a 404 "
    "is gone only with NOT_FOUND",
    "polls of /job-results count against the rate limit [I]": "they take a token like any request",
}

SPEC = ProviderSpec(
    type="datocms",
    title="DatoCMS upload tracks",
    settings=DatoCmsSettings,
    adapter="worker.providers.datocms:DatoCmsProvider",
    simulator="worker.simulators.seed:DATOCMS",
    inert=INERT,
    facts=FACTS,
    # DatoCMS's documented default is 60 requests per 3 seconds (plan-dependent).
    default_rate_limit="60 per 3 seconds",
    lists_jobs=True,
)
