"""How `retention config` reads: the effective configuration as TOML in the file's own shape
(or its JSON), and what checking a file found."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

from worker.json_types import JSONValue
from worker.render.view import View

if TYPE_CHECKING:
    from pathlib import Path

    from worker.config_init import Starter
    from worker.config_view import Validation


class ConfigView(View):
    """The document of ``config_view.effective_config``."""

    message_type = "config_show"

    def __init__(self, document: dict[str, JSONValue]) -> None:
        self.config = document

    def lines(self) -> Iterator[str]:
        yield render_toml(self.config).removesuffix("\n")

    def fields(self) -> dict[str, object]:
        return {**self.config}


class ValidationView(View):
    message_type = "config_validate"

    def __init__(self, found: Validation) -> None:
        self.found = found

    def lines(self) -> Iterator[str]:
        found = self.found
        if found.problems:
            yield from found.message.splitlines()
            return
        yield f"{found.file}: valid; providers: {', '.join(found.providers) or 'none'}"
        if found.unchecked:
            yield f"  not checked (unset variables): {', '.join(found.unchecked)}"

    def fields(self) -> dict[str, object]:
        found = self.found
        return {
            "file": str(found.file),
            "ok": found.ok,
            "problems": [{"key": p.key, "message": p.message} for p in found.problems],
            "unchecked": list(found.unchecked),
            "providers": list(found.providers),
        }


class InitView(View):
    """A configuration `retention init` wrote: where, the variables it waits for (those not
    set yet first), and the next three commands."""

    message_type = "init"

    def __init__(self, path: Path, starter: Starter, found: Validation) -> None:
        self.path = path
        self.variables = starter.variables
        self.providers = starter.providers
        self.found = found

    @property
    def unset(self) -> list[str]:
        waiting = set(self.found.unchecked)
        return [name for name, key in self.variables.items() if key in waiting]

    def next_commands(self) -> list[str]:
        config = f"retention --config {self.path}"
        return [f"{config} config validate", f"{config} check", f"{config} sweep --dry-run"]

    def lines(self) -> Iterator[str]:
        if self.found.problems:
            yield f"wrote {self.path}, but it does not pass `retention config validate`:"
            yield from self.found.message.splitlines()[1:]
            return
        wrote = f"wrote {self.path} ({', '.join(self.providers)})"
        unset = self.unset
        if not unset:
            yield f"{wrote}; it passes `retention config validate`"
        else:
            yield f"{wrote}; it passes `retention config validate` once these are set:"
            width = max(len(name) for name in unset)
            for name in unset:
                yield f"  {name:<{width}}  {self.variables[name]}"
        yield "next:"
        for command in self.next_commands():
            yield f"  {command}"
        yield (
            "It archives but deletes nothing (read_only = true) until you set read_only = "
            "false in [defaults]."
        )

    def fields(self) -> dict[str, object]:
        return {
            "file": str(self.path),
            "ok": self.found.ok,
            "providers": list(self.providers),
            "problems": [{"key": p.key, "message": p.message} for p in self.found.problems],
            "variables": self.variables,
            "unset": self.unset,
            "next": self.next_commands(),
        }


def _toml_value(value: JSONValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # A JSON string is a TOML basic string: the same quotes and escapes.
    return json.dumps(str(value), ensure_ascii=False)


def _toml_table(name: str, table: JSONValue) -> list[str]:
    lines = [f"[{name}]"]
    for key, value in (table if isinstance(table, dict) else {}).items():
        if value is None:
            lines.append(f"# {key} is not set")
        elif isinstance(value, dict):
            lines.append(
                f"{key} = {{ "
                + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items())
                + " }"
            )
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return lines


def render_toml(document: dict[str, JSONValue]) -> str:
    """The effective configuration as TOML, in the file's own shape, with a header that
    says where it came from."""
    from worker.config_view import MASK, SECTIONS

    source, providers = document["source"], document["providers"]
    # Both are objects: effective_config makes them.
    assert isinstance(source, dict)
    assert isinstance(providers, dict)
    overridden = source["environment_overrides"]
    lines = [
        f"# The effective configuration: {source['file']}",
        "# with [defaults] folded into each provider, and references resolved.",
    ]
    if isinstance(overridden, list) and overridden:
        lines.append("# Overridden by " + ", ".join(map(str, overridden)) + ".")
    if source["secrets_dir"]:
        lines.append(f"# Secrets also read from {source['secrets_dir']}.")
    lines.append(f"# Secrets are shown as {MASK}.")
    for section in SECTIONS:
        lines += ["", *_toml_table(section, document[section])]
    for name, table in providers.items():
        lines += ["", *_toml_table(f"providers.{name}", table)]
    return "\n".join(lines) + "\n"
