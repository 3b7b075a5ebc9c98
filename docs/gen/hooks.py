"""MkDocs hooks (``hooks:`` in mkdocs.yml): the command reference keeps click's examples.

mkdocs-click copies each command's help text into the page as Markdown. The examples in
every command's help are a paragraph click must not rewrap (``\\b``): ``Example:`` and then
the commands, indented. Markdown would join those lines into one, so the preprocessor here,
run right after mkdocs-click's, turns each such paragraph into a code block, as ``--help``
shows it. Nothing else matches: the commands start with ``retention``.
"""

from __future__ import annotations

import textwrap

from markdown import Extension, Markdown
from markdown.preprocessors import Preprocessor
from mkdocs.config.defaults import MkDocsConfig

HEADS = ("Example:", "Examples:")
COMMAND = "  retention"
# mkdocs-click's preprocessor runs at 141; this one next, before fenced code blocks (25).
PRIORITY = 140


def _is_example(paragraph: list[str]) -> bool:
    return (
        len(paragraph) > 1
        and paragraph[0].strip() in HEADS
        and all(line.startswith(COMMAND) for line in paragraph[1:])
    )


class KeepClickExamples(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        paragraph: list[str] = []
        for line in [*lines, ""]:
            if line.strip():
                paragraph.append(line)
                continue
            if _is_example(paragraph):
                body = textwrap.dedent("\n".join(paragraph[1:])).splitlines()
                out.extend([paragraph[0].strip(), "", "```text", *body, "```"])
            else:
                out.extend(paragraph)
            out.append(line)
            paragraph = []
        return out[:-1]


class KeepClickExamplesExtension(Extension):
    def extendMarkdown(self, md: Markdown) -> None:
        md.preprocessors.register(KeepClickExamples(md), "keep_click_examples", PRIORITY)


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    # MkDocs hands this list to Markdown, which takes an Extension instance as well as a name
    # (MkDocs types the list as names only).
    config.markdown_extensions.append(KeepClickExamplesExtension())  # type: ignore[arg-type]
    return config
