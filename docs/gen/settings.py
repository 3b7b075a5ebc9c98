"""The configuration reference, from the JSON Schema the settings models generate.

``config/retention.schema.json`` says, for every key, its type, default, range and whether
it is required (a test keeps the file equal to ``retention config schema``); ``settings.yaml``
beside this module says what each key means. The tables join the two, so the reference
always names exactly the keys the worker accepts: a key without a meaning, or a meaning for a
key the schema no longer has, is a ``GenerationError``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

from docs.gen import GenerationError

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "config" / "retention.schema.json"
MEANINGS = Path(__file__).with_name("settings.yaml")
# The meanings of the keys every provider type shares sit under this name in settings.yaml.
COMMON = "providers"
# A secret may also be read from a file named by KEY_file; its row says so instead of
# having a row of its own.
FILE_SUFFIX = "_file"

Json = dict[str, Any]


@dataclass(frozen=True)
class Meaning:
    text: str
    # Shown instead of the schema's default where that says little (None: "AWS S3").
    default: str | None = None


def load_schema(path: Path = SCHEMA) -> Json:
    return cast(Json, json.loads(path.read_text()))


def load_meanings(path: Path = MEANINGS) -> dict[str, dict[str, Meaning]]:
    raw = yaml.safe_load(path.read_text())
    meanings: dict[str, dict[str, Meaning]] = {}
    for section, keys in raw.items():
        meanings[section] = {}
        for key, value in keys.items():
            if isinstance(value, str):
                meanings[section][key] = Meaning(value.strip())
            else:
                meanings[section][key] = Meaning(value["meaning"].strip(), str(value["default"]))
    return meanings


class Reference:
    """The schema and the meanings, joined: one Markdown table per section and provider type."""

    def __init__(self, schema: Json, meanings: dict[str, dict[str, Meaning]]) -> None:
        self.schema = schema
        self.meanings = meanings
        self.used: set[tuple[str, str]] = set()

    # -- the schema's shape ------------------------------------------------------------------

    def definition(self, ref_or_def: Json) -> Json:
        ref = ref_or_def.get("$ref")
        if ref is None:
            return ref_or_def
        return cast(Json, self.schema["$defs"][ref.rsplit("/", 1)[-1]])

    def sections(self) -> list[str]:
        """The top-level tables, in the schema's order, the providers' last."""
        return [name for name in self.schema["properties"] if name != COMMON]

    def provider_types(self) -> dict[str, Json]:
        mapping = self.schema["properties"][COMMON]["additionalProperties"]["discriminator"]
        return {kind: self.definition({"$ref": ref}) for kind, ref in mapping["mapping"].items()}

    def common_keys(self) -> list[str]:
        """The keys every provider type has, in the order of the first type's definition."""
        definitions = list(self.provider_types().values())
        keys = [k for k in definitions[0]["properties"] if not k.endswith(FILE_SUFFIX)]
        shared = [k for k in keys if all(k in d["properties"] for d in definitions)]
        return sorted(shared, key=lambda k: k != "type")  # the type first, as a table starts

    def shared_default(self, key: str) -> bool:
        """Whether a common key has one definition across the types (``base_url`` has not)."""
        forms = {
            json.dumps(d["properties"][key], sort_keys=True) for d in self.provider_types().values()
        }
        return len(forms) == 1

    # -- one table ---------------------------------------------------------------------------

    def meaning(self, section: str, key: str, *, fallback: str | None = None) -> Meaning:
        for place in (section, fallback):
            if place is not None and key in self.meanings.get(place, {}):
                self.used.add((place, key))
                return self.meanings[place][key]
        where = f"{section}.{key}" if fallback is None else f"{section}.{key} (or {fallback})"
        raise GenerationError(
            f"the settings accept `{where}` but docs/gen/settings.yaml says nothing about it: "
            "add what it means there"
        )

    def rows(
        self, definition: Json, keys: list[str], section: str, fallback: str | None = None
    ) -> Iterator[str]:
        properties: Json = definition["properties"]
        required = set(definition.get("required", ()))
        from_file = set(properties) & {f"{k}{FILE_SUFFIX}" for k in properties}
        alternatives = _required_alternatives(definition)
        for key in keys:
            if key == "type" and section != COMMON:
                continue  # each type's table is named after it
            meaning = self.meaning(section, key, fallback=fallback)
            prop = properties[key]
            if meaning.default is not None:
                default = meaning.default
            elif key in required or key in alternatives:
                default = "**required**"
            else:
                default = _default(prop)
            text = meaning.text
            if f"{key}{FILE_SUFFIX}" in from_file:
                text += f"; or `{key}{FILE_SUFFIX}`, the path of a file that holds it"
            kind = _type(prop)
            if key == "type" and section == COMMON:
                kind = " \\| ".join(f"`{json.dumps(t)}`" for t in self.provider_types())
                default = "**required**"
            yield f"| `{key}` | {kind} | {default} | {_cell(text)} |"

    def table(
        self, definition: Json, keys: list[str], section: str, fallback: str | None = None
    ) -> str:
        head = "| key | type | default | meaning |\n|---|---|---|---|\n"
        return head + "\n".join(self.rows(definition, keys, section, fallback)) + "\n"

    # -- what the pages hold -----------------------------------------------------------------

    def section(self, name: str) -> str:
        definition = self.definition(self.schema["properties"][name])
        keys = [k for k in definition["properties"] if not k.endswith(FILE_SUFFIX)]
        return f"### `[{name}]`\n\n" + self.table(definition, keys, name)

    def common(self) -> str:
        definition = next(iter(self.provider_types().values()))
        keys = self.common_keys()
        rows = self.table(definition, keys, COMMON)
        for key in keys:
            if not self.shared_default(key):
                # The first type's default would mislead: each type's table gives its own.
                rows = "\n".join(
                    _per_type(line) if line.startswith(f"| `{key}` |") else line
                    for line in rows.splitlines()
                )
        return rows.rstrip("\n") + "\n"

    def own_keys(self, kind: str) -> list[str]:
        definition = self.provider_types()[kind]
        common = {k for k in self.common_keys() if self.shared_default(k)}
        return [
            k for k in definition["properties"] if k not in common and not k.endswith(FILE_SUFFIX)
        ]

    def provider(self, kind: str) -> str:
        definition = self.provider_types()[kind]
        return self.table(definition, self.own_keys(kind), kind, fallback=COMMON)

    def whole(self) -> str:
        """Every section, then the keys every provider has, then each type's own."""
        parts = [self.section(name) for name in self.sections()]
        parts.append(
            f"### `[{COMMON}.NAME]`, every type\n\n"
            "The table's name is the account's name (lowercase letters, digits, `_`); several "
            "accounts of one type may coexist. The keys every type accepts (the policy keys "
            "override `[defaults]` for this account):\n\n" + self.common()
        )
        for kind in self.provider_types():
            parts.append(
                f'### `type = "{kind}"`\n\n'
                f"Its own keys ([the provider's page](../providers/{kind}.md) says more):\n\n"
                + self.provider(kind)
            )
        return "\n".join(parts)

    def unused(self) -> list[str]:
        """Meanings for keys the schema no longer has: stale text, reported by ``check``."""
        return sorted(
            f"{section}.{key}"
            for section, keys in self.meanings.items()
            for key in keys
            if (section, key) not in self.used
        )

    def check(self) -> None:
        """Render everything, then refuse meanings nothing used."""
        self.whole()
        stale = self.unused()
        if stale:
            raise GenerationError(
                "docs/gen/settings.yaml describes keys the settings no longer accept: "
                + ", ".join(stale)
            )


def reference() -> Reference:
    return Reference(load_schema(), load_meanings())


# -- cells --------------------------------------------------------------------------------------


def _required_alternatives(definition: Json) -> set[str]:
    """Keys required one way or another (``api_key`` or ``api_key_file``)."""
    found: set[str] = set()
    for part in definition.get("allOf", ()):
        for option in part.get("oneOf", ()):
            for key in option.get("required", ()):
                found.add(key.removesuffix(FILE_SUFFIX))
    return found


def _without_null(prop: Json) -> Json:
    options = [o for o in prop.get("anyOf", ()) if o.get("type") != "null"]
    if len(options) == 1:
        return {**prop, **options[0]}
    return prop


def _type(prop: Json) -> str:
    prop = _without_null(prop)
    if prop.get("format") == "password":
        return "secret"
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if "enum" in prop:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in prop["enum"])
    kind = prop.get("type")
    if kind in ("integer", "number"):
        low = prop.get("minimum", prop.get("exclusiveMinimum"))
        high = prop.get("maximum")
        name = "integer" if kind == "integer" else "number"
        if low is not None and high is not None:
            return f"{name}, {_number(low)} to {_number(high)}"
        if "exclusiveMinimum" in prop:
            return f"{name}, > {_number(prop['exclusiveMinimum'])}"
        if low is not None:
            return f"{name}, ≥ {_number(low)}"
        return name
    if kind == "array":
        return f"list of {prop.get('items', {}).get('type', 'value')}s"
    if kind == "boolean":
        return "boolean"
    return "string"


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else f"{value:,}"


def _default(prop: Json) -> str:
    if "default" not in prop:
        return "`[]`" if _without_null(prop).get("type") == "array" else "none"
    value = prop["default"]
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def _per_type(line: str) -> str:
    cells = line.split(" | ")
    cells[2] = "per type"
    return " | ".join(cells)


def meanings_by_section(meanings: Mapping[str, Mapping[str, Meaning]]) -> dict[str, list[str]]:
    return {section: sorted(keys) for section, keys in meanings.items()}
