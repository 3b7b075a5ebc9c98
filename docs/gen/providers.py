"""Each provider's page: the facts its documents leave open, the fields of its record that
name no data, and how its adapter reads the API, all from the provider's spec
(``worker/specs/<type>.py``, through the registry) and its adapter's docstring.

Facts are marked ``[I]`` inferred or ``[?]`` unknown. The spec's ``FACTS`` lists each with
what the worker does about it; the adapter's docstring marks the same where the code relies
on it, and the page lists those sentences too, so a reader sees what rests on an inference
before anything else.
"""

from __future__ import annotations

import importlib
import re

from docs.gen import GenerationError
from worker.specs import registry
from worker.specs.spec import ProviderSpec

# [I], [?], and the forms with a note ([I: 400]).
MARKER = re.compile(r"\[(I|\?)(?::[^\]]*)?\]")
# A sentence ends at a full stop (or colon before a list) followed by a capital or a quote.
SENTENCE_END = re.compile(r"(?<=[.])\s+(?=[A-Z\"(`])")
BULLET = re.compile(r"^\* ", re.M)
NESTED = re.compile(r"\n\s+- ")


def spec(kind: str) -> ProviderSpec:
    try:
        return registry.spec(kind)
    except Exception as exc:  # ConfigError, naming the types there are
        raise GenerationError(f"a page names the provider type {kind!r}: {exc}") from exc


def docstring(kind: str) -> str:
    """The adapter module's docstring, as written (reStructuredText-ish, in plain words)."""
    module = importlib.import_module(spec(kind).adapter.split(":")[0])
    text = module.__doc__
    if not text:
        raise GenerationError(f"the {kind} adapter has no module docstring to show")
    return text


def markdown(text: str) -> str:
    """``code`` as `code`; the markers in bold so they stand out in running text."""
    text = text.replace("``", "`")
    return MARKER.sub(lambda m: f"**{m.group(0)}**", text)


def adapter_page(kind: str) -> str:
    """The docstring without its title line, its bullets as Markdown list items."""
    body = docstring(kind).split("\n", 1)[1].strip("\n")
    # Docstring lists nest by two spaces; Markdown wants four.
    lines: list[str] = []
    for line in body.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        if line.startswith("* ") and lines and lines[-1]:
            # A bullet right after an item's later paragraph would read as more of it.
            lines.append("")
        lines.append(" " * (indent * 2) + line.lstrip(" ") if indent else line)
    return markdown("\n".join(lines)) + "\n"


def facts(kind: str) -> list[tuple[str, str]]:
    """(topic, sentence) for every sentence of the docstring that carries a marker."""
    found: list[tuple[str, str]] = []
    body = docstring(kind)
    for bullet in BULLET.split(body)[1:]:
        lead, *items = NESTED.split(bullet)
        topic, _, rest = " ".join(lead.split()).partition(": ")
        if not rest or len(topic) > 40:
            topic, rest = "", " ".join(lead.split())
        for unit in (rest, *(" ".join(item.split()) for item in items)):
            for sentence in SENTENCE_END.split(unit):
                if MARKER.search(sentence):
                    found.append((topic, sentence.strip()))
    return found


def _cell(text: str) -> str:
    return markdown(" ".join(text.split())).replace("|", "\\|")


def facts_table(kind: str) -> str:
    """The spec's ``FACTS``: each open fact, marked, with what the worker does about it."""
    declared = spec(kind).facts
    unmarked = [fact for fact in declared if not MARKER.search(fact)]
    if unmarked:
        raise GenerationError(
            f"the {kind} spec's FACTS must each be marked [I] or [?]: {', '.join(unmarked)}"
        )
    lines = ["| what the provider's documents leave open | what the worker does |", "|---|---|"]
    lines += [f"| {_cell(fact)} | {_cell(done)} |" for fact, done in declared.items()]
    return "\n".join(lines) + "\n"


def inert_table(kind: str) -> str:
    """The spec's ``INERT``: the fields of a job's record that name no data its delete destroys."""
    lines = ["| field | why nothing there is lost |", "|---|---|"]
    lines += [f"| `{path}` | {_cell(why)} |" for path, why in spec(kind).inert.items()]
    return "\n".join(lines) + "\n"


def facts_list(kind: str) -> str:
    """The adapter docstring's sentences that carry a marker, under their topic."""
    listed = facts(kind)
    if not listed:
        return "Its documents leave nothing open that the adapter relies on.\n"
    return (
        "\n".join(
            f"- {f'**{topic}.** ' if topic else ''}{markdown(sentence)}"
            for topic, sentence in listed
        )
        + "\n"
    )
