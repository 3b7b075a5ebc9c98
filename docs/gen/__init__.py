"""What the documentation site generates from the code at build time (``mkdocs build``).

A page under ``docs/`` is a real Markdown file that reads on GitHub too; where it holds a
marker such as ``<!-- generated: lifecycle -->``, ``pages.py`` (run by mkdocs-gen-files)
replaces the marker with what the code says today, so a generated part cannot go stale:

* ``settings``: the configuration reference, from ``config/retention.schema.json`` (types,
  defaults, ranges, what is required) and ``settings.yaml`` (what each key means);
* ``lifecycle``: the job's states and the lifecycle table, from ``worker.domain``;
* ``providers``: each provider's facts that its documents leave open, marked [I] or [?] in
  its adapter.

A key without a meaning, a meaning for a key that no longer exists, or an unknown marker
stops the build (``GenerationError``): ``mkdocs build --strict`` runs in ``scripts/test``.
"""


class GenerationError(Exception):
    """The code and the documentation disagree; the message says where and what to change."""
