"""How results read: plain lines for a pipe, tables at a terminal, and JSON for scripts.

``view`` says what a view is (one result type in four forms: text, rich, JSON, JSON Lines),
how one reaches stdout, and what a feed is (what a long command shows as it runs). Then one
module per result: ``sweep`` (and what ``--enqueue`` sent), ``status``, ``checks``,
``report``, ``restore``, ``scrub``, ``ledger`` (track, hold, release, retry, migrate),
``config`` and ``errors``; ``progress`` holds the live progress lines of a sweep and a
scrub at a terminal, the only module that imports rich when it is imported.
"""
