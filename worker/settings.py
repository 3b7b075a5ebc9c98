"""Typed settings, validated once at start and passed down.

The configuration is one TOML file, named by ``--config PATH`` or ``RETENTION_CONFIG``.
Environment variables ``RETENTION_<SECTION>__<KEY>`` override its keys (for example
``RETENTION_PROVIDERS__DAILY__API_KEY``), and so do files named like them in
``RETENTION_SECRETS_DIR``. In a string, ``${NAME}`` is the environment variable NAME and
``${NAME:-default}`` falls back when it is unset or empty; a credential may be read from a
file with ``KEY_file = PATH``. A bad configuration raises one ``ConfigError`` that names every
offending key, all at once; the CLI prints it and exits with code 2.

This module imports no network client, so that loading settings stays cheap.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from worker.errors import ConfigError
from worker.redact import url_credentials

ENV_PREFIX = "RETENTION_"
CONFIG_ENV = "RETENTION_CONFIG"
# Provider names appear in S3 keys, Celery arguments, metric labels and environment variable
# names (where a hyphen is not allowed), so they are held to the narrowest useful alphabet.
PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CRON_FIELD = re.compile(r"^[0-9a-zA-Z*/,-]+$")
# Storage classes whose objects cannot be read until a RestoreObject has finished.
COLD_STORAGE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
_RATE = re.compile(r"^\s*\d+\s*(/|per)\s*(\d+\s*)?(second|minute|hour|day|s|m|h|d)s?\s*$")


class _Strict(BaseModel):
    # A misspelt key is an error, not a silently ignored line: a typo in `retain_days` must not
    # fall back to a default that deletes sooner than the policy says.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_cron(value: str | None) -> str | None:
    if value is None:
        return None
    fields = value.split()
    if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
        raise ValueError(
            "must be a five-field cron expression such as '0 * * * *' "
            "(minute hour day-of-month month day-of-week)"
        )
    return " ".join(fields)


def _check_rate(value: str | None) -> str | None:
    if value is not None and not _RATE.match(value):
        raise ValueError("must look like '20/second', '100/minute' or '60 per 3 seconds'")
    return value


class ArchiveSettings(_Strict):
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    # MinIO and most S3-compatible servers want path-style requests.
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    # botocore 1.36 began sending CRC checksums by default; several S3-compatible servers
    # reject them. "when_required" sends only what the operation requires plus Content-MD5.
    checksum_mode: Literal["when_supported", "when_required"] = "when_supported"
    # Smallest multipart part. The uploader grows it for large known sizes so an object never
    # needs more than 10,000 parts.
    part_size_mib: int = Field(default=8, ge=5, le=5120)
    # Parts uploaded at once per file: up to (this + 1) x part size of buffers per upload.
    max_concurrency: int = Field(default=4, ge=1, le=64)
    # Most memory the part buffers of all uploads of one Archive (one process) may hold
    # together, the parts being filled included, however many jobs archive at once
    # (worker/archive/buffers.py). When parts grow (very large or unknown-size outputs), fewer
    # go in flight; one part always uploads while the next fills, so parts above half of this
    # cost 2 x part.
    max_buffer_mib: int = Field(default=64, ge=10, le=65536)
    # Never overwrite an archived object: every write carries IfNoneMatch="*". A resumed job
    # that finds its own earlier copy (same bytes) keeps it; different bytes stop the job.
    if_none_match: bool = True
    # Object Lock retention on every archived object (the bucket must have Object Lock on).
    object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] | None = None
    object_lock_days: int | None = Field(default=None, ge=1, le=36500)
    # SSE-KMS: a key id, alias or ARN; objects are written with ServerSideEncryption=aws:kms.
    sse_kms_key_id: str | None = None
    # The AWS account that must own the bucket (defends against a deleted-and-recreated one).
    expected_bucket_owner: str | None = Field(default=None, pattern=r"^[0-9]{12}$")
    # Archived files: STANDARD, STANDARD_IA, GLACIER_IR, GLACIER, DEEP_ARCHIVE...; the
    # bucket's default when unset. The delete gate only HEADs files, so any class works.
    storage_class: str | None = Field(default=None, pattern=r"^[A-Z_]{2,40}$")
    # manifest.json and deletion.json: the delete gate and `retention restore` read them back,
    # so they stay in a class that can be read at once (a GET of a GLACIER object fails until
    # a restore finishes, and that kept every job at the provider).
    manifest_storage_class: str = Field(default="STANDARD", pattern=r"^[A-Z_]{2,40}$")
    # How a stored object is proven to hold the bytes streamed: "auto" takes the server's
    # stored checksum, else an ETag of a recomputable form, else reads the object back;
    # "checksum" and "etag" accept only that proof; "read_back" always reads it back.
    verify: Literal["auto", "checksum", "etag", "read_back"] = "auto"
    # How the delete gate confirms, right before each delete, that the manifest and every file
    # are still stored as verified (size and ETag, at the verified version): "list" reads one
    # listing of the job's folder (ListObjectsV2, or ListObjectVersions when versions were
    # recorded); "head" sends one HEAD per object. A listing must be strongly consistent, as on
    # AWS S3 (since December 2020), MinIO, Ceph RGW, R2 and GCS; set "head" for a server whose
    # listings may lag behind its writes and deletes.
    gate_check: Literal["list", "head"] = "list"
    # `retention restore` of a file in GLACIER or DEEP_ARCHIVE starts a RestoreObject at this
    # tier, and the thawed copy stays readable this many days.
    restore_tier: Literal["Standard", "Bulk", "Expedited"] = "Standard"
    restore_days: int = Field(default=7, ge=1, le=365)

    @model_validator(mode="after")
    def _lock_pair(self) -> ArchiveSettings:
        if (self.object_lock_mode is None) != (self.object_lock_days is None):
            raise ValueError("object_lock_mode and object_lock_days go together")
        return self

    @field_validator("manifest_storage_class")
    @classmethod
    def _readable_class(cls, v: str) -> str:
        if v in COLD_STORAGE_CLASSES:
            raise ValueError(
                "must be a class that can be read at once (STANDARD, STANDARD_IA, GLACIER_IR...): "
                "the delete gate reads every manifest back before a delete"
            )
        return v

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, v: str) -> str:
        if not _S3_BUCKET.match(v) or ".." in v:
            raise ValueError("is not a valid S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if v.startswith("/") or any(seg in (".", "..") for seg in v.split("/")):
            raise ValueError("must be a relative key prefix such as 'archive/'")
        return v


class LedgerSettings(_Strict):
    # May carry credentials (a password, ?password=, ?sslpassword=), so it stays out of reprs;
    # the redactor also knows them (Settings.secret_values).
    url: str = Field(default="sqlite:///retention.db", repr=False)
    # Bring the schema up to date when a command first opens the ledger. Several processes
    # may start at once; PostgreSQL upgrades are serialised with an advisory lock.
    auto_migrate: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        return v


class BrokerSettings(_Strict):
    url: str = Field(default="redis://127.0.0.1:6379/0", repr=False)
    # The Celery queue. Two deployments sharing one Redis keep apart by using different names.
    queue: str = Field(default="retention", pattern=r"^[A-Za-z0-9_.-]{1,100}$")


class DefaultsSettings(_Strict):
    retain_days: int = Field(default=7, ge=0)
    schedule: str = "0 * * * *"
    # A brake, like rclone's --max-delete: a sweep stops starting deletes past this many.
    max_deletes_per_sweep: int = Field(default=1000, ge=1)
    # Archive but never delete, everywhere (Velero's read-only storage location).
    read_only: bool = False
    # Jobs processed at once by one `retention sweep` process, per provider. A job mostly
    # waits on its provider; the uploads' memory is bounded by max_buffer_mib, not by this.
    concurrency: int = Field(default=8, ge=1, le=64)
    # A delete is sent only on a read of the job at the provider no older than this, taken
    # under the same claim, that lists nothing its archive lacks. The read that led to the
    # archive counts while it is this fresh; an archive that took longer (or one from an
    # earlier sweep) costs one more read before the delete.
    max_read_age_seconds: int = Field(default=300, ge=1, le=3600)

    _cron = field_validator("schedule")(_check_cron)


class DownloadSettings(_Strict):
    # true allows http:// and loopback/private addresses in URLs that providers hand out
    # (local simulators, MinIO); the default is https to public addresses only.
    allow_private_networks: bool = False
    connect_timeout: float = Field(default=10.0, gt=0)
    # Longest silence while a body streams. httpx applies it per read, not per file.
    read_timeout: float = Field(default=60.0, gt=0)
    # Wall-clock cap per file, which the per-read timeout alone cannot give.
    max_seconds: float = Field(default=6 * 3600.0, gt=0)
    max_redirects: int = Field(default=5, ge=0, le=20)


class WorkerSettings(_Strict):
    # Seconds the orchestrator waits between SIGTERM and SIGKILL (Kubernetes: 30 by default).
    # Celery's soft shutdown finishes running jobs within a few seconds less, so a stopped
    # worker hands its unfinished messages back instead of losing them mid-step.
    grace_period_seconds: float = Field(default=30.0, ge=5)
    # How long a job's claim outlives a worker that died holding it. A heartbeat renews it
    # every third of that while the job runs, so it bounds the wait before another worker
    # takes over after a crash, not a job's length. At most a minute (a Kubernetes lease is
    # 15 s): a dead holder must not block a job for longer.
    job_lease_seconds: float = Field(default=30.0, ge=1, le=60)
    # The same for a sweep's lease on its provider (under Celery it is also kept below the
    # schedule period).
    sweep_lease_seconds: float = Field(default=30.0, ge=1, le=60)
    # Liveness: the worker's consumer and beat's scheduler each renew a file in this directory
    # (worker.heartbeat, beat.heartbeat) every heartbeat_seconds, from the loop that does the
    # work; `python -m worker.heartbeat FILE --max-age N` is the probe that reads it (deploy/).
    # Unset: no heartbeat is written.
    heartbeat_dir: str | None = None
    heartbeat_seconds: float = Field(default=10.0, ge=0.2, le=60)


class MetricsSettings(_Strict):
    # The Celery worker serves Prometheus metrics on this port (path /metrics).
    enabled: bool = True
    port: int = Field(default=9808, ge=1, le=65535)
    address: str = "0.0.0.0"  # noqa: S104 - scraped from outside the container
    # The ledger's gauges (jobs by state, overdue, failed...) count the whole jobs table: a
    # worker reads them at most this often (and again as soon as a sweep ends).
    ledger_cache_seconds: float = Field(default=15.0, ge=0, le=3600)
    # For `retention sweep` run from cron, which serves nothing: at the end of each run its
    # metrics are written to this file, for node_exporter's textfile collector (which reads
    # only *.prom files), added to what the previous runs wrote.
    textfile: str | None = None
    # ... and/or pushed to this Pushgateway (http:// or https://, user:password@ allowed),
    # group job="retention-worker". A secret: it may carry credentials.
    pushgateway_url: SecretStr | None = None

    @field_validator("textfile")
    @classmethod
    def _textfile(cls, v: str | None) -> str | None:
        if v is not None and not v.endswith(".prom"):
            raise ValueError("must end in .prom: node_exporter's textfile collector reads no other")
        return v

    @field_validator("pushgateway_url")
    @classmethod
    def _pushgateway(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v


class ProviderCommon(_Strict):
    """Keys every provider accepts. ``None`` means "take it from [defaults]"."""

    base_url: str
    retain_days: int | None = Field(default=None, ge=0)
    schedule: str | None = None
    max_deletes_per_sweep: int | None = Field(default=None, ge=1)
    read_only: bool | None = None
    concurrency: int | None = Field(default=None, ge=1, le=64)
    max_read_age_seconds: int | None = Field(default=None, ge=1, le=3600)
    # Requests per period to this provider's API, e.g. "20/second".
    rate_limit: str | None = None
    # Seconds to wait for one API answer.
    timeout: float = Field(default=30.0, gt=0)
    # Sections of the provider's job record that the operator accepts losing, by name (for
    # Daily an `output` section such as "recording", for Loom an `output_files` key, for
    # Unsiloed "file_url", its source document). Files they name are neither archived nor a
    # reason to keep the job. Without this, a job whose record names a file the worker does
    # not recognise is kept at the provider.
    ignore_outputs: list[str] = Field(default_factory=list)
    # The memory parsing one of its JSON answers may take (MiB), counted on the answer's
    # bytes before it is parsed (providers.parsing.parse_cost, an upper bound): an answer that
    # could take more is refused unparsed and the job stays at the provider. With the body
    # itself, one answer costs at most its size cap (16 MiB; Unsiloed's max_result_mib) plus
    # this. Genuine answers count 3 (long texts) to 30 (compact small objects) times their
    # size.
    max_parse_mib: int = Field(default=256, ge=1, le=65536)

    _cron = field_validator("schedule")(_check_cron)
    _rate = field_validator("rate_limit")(_check_rate)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://api.daily.co/v1")
        if parts.query or parts.username or parts.password:
            raise ValueError("must not carry a query string or credentials")
        return v.rstrip("/")

    def default_rate_limit(self) -> str:
        return "10/second"

    def secret_values(self) -> tuple[str, ...]:
        """This account's credentials, to keep out of messages."""
        values = (getattr(self, name) for name in type(self).model_fields)
        return tuple(v.get_secret_value() for v in values if isinstance(v, SecretStr))


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

    def default_rate_limit(self) -> str:
        # Daily's documented tier for "most endpoints" is 20 requests per second; the batch
        # processor is not named in that table, so this is an inference (providers.md 1(g)).
        return "20/second"


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

    def default_rate_limit(self) -> str:
        # Loom documents no rate limit [?]; a gentle default, configurable.
        return "5/second"


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

    def default_rate_limit(self) -> str:
        # MPC's documented flow control: 100 calls a minute per tenant (providers.md 3(g)).
        return "100/minute"


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

    def default_rate_limit(self) -> str:
        # The standard plan's documented limit; professional plans allow 1000/minute.
        return "100/minute"


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
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://stream.mux.com")
        if parts.query or parts.username or parts.password:
            raise ValueError("must not carry a query string or credentials")
        return v.rstrip("/")

    def default_rate_limit(self) -> str:
        # DatoCMS's documented default is 60 requests per 3 seconds (plan-dependent).
        return "60 per 3 seconds"


ProviderSettings = Annotated[
    DailySettings | LoomSettings | HuaweiMpcSettings | UnsiloedSettings | DatoCmsSettings,
    Field(discriminator="type"),
]


class Settings(_Strict):
    archive: ArchiveSettings
    ledger: LedgerSettings = LedgerSettings()
    broker: BrokerSettings = BrokerSettings()
    defaults: DefaultsSettings = DefaultsSettings()
    downloads: DownloadSettings = DownloadSettings()
    worker: WorkerSettings = WorkerSettings()
    metrics: MetricsSettings = MetricsSettings()
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)

    @field_validator("providers")
    @classmethod
    def _provider_names(cls, v: dict[str, ProviderSettings]) -> dict[str, ProviderSettings]:
        for name in v:
            if not PROVIDER_NAME.match(name):
                raise ValueError(
                    f"provider name {name!r} must be lowercase letters, digits and '_', "
                    "starting with a letter"
                )
        return v

    def provider(self, name: str) -> ProviderSettings:
        try:
            return self.providers[name]
        except KeyError:
            known = ", ".join(sorted(self.providers)) or "none"
            raise ConfigError(
                f"no provider named {name!r} in the configuration (configured: {known})",
                hint="Add a [providers.NAME] table or check the spelling",
            ) from None

    def policy(self, name: str) -> ProviderPolicy:
        p = self.provider(name)
        d = self.defaults
        return ProviderPolicy(
            name=name,
            type=p.type,
            retain_days=d.retain_days if p.retain_days is None else p.retain_days,
            schedule=p.schedule or d.schedule,
            max_deletes_per_sweep=p.max_deletes_per_sweep or d.max_deletes_per_sweep,
            read_only=d.read_only or bool(p.read_only),
            concurrency=p.concurrency or d.concurrency,
            rate_limit=p.rate_limit or p.default_rate_limit(),
            max_read_age_seconds=p.max_read_age_seconds or d.max_read_age_seconds,
        )

    def overdue_terms(self) -> tuple[dict[str, int], set[str]]:
        """What ``retention status`` and the overdue gauge judge by: each provider's
        ``retain_days``, and the ``read_only`` providers, whose archived jobs wait on purpose."""
        policies = [self.policy(name) for name in self.providers]
        return {p.name: p.retain_days for p in policies}, {p.name for p in policies if p.read_only}

    def secret_values(self) -> set[str]:
        """Every credential in the configuration, for the log redactor: each secret, and each
        credential inside a URL (a password, ``?password=``, ``?token=``...), as written and as
        the driver decodes it, whichever key holds the URL."""
        found: set[str] = set()
        for value in _walk(self):
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if isinstance(value, SecretStr) and text:
                found.add(text)
            if isinstance(text, str) and "://" in text:
                found |= url_credentials(text)
        return found


@dataclass(frozen=True, slots=True)
class ProviderPolicy:
    """One provider's effective policy: its own keys over [defaults]."""

    name: str
    type: str
    retain_days: int
    schedule: str
    max_deletes_per_sweep: int
    read_only: bool
    concurrency: int
    rate_limit: str
    max_read_age_seconds: int = 300


def _walk(model: BaseModel) -> Iterator[Any]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        yield value
        if isinstance(value, BaseModel):
            yield from _walk(value)
        elif isinstance(value, dict):
            for item in value.values():
                if isinstance(item, BaseModel):
                    yield from _walk(item)


class _Loader(BaseSettings, Settings):
    """Settings read from the TOML file (passed as keyword arguments) under the environment
    and the secrets directory."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="forbid",
        frozen=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first, then files in RETENTION_SECRETS_DIR named like the environment
        # variables (RETENTION_PROVIDERS__DAILY__API_KEY), then the file. pydantic-settings'
        # nested source reads nested keys and skips Kubernetes' hidden ..data entries; its
        # plain SecretsSettingsSource only knows top-level fields.
        secrets = NestedSecretsSettingsSource(file_secret_settings, secrets_dir_missing="ok")
        return (env_settings, secrets, init_settings)


# -- loading --------------------------------------------------------------------------------

SECRETS_DIR_ENV = "RETENTION_SECRETS_DIR"
# ${NAME} and ${NAME:-default} anywhere in a string; $${ is a literal ${. A lone ${ that is
# neither is refused rather than kept: it is far more often a typo than a value.
_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}|\$\{")
# A credential read from a file (KEY_file) is a line or a few. Anything larger is the wrong
# file, and it is not read whole into memory, nor into a message.
MAX_SECRET_FILE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the configuration: which key, and what; never its value."""

    key: str
    message: str
    # "providers.daily.api_key refers to ..." reads on; "archive.bucket: is required" does not.
    sentence: bool = False

    def __str__(self) -> str:
        if not self.key:
            return self.message
        return f"{self.key}{' ' if self.sentence else ': '}{self.message}"


@dataclass(frozen=True)
class ConfigReport:
    """What reading a configuration found: valid settings, or every problem at once."""

    path: Path
    settings: Settings | None
    problems: tuple[Problem, ...]
    # References to unset variables that were let pass (``allow_unset``), by key.
    unchecked: tuple[str, ...] = ()

    def message(self) -> str:
        lines = [f"invalid configuration in {self.path}:"]
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


def config_path(explicit: str | os.PathLike[str] | None) -> Path:
    value = explicit or os.environ.get(CONFIG_ENV)
    if not value:
        raise ConfigError(
            "no configuration file given",
            hint=f"Pass --config PATH or set {CONFIG_ENV} (see config/retention.example.toml)",
        )
    return Path(value)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read, expand, override and validate the configuration, or raise one ConfigError that
    names every offending key."""
    report = read_config(path)
    if report.settings is None:
        raise ConfigError(report.message())
    return report.settings


def read_config(
    path: str | os.PathLike[str] | None = None, *, allow_unset: bool = False
) -> ConfigReport:
    """Read the file, expand its references and secret files, apply the environment and the
    secrets directory, and validate, collecting every problem rather than the first.

    Raises ConfigError only when there is no file to read (missing, unreadable, not TOML).
    ``allow_unset`` lets references to unset variables pass, unchecked (to validate a file
    where its secrets are not, as in CI). Nothing here touches the network.
    """
    file = config_path(path)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {file} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"configuration file {file} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {file} is not valid TOML: {exc}") from None
    expander = _Expander(os.environ, base=file.parent, allow_unset=allow_unset)
    data = expander.table(raw, (), Settings)
    problems = list(expander.problems)
    secrets_dir = _secrets_dir(problems)
    settings: Settings | None = None
    try:
        settings = _Loader(**data, _secrets_dir=secrets_dir)
    except ValidationError as exc:
        problems += [
            p
            for p in validation_problems(exc, renamed=expander.renamed)
            if not expander.broke(p.key)
        ]
    except SettingsError as exc:  # the secrets directory is too large, or not a directory
        problems.append(Problem(SECRETS_DIR_ENV, str(exc)))
    return ConfigReport(
        file,
        None if problems else settings,
        tuple(problems),
        tuple(sorted(expander.unchecked)),
    )


def _secrets_dir(problems: list[Problem]) -> Path | None:
    value = os.environ.get(SECRETS_DIR_ENV)
    if not value:
        return None
    path = Path(value)
    if not path.is_dir():
        problems.append(
            Problem(
                SECRETS_DIR_ENV,
                f"names {path}, which is not a directory: mount the secrets there, or unset it",
                sentence=True,
            )
        )
        return None
    return path


def credential_keys(model: type[BaseModel]) -> frozenset[str]:
    """The keys that may be read from a file (``KEY_file``): credentials, and the settings
    kept out of reprs because they may carry one (the ledger's and the broker's URLs)."""
    return frozenset(
        name
        for name, info in model.model_fields.items()
        if not info.repr or SecretStr in (info.annotation, *get_args(info.annotation))
    )


def _section_model(model: type[BaseModel] | None, key: str) -> type[BaseModel] | None:
    info = model.model_fields.get(key) if model is not None else None
    annotation = info.annotation if info is not None else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _provider_model(table: Any) -> type[BaseModel] | None:
    kind = table.get("type") if isinstance(table, dict) else None
    for cls in provider_classes():
        if get_args(cls.model_fields["type"].annotation)[0] == kind:
            return cls
    return None


class _Expander:
    """Expands ``${NAME}`` references and reads ``KEY_file`` files, walking the file's tables
    alongside the settings models, and notes every problem instead of stopping at one."""

    def __init__(self, environ: Mapping[str, str], *, base: Path, allow_unset: bool) -> None:
        self.environ = environ
        self.base = base
        self.allow_unset = allow_unset
        self.problems: list[Problem] = []
        # A key read from a file, by the key that named the file: errors name the latter.
        self.renamed: dict[str, str] = {}
        self.unchecked: set[str] = set()
        # Keys whose value could not be had: validation errors under them would only repeat.
        self._broken: set[str] = set()

    def broke(self, key: str) -> bool:
        return any(key == b or key.startswith(b + ".") for b in self._broken)

    def _problem(self, path: tuple[str, ...], message: str, *, sentence: bool = False) -> None:
        key = ".".join(path)
        self.problems.append(Problem(key, message, sentence))
        self._broken.add(key)

    def table(
        self, table: dict[str, Any], path: tuple[str, ...], model: type[BaseModel] | None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        fields = model.model_fields if model is not None else {}
        for key, value in table.items():
            here = (*path, key)
            if not path and key.startswith("_"):
                # pydantic-settings reads keyword arguments such as _env_file or _secrets_dir
                # as its own options: a file must not be able to set them.
                self._problem(here, _FRIENDLY["extra_forbidden"])
            elif model is Settings and key == "providers" and isinstance(value, dict):
                out[key] = {
                    name: self.value(provider, (*here, name), _provider_model(provider))
                    for name, provider in value.items()
                }
            elif (
                model is not None
                and key.endswith("_file")
                and key not in fields
                and key[: -len("_file")] in credential_keys(model)
            ):
                target = key[: -len("_file")]
                if target in table:
                    self._problem(here, f"give {target} or {key}, not both")
                    self._broken.add(".".join((*path, target)))
                    continue
                self.renamed[".".join((*path, target))] = ".".join(here)
                out[target] = self._read_file(self.value(value, here, None), here)
            else:
                out[key] = self.value(value, here, _section_model(model, key))
        return out

    def value(self, value: Any, path: tuple[str, ...], model: type[BaseModel] | None) -> Any:
        if isinstance(value, dict):
            return self.table(value, path, model)
        if isinstance(value, list):
            return [self.value(v, (*path, str(i)), None) for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            return self._expand(value, path)
        return value

    def _expand(self, text: str, path: tuple[str, ...]) -> str:
        found: list[str] = []

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if match.group(0) == "$${":
                return "${"
            if name is None:
                found.append(
                    "has a '${' that is no reference: write ${NAME} or ${NAME:-default}, "
                    "or $${ for a literal '${'"
                )
                return match.group(0)
            value = self.environ.get(name)
            if match.group(2) is not None:  # ${NAME:-default}: unset or empty takes it
                return value if value and value.strip() else match.group(3)
            if value is None or not value.strip():
                if self.allow_unset:
                    self.unchecked.add(".".join(path))
                    self._broken.add(".".join(path))
                elif value is None:
                    found.append(
                        f"refers to the environment variable {name}, which is not set: "
                        f"export {name} or write the value in the file"
                    )
                else:
                    # An empty line in an env file would otherwise pass every check here and
                    # fail only at the provider, as a wrong key.
                    found.append(
                        f"refers to the environment variable {name}, which is empty: give "
                        f"{name} a value, or remove the key to use its default"
                    )
                return match.group(0)
            return value

        expanded = _REFERENCE.sub(replace, text)
        for message in found:
            self._problem(path, message, sentence=message.startswith("refers"))
        return text if found else expanded

    def _read_file(self, name: Any, path: tuple[str, ...]) -> str:
        """A credential from a file (Docker and Kubernetes secrets): its text, trailing
        newlines stripped. A problem leaves an empty placeholder, reported once."""
        if not isinstance(name, str) or not name:
            self._problem(path, "must be the path of a file")
            return ""
        if self.broke(".".join(path)):
            return ""
        file = Path(name).expanduser()
        file = file if file.is_absolute() else self.base / file
        try:
            with file.open("rb") as handle:
                data = handle.read(MAX_SECRET_FILE + 1)
        except OSError as exc:
            self._problem(path, f"cannot read {file} ({exc.strerror or type(exc).__name__})")
            return ""
        if len(data) > MAX_SECRET_FILE:
            self._problem(
                path, f"{file} is over {MAX_SECRET_FILE // 1024} KiB: is it the right file?"
            )
            return ""
        try:
            text = data.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            self._problem(path, f"{file} is not UTF-8 text")
            return ""
        if not text.strip():
            self._problem(path, f"{file} is empty")
            return ""
        return text


def provider_classes() -> tuple[type[ProviderCommon], ...]:
    """The settings class of every provider type, read off the ProviderSettings union."""
    inner = get_args(ProviderSettings)[0]
    return get_args(inner) or (inner,)


_PROVIDER_TYPES = frozenset(
    get_args(cls.model_fields["type"].annotation)[0] for cls in provider_classes()
)

_FRIENDLY = {
    "extra_forbidden": "unknown key (check its spelling against config/retention.example.toml)",
    "missing": "is required",
    "union_tag_not_found": "needs a `type` key",
}


def validation_problems(
    exc: ValidationError, *, renamed: Mapping[str, str] | None = None
) -> list[Problem]:
    """Each offending key and what is wrong with it, without echoing any value (secrets).
    A key set by an environment variable says which."""
    problems = []
    renamed = renamed or {}
    overrides = {name.upper() for name in os.environ if name.upper().startswith(ENV_PREFIX)}
    for err in exc.errors(include_input=False, include_url=False):
        parts = [str(p) for p in err["loc"]]
        # A tagged union reports providers.NAME.TYPE.key; the type is noise to the reader.
        if len(parts) >= 3 and parts[0] == "providers" and parts[2] in _PROVIDER_TYPES:
            del parts[2]
        loc = ".".join(parts)
        message = _FRIENDLY.get(err["type"], err["msg"])
        if err["type"] == "union_tag_invalid":
            message = f"unknown provider type; expected one of {err['ctx']['expected_tags']}"
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        variable = ENV_PREFIX + "__".join(parts).upper()
        if variable in overrides:
            message += f" (set by {variable})"
        problems.append(Problem(renamed.get(loc, loc), message))
    return problems


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One message that names each offending key, without echoing any value (secrets)."""
    lines = [f"invalid configuration in {source}:"]
    lines += [f"  {problem}" for problem in validation_problems(exc)]
    return "\n".join(lines)
