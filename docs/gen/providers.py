"""Each provider's page: how its adapter reads the API, and the facts marked [I] or [?].

Facts that a provider's documents leave open are marked where the adapter relies on them:
``[I]`` inferred (with the reason, or what the adapter does if the inference is wrong),
``[?]`` unknown (and how the adapter copes either way). The adapter's module docstring is the
one place that says so, next to the code it explains; these pages show it, and list the
marked sentences first, so a reader sees what rests on an inference before anything else.
"""

from __future__ import annotations

import importlib
import re

from docs.gen import GenerationError
from worker.providers import ADAPTERS

# [I], [?], and the forms with a note ([I: 400]).
MARKER = re.compile(r"\[(I|\?)(?::[^\]]*)?\]")
# A sentence ends at a full stop (or colon before a list) followed by a capital or a quote.
SENTENCE_END = re.compile(r"(?<=[.])\s+(?=[A-Z\"(`])")
BULLET = re.compile(r"^\* ", re.M)
NESTED = re.compile(r"\n\s+- ")


def docstring(kind: str) -> str:
    """The adapter module's docstring, as written (reStructuredText-ish, in plain words)."""
    if kind not in ADAPTERS:
        raise GenerationError(f"no adapter for provider type {kind!r} (worker.providers.ADAPTERS)")
    module = importlib.import_module(ADAPTERS[kind].split(":")[0])
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


def facts_list(kind: str) -> str:
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
