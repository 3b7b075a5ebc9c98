"""Huawei Cloud Media Processing Center, declared: its settings, the inert fields of a
transcoding task, the facts its documents leave open, and its spec (shared/providers.md
section 3; seed 002). The adapter is ``worker/providers/huawei_mpc.py``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from worker.specs.inert import inert
from worker.specs.spec import ProviderCommon, ProviderSpec


class HuaweiMpcSettings(ProviderCommon):
    """Huawei Cloud Media Processing Center transcoding tasks (providers.md section 3)."""

    type: Literal["huawei_mpc"]
    # https://mpc.{region}.myhuaweicloud.com: the region must match the project's.
    base_url: str
    project_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    # Either an IAM token (sent as X-Auth-Token)...
    token: SecretStr | None = None
    # ...or an access key pair, used to sign each request with SDK-HMAC-SHA256.
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    # Tasks per list page (1-100).
    page_size: int = Field(default=100, ge=1, le=100)

    @model_validator(mode="after")
    def _one_auth_mode(self) -> HuaweiMpcSettings:
        pair = self.access_key is not None, self.secret_key is not None
        if self.token is not None and any(pair):
            raise ValueError("set either token, or access_key and secret_key, not both")
        if self.token is None and not all(pair):
            raise ValueError("set token, or both access_key and secret_key")
        return self


# The fields of a task (Huawei's SDK, QueryTranscodingsTaskResponse) that name no data the
# delete destroys: it removes the task record; files are objects in the user's OBS [I].
_OBS = "an object in the user's own OBS bucket, which the delete does not touch [I]"
INERT = inert(
    {
        "task_id": "the task's id",
        "status": "a status word",
        "create_time": "a time",
        "end_time": "a time",
        "trans_template_id": "the ids of the transcoding templates used",
        "error_code": "MPC's result code",
        "description": "MPC's text about a failure",
        "tips": "MPC's hint about a low sample rate",
        "user_data": "the user's own text, kept in the manifest with the record",
        **{
            f"{field}.{part}": _OBS
            for field in ("input", "output", "thumbnail_output")
            for part in ("bucket", "location", "object", "file_name")
        },
        "output_file_name": "names of objects under output.object: " + _OBS,
        "thumbnail_outputname": "the screenshot archive's name under output.object: " + _OBS,
        "output_url": "the quality-check file's output path: " + _OBS,
        "pic_info[*].pic_name": "a screenshot's name: " + _OBS,
        "transcode_detail.multitask_info[*].template_id": "a template's id",
        "transcode_detail.multitask_info[*].error": "MPC's error for that template",
        # SourceInfo: duration, format, size, video and audio facts; no name or location.
        "transcode_detail.multitask_info[*].output_file": "the output's media facts",
        "transcode_detail.input_file": "the input's media facts",
    }
)

FACTS = {
    "the next list page is page + 1 [I]": "a page that repeats the one before is refused, so "
    "a server ignoring page cannot loop",
    "end_time is yyyymmddhhmmss in UTC [I]": "read as UTC: Beijing time would only start the "
    "retention clock later, the safe direction",
    "deleting a task's record leaves its outputs in the user's OBS bucket [I]": "the task "
    "record is archived, its OBS objects declared inert",
    "NEED_TO_BE_AUDIT is not final [I]": "a task in review runs; it is not deleted",
    "what the delete answers for a task MPC does not know [?]": "a 400 MPC.10202 or a 404 is "
    "confirmed by a lookup; only a task the lookup no longer finds is gone",
    "how throttling is answered, and any wait header [?]": "a 429 (API Gateway's [I]) is "
    "retried with backoff; rate_limit keeps under the documented 100 calls a minute",
}

SPEC = ProviderSpec(
    type="huawei_mpc",
    title="Huawei Cloud Media Processing Center",
    settings=HuaweiMpcSettings,
    adapter="worker.providers.huawei_mpc:HuaweiMpcProvider",
    simulator="worker.simulators.seed:HUAWEI_MPC",
    inert=INERT,
    facts=FACTS,
    # MPC's documented flow control: 100 calls a minute per tenant (providers.md 3(g)).
    default_rate_limit="100/minute",
    lists_jobs=True,
)
