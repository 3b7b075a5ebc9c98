"""What `retention config` shows: the effective configuration with its secrets masked, a
file's problems found offline, and the JSON Schema of the file (``render.config`` prints
them).

The effective configuration is what the worker runs with: the file, under the environment's
``RETENTION_*`` overrides and ``RETENTION_SECRETS_DIR``, references and ``KEY_file`` files
resolved, and ``[defaults]`` folded into each provider (``Settings.policy``). Credentials
(``SecretStr``) and every credential a driver reads from a URL (its password, and query
parameters such as ``password``, ``sslpassword`` or ``token``: ``redact.mask_url``) are shown
as ``********``; then every configured secret is replaced wherever else it might appear, as a
last defence.

The schema is pydantic's, of ``worker.settings.Settings``, with the ``KEY_file`` keys the
loader also accepts for credentials, so an editor neither flags them nor asks for the key
they replace.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from pydantic import BaseModel, SecretStr

from worker.config_expand import credential_keys
from worker.errors import ConfigError
from worker.json_types import JSONValue
from worker.redact import URL_MASK, mask_url
from worker.settings import (
    CONFIG_ENV,
    ENV_PREFIX,
    SECRETS_DIR_ENV,
    Problem,
    Settings,
    provider_classes,
    read_config,
)

MASK = URL_MASK
SECTIONS = ("archive", "ledger", "broker", "downloads", "worker", "metrics")
# The provider keys [defaults] supplies, shown first, as the policy resolves them.
POLICY_KEYS = (
    "retain_days",
    "schedule",
    "max_deletes_per_sweep",
    "read_only",
    "concurrency",
    "rate_limit",
)


def _shown(value: object) -> JSONValue:
    """A setting as plain data: credentials masked, URLs without their passwords."""
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, BaseModel):
        return {name: _shown(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {str(k): _shown(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_shown(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value)


def _unmasked(value: JSONValue, secrets: set[str]) -> JSONValue:
    """Every configured secret replaced, wherever it is (a secret that is also a bucket
    name, a URL's user name...): what is shown never carries one."""
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: _unmasked(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_unmasked(v, secrets) for v in value]
    return value


def overrides(environ: os._Environ[str] | dict[str, str] | None = None) -> list[str]:
    """The names of the environment variables that override the file's keys."""
    environ = os.environ if environ is None else environ
    sections = set(Settings.model_fields)
    found = []
    for name in environ:
        upper = name.upper()
        if upper in (CONFIG_ENV, SECRETS_DIR_ENV) or not upper.startswith(ENV_PREFIX):
            continue
        if upper[len(ENV_PREFIX) :].split("__", 1)[0].lower() in sections:
            found.append(upper)
    return sorted(found)


def effective_config(settings: Settings, *, source: Path) -> dict[str, JSONValue]:
    """The configuration the worker runs with, as plain data, secrets masked."""
    document: dict[str, JSONValue] = {
        "source": {
            "file": str(source),
            "environment_overrides": [*overrides()],
            "secrets_dir": os.environ.get(SECRETS_DIR_ENV) or None,
        }
    }
    for section in SECTIONS:
        document[section] = _shown(getattr(settings, section))
    providers: dict[str, JSONValue] = {}
    for name, provider in settings.providers.items():
        policy = dataclasses.asdict(settings.policy(name))
        own = _shown(provider)
        assert isinstance(own, dict)  # a model is shown as an object
        providers[name] = {
            "type": own.pop("type"),
            **{key: policy[key] for key in POLICY_KEYS},
            **{key: value for key, value in own.items() if key not in POLICY_KEYS},
        }
    document["providers"] = providers
    result = _unmasked(document, settings.secret_values())
    assert isinstance(result, dict)
    return result


@dataclasses.dataclass(frozen=True)
class Validation:
    """What checking a file found: its problems, each by key (none: it is valid), and the
    message a person reads; the references let pass unchecked, and its providers."""

    file: Path
    problems: tuple[Problem, ...]
    message: str = ""
    unchecked: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def validate(source: Path, *, allow_unset: bool = False) -> Validation:
    """`retention config validate`: the file read as the worker reads it, without the
    network; once that passes, each schedule built as Celery beat builds it, which must come
    round. A file that cannot be read, or is not TOML, is a problem like the others."""
    try:
        found = read_config(source, allow_unset=allow_unset)
        if found.settings is not None:
            # Beat's own schedule objects, which need Celery: built here, not in every
            # command that reads the settings.
            from worker.schedules import schedule_problems

            wrong = tuple(schedule_problems(found.settings))
            if wrong:
                found = dataclasses.replace(found, settings=None, problems=wrong)
    except ConfigError as exc:
        return Validation(source, (Problem("", str(exc)),), str(exc))
    return Validation(
        source,
        found.problems,
        found.message() if found.problems else "",
        found.unchecked,
        tuple(found.settings.providers) if found.settings else (),
    )


def schema() -> dict[str, JSONValue]:
    """The JSON Schema of the configuration file (draft 2020-12)."""
    document: dict[str, JSONValue] = Settings.model_json_schema()
    definitions = document["$defs"]
    assert isinstance(definitions, dict)
    models: list[type[BaseModel]] = [*provider_classes()]
    for info in Settings.model_fields.values():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            models.append(info.annotation)
    for model in models:
        definition = definitions.get(model.__name__)
        if isinstance(definition, dict):
            _add_file_keys(definition, sorted(credential_keys(model)))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "retention-worker configuration",
        "description": "The TOML file named by --config or RETENTION_CONFIG. Generated by "
        "`retention config schema`; a test keeps it equal to the code.",
        **{key: value for key, value in document.items() if key != "title"},
    }


def _add_file_keys(definition: dict[str, JSONValue], keys: list[str]) -> None:
    """``KEY_file`` next to each credential key; a required key may be given either way."""
    properties, required = definition["properties"], definition.get("required", [])
    assert isinstance(properties, dict)  # pydantic's schema of a model
    assert isinstance(required, list)
    either: list[JSONValue] = []
    for key in keys:
        properties[f"{key}_file"] = {
            "type": "string",
            "title": f"{key} from a file",
            "description": f"A file whose text is {key} (Docker and Kubernetes secrets), "
            "trailing newlines stripped; relative to the configuration file's folder. "
            f"Give {key} or {key}_file, not both.",
        }
        if key in required:
            required.remove(key)
            either.append({"oneOf": [{"required": [key]}, {"required": [f"{key}_file"]}]})
    if either:
        earlier = definition.get("allOf")
        definition["allOf"] = [*(earlier if isinstance(earlier, list) else []), *either]
    if "required" in definition and not required:
        del definition["required"]


def schema_text() -> str:
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"
