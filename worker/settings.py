"""Typed settings, validated once at start and passed down.

The configuration is one TOML file, named by ``--config PATH`` or ``RETENTION_CONFIG``.
Environment variables ``RETENTION_<SECTION>__<KEY>`` override its keys (for example
``RETENTION_PROVIDERS__DAILY__API_KEY``), and so do files named like them in
``RETENTION_SECRETS_DIR``. In a string, ``${NAME}`` is the environment variable NAME and
``${NAME:-default}`` falls back when it is unset or empty; a credential may be read from a
file with ``KEY_file = PATH`` (both applied by ``worker/config_expand.py``). A bad
configuration raises one ``ConfigError`` that names every offending key, all at once; the CLI
prints it and exits with code 2. Each provider's table is its spec's model
(``worker/specs/registry.py``).

This module imports no network client, so that loading settings stays cheap.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeAlias

from pydantic import (
    BaseModel,
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

from worker.config_expand import UNKNOWN_KEY, Expander
from worker.errors import ConfigError
from worker.redact import url_credentials
from worker.settings_base import PROVIDER_NAME
from worker.settings_base import Strict as _Strict
from worker.settings_base import check_cron as _check_cron
from worker.specs import registry
from worker.specs.spec import ProviderCommon

ENV_PREFIX = "RETENTION_"
CONFIG_ENV = "RETENTION_CONFIG"
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# Storage classes whose objects cannot be read until a RestoreObject has finished.
COLD_STORAGE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})


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
    # The Celery worker, and `retention exporter`, serve Prometheus metrics on this port (path
    # /metrics).
    enabled: bool = True
    port: int = Field(default=9808, ge=1, le=65535)
    address: str = "0.0.0.0"  # noqa: S104 - scraped from outside the container
    # The ledger's gauges (jobs by state, overdue, failed...) count the whole jobs table:
    # `retention exporter`, which alone serves them, reads them at most this often.
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


# The [providers.NAME] table: one of the registered providers' settings models, told apart by
# its `type` (worker/specs/registry.py). The union is built at run time, from the built-in
# providers and the installed plug-ins; the type checker sees what they have in common.
if TYPE_CHECKING:
    ProviderSettings: TypeAlias = ProviderCommon
else:
    ProviderSettings = registry.REGISTRY.settings_union()


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
            rate_limit=p.rate_limit or registry.spec(p.type).default_rate_limit,
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
            if isinstance(value, SecretStr) and isinstance(text, str) and text:
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


def _walk(model: BaseModel) -> Iterator[object]:
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
    expander = Expander(os.environ, base=file.parent, allow_unset=allow_unset)
    data = expander.table(raw, (), Settings)
    problems = [Problem(*found) for found in expander.problems]
    secrets_dir = _secrets_dir(problems)
    settings: Settings | None = None
    # The file's tables are the loader's keyword arguments, whatever their keys: pydantic
    # validates them, and reports every one it refuses.
    loader: Callable[..., Settings] = _Loader
    try:
        settings = loader(**data, _secrets_dir=secrets_dir)
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


def provider_classes() -> tuple[type[ProviderCommon], ...]:
    """The settings model of every registered provider type."""
    return tuple(spec.settings for spec in registry.specs())


_FRIENDLY = {
    "extra_forbidden": UNKNOWN_KEY,
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
        if len(parts) >= 3 and parts[0] == "providers" and parts[2] in registry.REGISTRY.specs:
            del parts[2]
        loc = ".".join(parts)
        message = _FRIENDLY.get(err["type"], err["msg"])
        if err["type"] == "union_tag_invalid":
            refusal = registry.REGISTRY.refused.get(str(err["ctx"]["tag"]))
            message = (
                f"provider type {refusal.type!r} is refused: {refusal.reason}"
                if refusal is not None
                else f"unknown provider type; expected one of {err['ctx']['expected_tags']}"
            )
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
