"""`retention config`: the configuration the worker runs with, a file checked offline, and
the file's JSON Schema."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import click

from worker import exits
from worker.cli.context import Context, pass_ctx
from worker.cli.errors import handle_errors
from worker.cli.options import json_option, print_json


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
def config_validate(ctx: Context, file: Path | None, allow_unset: bool, as_json: bool) -> None:
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
    from worker.errors import ConfigError
    from worker.settings import config_path, read_config

    source = config_path(file or ctx.config)
    try:
        found = read_config(source, allow_unset=allow_unset)
        if found.settings is not None:
            # Beat's own schedule objects, which need Celery: built here, not in every
            # command that reads the settings.
            from worker.schedules import schedule_problems

            wrong = tuple(schedule_problems(found.settings))
            if wrong:
                found = dataclasses.replace(found, settings=None, problems=wrong)
    except ConfigError as exc:  # no file to read, or not TOML: a problem like the others
        problems = [{"key": "", "message": str(exc)}]
        lines = [str(exc)]
        unchecked: tuple[str, ...] = ()
        providers: list[str] = []
    else:
        problems = [{"key": p.key, "message": p.message} for p in found.problems]
        lines = found.message().splitlines() if found.problems else []
        unchecked = found.unchecked
        providers = list(found.settings.providers) if found.settings else []
    if as_json:
        print_json(
            {
                "file": str(source),
                "ok": not problems,
                "problems": problems,
                "unchecked": list(unchecked),
                "providers": providers,
            }
        )
    elif problems:
        for line in lines:
            click.echo(line)
    else:
        names = ", ".join(providers) or "none"
        click.echo(f"{source}: valid; providers: {names}")
        if unchecked:
            click.echo(f"  not checked (unset variables): {', '.join(unchecked)}")
    sys.exit(exits.USAGE if problems else exits.OK)


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
    from worker.config_view import effective_config, render_toml
    from worker.settings import config_path

    document = effective_config(ctx.settings, source=config_path(ctx.config))
    if as_json:
        print_json(document)
    else:
        click.echo(render_toml(document), nl=False)


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
