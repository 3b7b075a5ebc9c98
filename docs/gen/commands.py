"""The list of commands, from the click group itself (the reference page renders each in full
with mkdocs-click)."""

from __future__ import annotations

import click

from worker.cli import cli


def _walk(group: click.Group, prefix: str) -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    context = click.Context(group, info_name=prefix)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        if command is None or command.hidden:
            continue
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found.extend(_walk(command, path))
        else:
            found.append((path, command))
    return found


def commands_table() -> str:
    lines = ["| command | what it does |", "|---|---|"]
    for path, command in _walk(cli, "retention"):
        anchor = path.replace(" ", "-")
        summary = command.get_short_help_str(limit=200)
        lines.append(f"| [`{path}`](reference.md#{anchor}) | {summary} |")
    return "\n".join(lines) + "\n"
