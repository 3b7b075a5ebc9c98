"""Run by mkdocs-gen-files at each build: every marker in a page becomes what the code says.

A marker is an HTML comment on a line of its own, ``<!-- generated: NAME [ARGUMENT] -->``;
the page keeps its prose around it and reads on GitHub as written (the comment is invisible
there). The names:

* ``settings-reference``: every section of the configuration, from the JSON Schema;
* ``provider-settings TYPE``: one provider type's own keys;
* ``provider-facts TYPE``: its spec's ``FACTS``, each marked [I] or [?], with what the
  worker does about it;
* ``provider-marked TYPE``: its adapter's sentences marked [I] or [?];
* ``provider-inert TYPE``: its spec's ``INERT``, the fields that name no data;
* ``provider-adapter TYPE``: its adapter's docstring;
* ``commands``: every command of the CLI with its one-line help;
* ``states`` and ``lifecycle``: the job's states and the lifecycle table.

An unknown marker, a key without a meaning or a meaning without a key stops the build.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # mkdocs runs this file as a script, from the repository's root
    sys.path.insert(0, str(ROOT))

from docs.gen import GenerationError, commands, lifecycle, providers, settings  # noqa: E402

MARKER = re.compile(r"^<!-- generated: ([a-z-]+)(?: ([a-z_]+))? -->$", re.M)


def generators() -> dict[str, Callable[[str | None], str]]:
    reference = settings.reference()

    def settings_reference(_: str | None) -> str:
        text = reference.whole()
        reference.check()  # after the whole reference: every meaning must have found its key
        return text

    def needs(argument: str | None) -> str:
        if argument is None:
            raise GenerationError("this marker names a provider type: add it after the name")
        return argument

    return {
        "settings-reference": settings_reference,
        "provider-settings": lambda kind: reference.provider(needs(kind)),
        "provider-facts": lambda kind: providers.facts_table(needs(kind)),
        "provider-marked": lambda kind: providers.facts_list(needs(kind)),
        "provider-inert": lambda kind: providers.inert_table(needs(kind)),
        "provider-adapter": lambda kind: providers.adapter_page(needs(kind)),
        "commands": lambda _: commands.commands_table(),
        "states": lambda _: lifecycle.states_table(),
        "lifecycle": lambda _: lifecycle.lifecycle_table(),
    }


def expand(text: str, page: str, made: dict[str, Callable[[str | None], str]]) -> str:
    def one(match: re.Match[str]) -> str:
        name, argument = match.group(1), match.group(2)
        if name not in made:
            raise GenerationError(f"{page}: unknown marker {match.group(0)!r}")
        return made[name](argument).rstrip("\n")

    return MARKER.sub(one, text)


def main() -> None:
    import mkdocs_gen_files

    docs = Path(mkdocs_gen_files.config["docs_dir"])
    made = generators()
    for path in sorted(docs.rglob("*.md")):
        page = path.relative_to(docs).as_posix()
        text = path.read_text()
        if not MARKER.search(text):
            continue
        with mkdocs_gen_files.open(page, "w") as out:
            out.write(expand(text, page, made))
        mkdocs_gen_files.set_edit_path(page, page)


if __name__ == "<run_path>":  # how mkdocs-gen-files runs its scripts (runpy.run_path)
    main()
