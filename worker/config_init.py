"""`retention init`: a first configuration for the providers named, written from their specs
(``worker.specs.registry``: the built-in providers and installed plug-ins) and settings
models, so it never names a key the worker does not know.

For each provider it writes the table's ``type``, each key the model requires, and each
credential, every one of them a ``${NAME}`` reference to an environment variable
(``DAILY_API_KEY``): no secret is ever written into the file, and a key with no default that
only its owner knows (Loom's team URL) is a variable too. Where a model accepts one of several
sets of credentials (Huawei MPC: an access key pair, or a token), the largest set it accepts
is written and the others are shown commented out. The provider's optional keys follow,
commented out, with their defaults and the comments their model carries in its source.

The archive, the ledger and the defaults come first, commented for a first run: SQLite
beside the file, and ``read_only = true``, so the first real sweep archives and deletes
nothing until the operator has looked at the archive and turned it off.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import itertools
import json
import re
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import PydanticUndefined

from worker.errors import ConfigError
from worker.settings import ArchiveSettings
from worker.settings_base import PROVIDER_NAME
from worker.specs import registry
from worker.specs.spec import ProviderCommon, ProviderSpec

# Values for each required key while checking which credentials a model accepts together.
_PLACEHOLDERS = ("https://placeholder.invalid", "placeholder")
# Keys every provider table takes (ProviderCommon): the [defaults] section speaks for most.
_COMMON = frozenset(ProviderCommon.model_fields) - {"base_url"}


@dataclass(frozen=True, slots=True)
class Account:
    """One ``[providers.NAME]`` table to write: its name and its type's settings model."""

    name: str
    spec: ProviderSpec

    @property
    def type(self) -> str:
        return self.spec.type

    @property
    def model(self) -> builtins.type[ProviderCommon]:
        return self.spec.settings


@dataclass(frozen=True, slots=True)
class Starter:
    """The file's text, and the variables it refers to, each with the key that reads it."""

    text: str
    variables: dict[str, str]
    providers: tuple[str, ...]


def types() -> dict[str, ProviderSpec]:
    """Every provider type this installation knows (the registry's, plug-ins included)."""
    return {spec.type: spec for spec in registry.specs()}


def accounts(specs: Sequence[str]) -> list[Account]:
    """``daily`` (an account named for its type) or ``NAME=TYPE`` (``daily_eu=daily``), each;
    ConfigError naming every one that is not."""
    known = types()
    found: list[Account] = []
    problems: list[str] = []
    for spec in specs:
        name, _, type_ = spec.partition("=")
        type_ = type_ or name
        if type_ not in known:
            problems.append(f"{type_!r} is not a provider type (known: {', '.join(known)})")
        elif not PROVIDER_NAME.match(name):
            problems.append(
                f"{name!r} cannot name a provider: lowercase letters, digits and '_', "
                "starting with a letter"
            )
        elif any(a.name == name for a in found):
            problems.append(f"{name!r} is named twice (NAME=TYPE names a second account)")
        else:
            found.append(Account(name, known[type_]))
    if problems or not found:
        raise ConfigError(
            "; ".join(problems) or "name at least one provider",
            hint="Name each provider by its type, or NAME=TYPE for a second account",
        )
    return found


def field_comments(model: type[BaseModel]) -> dict[str, str]:
    """The comment written above each field in the model's source (and its bases'), which is
    where these models explain their keys; empty where the source cannot be read."""
    comments: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            lines, _ = inspect.getsourcelines(cls)
        except (OSError, TypeError):
            continue
        source = textwrap.dedent("".join(lines))
        body = ast.parse(source).body[0]
        text = source.splitlines()
        for node in getattr(body, "body", []):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                above: list[str] = []
                row = node.lineno - 2
                while row >= 0 and text[row].strip().startswith("#"):
                    above.insert(0, text[row].strip().lstrip("#").strip())
                    row -= 1
                if above:
                    comments[node.target.id] = " ".join(above)
    return comments


def _is_secret(info: Any) -> bool:
    return SecretStr in (info.annotation, *get_args(info.annotation))


def _variable(account: Account, key: str) -> str:
    return f"{account.name}_{key}".upper()


def _accepted_credentials(account: Account, required: Sequence[str]) -> tuple[str, ...]:
    """The largest set of optional credentials the model accepts beside the required keys
    (none, when it needs none)."""
    optional = [
        name
        for name, info in account.model.model_fields.items()
        if _is_secret(info) and not info.is_required()
    ]
    base = {"type": account.type, **_placeholders(account.model, required)}
    for size in range(len(optional), -1, -1):
        for chosen in itertools.combinations(optional, size):
            try:
                account.model.model_validate(base | dict.fromkeys(chosen, "x"))
            except ValidationError:
                continue
            return chosen
    return ()


def _placeholders(model: type[BaseModel], keys: Sequence[str]) -> dict[str, str]:
    """A value for each required key that passes its own checks (a URL, a project id's
    pattern), so that only the credentials decide whether the model accepts a set of them."""
    values = dict.fromkeys(keys, _PLACEHOLDERS[0])
    for candidate in _PLACEHOLDERS[1:]:
        try:
            model.model_validate(values)
        except ValidationError as exc:
            wrong = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            values |= {key: candidate for key in keys if key in wrong}
    return values


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, SecretStr):
        return '""'
    return json.dumps(value)


def _wrapped(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(
        text, width=92, initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# "
    )


def provider_table(account: Account, variables: dict[str, str]) -> Iterator[str]:
    """The ``[providers.NAME]`` table, adding the variables it refers to."""
    model = account.model
    comments = field_comments(model)
    fields = model.model_fields
    required = [n for n, info in fields.items() if info.is_required() and n != "type"]
    credentials = _accepted_credentials(account, required)
    yield f"[providers.{account.name}]"
    yield from _wrapped(account.spec.title)
    yield f'type = "{account.type}"'
    for name in [*required, *credentials]:
        variable = _variable(account, name)
        variables[variable] = f"providers.{account.name}.{name}"
        if name in comments:
            yield from _wrapped(comments[name])
        note = "  # required" if not _is_secret(fields[name]) else ""
        yield f'{name} = "${{{variable}}}"{note}'
    others = [n for n, info in fields.items() if _is_secret(info) and n not in credentials]
    others = [n for n in others if n not in required]
    if others:
        yield f"# Or, instead of {', '.join(credentials) or 'those'}:"
        for name in others:
            yield f'# {name} = "${{{_variable(account, name)}}}"'
    for name, info in fields.items():
        if name in required or name == "type" or _is_secret(info) or name in _COMMON:
            continue
        default = info.get_default(call_default_factory=True)
        if default is PydanticUndefined:
            continue
        if name in comments:
            yield from _wrapped(comments[name])
        shown = _toml(default) if default is not None else '"..."  # unset by default'
        yield f"# {name} = {shown}"
    yield ""


HEADER = """\
{title}
#
# Every secret here is a ${{NAME}} reference to an environment variable, never its value:
# set each variable named below before running a command (or the worker), or let
# RETENTION_SECRETS_DIR hold files named like RETENTION_PROVIDERS__DAILY__API_KEY.
# Check the file with `retention config validate FILE`; every key and its default is in
# `retention config schema` and config/retention.example.toml.

[archive]
# Your bucket: every output is copied here, and verified, before anything is deleted at a
# provider. S3 credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance or pod role).
bucket = {bucket}
prefix = "archive/"
# region = "eu-west-1"
# An S3-compatible server (MinIO, Ceph, R2...); leave out for AWS S3:
# endpoint_url = "https://minio.example.com"
# addressing_style = "path"
# Object Lock on every archived object (the bucket must have it on):
# object_lock_mode = "COMPLIANCE"
# object_lock_days = 2555

[ledger]
# What the worker knows of every job, and the audit trail: SQLite beside this file, unless
# LEDGER_URL names another. PostgreSQL ("postgresql+psycopg://user@host/db") when several
# hosts or Celery workers share the work.
url = {ledger}

# Celery's broker, a Redis: needed for `celery worker` and `celery beat`, and to keep two
# sweeps of one provider apart across hosts. A sweep run by hand needs none.
# [broker]
# url = "${{BROKER_URL}}"
# queue = "retention"

[defaults]
# Days a finished job stays at its provider before it is archived, verified and deleted.
retain_days = 7
# When Celery beat sweeps each provider (cron, UTC).
schedule = "0 * * * *"
# A brake: a sweep starts no more deletes than this.
max_deletes_per_sweep = 100
# Archive and verify, but delete nothing: a first run can only add to your bucket. Set it
# to false once `retention report` shows the archive holds what you expect.
read_only = true

"""


def starter_config(specs: Sequence[str], *, bucket: str, folder: Path) -> Starter:
    """The configuration `retention init` writes for ``specs`` (``daily``, ``eu=daily``),
    its SQLite ledger in ``folder``. ConfigError for an unknown type or a bad bucket name."""
    chosen = accounts(specs)
    try:
        ArchiveSettings(bucket=bucket)
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"--bucket {bucket!r} {message}") from None
    variables: dict[str, str] = {}
    title = "\n".join(
        _wrapped(
            "retention-worker: a first configuration for "
            + ", ".join(a.name for a in chosen)
            + ", written by `retention init`."
        )
    )
    ledger = _toml(f"${{LEDGER_URL:-sqlite:///{folder.resolve() / 'retention.db'}}}")
    header = HEADER.format(title=title, bucket=_toml(bucket), ledger=ledger)
    lines = [header.rstrip("\n"), ""]
    for account in chosen:
        lines.extend(provider_table(account, variables))
    text = "\n".join(lines)
    # Every reference the file makes, the defaults' aside, is a variable to set.
    assert set(re.findall(r"^\w+ = \"\$\{(\w+)\}\"", text, re.M)) <= set(variables)
    return Starter(text, variables, tuple(a.name for a in chosen))
