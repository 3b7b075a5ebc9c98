"""The configuration file's own conveniences, applied before validation: ``${NAME}`` and
``${NAME:-default}`` references to the environment, and credentials read from files
(``KEY_file = PATH``, as Docker and Kubernetes mount secrets).

``Expander`` walks the file's tables beside the settings models (a provider's table by its
``type``, through the registry), so it knows which keys are credentials, and notes every
problem instead of stopping at the first; ``worker/settings.py`` reports them with
pydantic's own, all at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import TypeAlias, get_args

from pydantic import BaseModel, SecretStr

from worker.specs import registry

# A value of the TOML file, as tomllib reads it.
TOMLValue: TypeAlias = (
    str | int | float | bool | datetime | date | time | list["TOMLValue"] | dict[str, "TOMLValue"]
)
UNKNOWN_KEY = "unknown key (check its spelling against config/retention.example.toml)"
# ${NAME} and ${NAME:-default} anywhere in a string; $${ is a literal ${. A lone ${ that is
# neither is refused rather than kept: it is far more often a typo than a value.
_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}|\$\{")
# A credential read from a file (KEY_file) is a line or a few. A larger one is the wrong
# file, and it is not read whole into memory, nor into a message.
MAX_SECRET_FILE = 64 * 1024


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


def _provider_model(table: TOMLValue) -> type[BaseModel] | None:
    kind = table.get("type") if isinstance(table, dict) else None
    spec = registry.REGISTRY.specs.get(kind) if isinstance(kind, str) else None
    return spec.settings if spec is not None else None


class Expander:
    """Expands ``${NAME}`` references and reads ``KEY_file`` files, walking the file's tables
    alongside the settings models, and notes every problem instead of stopping at one."""

    def __init__(self, environ: Mapping[str, str], *, base: Path, allow_unset: bool) -> None:
        self.environ = environ
        self.base = base
        self.allow_unset = allow_unset
        # Each problem found: (key, message, whether the message reads on from the key).
        self.problems: list[tuple[str, str, bool]] = []
        # A key read from a file, by the key that named the file: errors name the latter.
        self.renamed: dict[str, str] = {}
        self.unchecked: set[str] = set()
        # Keys whose value could not be had: validation errors under them would only repeat.
        self._broken: set[str] = set()

    def broke(self, key: str) -> bool:
        return any(key == b or key.startswith(b + ".") for b in self._broken)

    def _problem(self, path: tuple[str, ...], message: str, *, sentence: bool = False) -> None:
        key = ".".join(path)
        self.problems.append((key, message, sentence))
        self._broken.add(key)

    def table(
        self, table: dict[str, TOMLValue], path: tuple[str, ...], model: type[BaseModel] | None
    ) -> dict[str, TOMLValue]:
        out: dict[str, TOMLValue] = {}
        fields = model.model_fields if model is not None else {}
        for key, value in table.items():
            here = (*path, key)
            if not path and key.startswith("_"):
                # pydantic-settings reads keyword arguments such as _env_file or _secrets_dir
                # as its own options: a file must not be able to set them.
                self._problem(here, UNKNOWN_KEY)
            elif not path and key == "providers" and isinstance(value, dict):
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

    def value(
        self, value: TOMLValue, path: tuple[str, ...], model: type[BaseModel] | None
    ) -> TOMLValue:
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

    def _read_file(self, name: TOMLValue, path: tuple[str, ...]) -> str:
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
