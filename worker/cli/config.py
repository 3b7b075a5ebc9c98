"""`retention config`: the configuration the worker runs with, a file checked offline, and
the file's JSON Schema."""

from __future__ import annotations

from pathlib import Path

import click

from worker import exits
from worker.cli.context import Context, pass_ctx
from worker.cli.errors import handle_errors
from worker.cli.options import json_option, output_format
from worker.render.view import show


@click.group("config")
def config_group() -> None:
    """See the configuration the worker runs with, and check a file, offline.

    \b
    Example:
      retention config validate /etc/retention.toml
      retention config show
      retention config schema > retention.schema.json
    """


@config_group.command("validate")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--allow-unset",
    is_flag=True,
    help="Let ${NAME} references to unset variables pass, unchecked (in CI, where the "
    "secrets are not).",
)
@json_option
@pass_ctx
@handle_errors
def config_validate(ctx: Context, file: Path | None, allow_unset: bool, as_json: bool) -> int:
    """Check a configuration file without touching the network: TOML syntax, types, unknown
    keys, ${NAME} references, KEY_file files, RETENTION_* overrides and RETENTION_SECRETS_DIR.
    Once those pass, each schedule is built as Celery beat builds it, and must come round.
    Names every problem, each with its key; exits 2 if there is any.

    FILE defaults to --config, then $RETENTION_CONFIG.

    \b
    Example:
      retention config validate /etc/retention.toml
      retention config validate --allow-unset deploy/retention.toml   # in CI
    """
    from worker.config_view import validate
    from worker.render.config import ValidationView
    from worker.settings import config_path

    found = validate(config_path(file or ctx.config), allow_unset=allow_unset)
    show(ValidationView(found), output_format(as_json=as_json))
    return exits.OK if found.ok else exits.USAGE


@config_group.command("show")
@json_option
@pass_ctx
@handle_errors
def config_show(ctx: Context, as_json: bool) -> None:
    """Print the configuration the worker runs with: each provider's effective policy (its
    own keys over [defaults]) and keys, and the archive, ledger, broker, downloads, worker
    and metrics sections, after RETENTION_* overrides, ${NAME} references and secret files.
    Credentials and URL passwords are shown as ********.

    \b
    Example:
      retention config show
      retention config show --json | jq '.providers.daily.retain_days'
    """
    from worker.config_view import effective_config
    from worker.render.config import ConfigView
    from worker.settings import config_path

    document = effective_config(ctx.settings, source=config_path(ctx.config))
    show(ConfigView(document), output_format(as_json=as_json))


@config_group.command("schema")
@handle_errors
def config_schema() -> None:
    """Print the JSON Schema of the configuration file, for editors (Taplo, Even Better
    TOML, check-jsonschema). config/retention.schema.json is this output.

    \b
    Example:
      retention config schema > retention.schema.json
    """
    from worker.config_view import schema_text

    click.echo(schema_text(), nl=False)


@click.command("init")
@click.argument("providers", nargs=-1, required=True, metavar="PROVIDER...")
@click.option("--bucket", required=True, help="The S3 bucket the archive goes to.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("retention.toml"),
    show_default=True,
    help="The file to write.",
)
@click.option("--force", is_flag=True, help="Replace the file if it exists.")
@json_option
@handle_errors
def init(providers: tuple[str, ...], bucket: str, output: Path, force: bool, as_json: bool) -> int:
    """Write a first configuration for the providers named, then check it as
    `retention config validate` does, and print the next three commands.

    Name each PROVIDER by its type (daily, loom, huawei_mpc, unsiloed, datocms), or
    NAME=TYPE for a second account of a type. Every credential, and every key only you know
    (Loom's team URL), is a ${NAME} reference to an environment variable: none is written
    into the file. It starts with read_only = true: sweeps archive and delete nothing until
    you turn it off.

    \b
    Example:
      retention init daily unsiloed --bucket my-archive
      retention init daily daily_eu=daily --bucket my-archive -o /etc/retention.toml
    """
    from worker.config_init import starter_config
    from worker.config_view import validate
    from worker.errors import ConfigError
    from worker.render.config import InitView

    if output.exists() and not force:
        raise ConfigError(f"{output} exists", hint="Pass --force to replace it, or -o PATH")
    starter = starter_config(providers, bucket=bucket, folder=output.parent)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(starter.text, encoding="utf-8")
    found = validate(output, allow_unset=True)
    show(InitView(output, starter, found), output_format(as_json=as_json))
    return exits.OK if found.ok else exits.USAGE
