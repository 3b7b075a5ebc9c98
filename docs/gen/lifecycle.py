"""The job's states and its lifecycle table, from ``worker.domain``.

``LIFECYCLE`` gives each event's source states and target; the comment beside each member
of ``JobState`` and ``Event`` in ``worker/domain.py`` says what it means, so the tables here
read those comments rather than repeat them. A member without a comment is a
``GenerationError``.
"""

from __future__ import annotations

import enum
import io
import tokenize
from pathlib import Path

from docs.gen import GenerationError
from worker import domain

SOURCE = Path(domain.__file__)


def comments(cls: type[enum.Enum], source: Path = SOURCE) -> dict[str, str]:
    """Each member's trailing comment in the class body, by member name."""
    found: dict[str, str] = {}
    inside = False
    pending: str | None = None
    tokens = tokenize.generate_tokens(io.StringIO(source.read_text()).readline)
    for token in tokens:
        if token.type == tokenize.NAME and token.string == "class" and token.start[1] == 0:
            name = next(tokens).string
            inside = name == cls.__name__
            continue
        if not inside:
            continue
        if token.type == tokenize.DEDENT and token.start[1] == 0:
            break
        if token.type == tokenize.NAME and token.start[1] == 4 and token.string in cls.__members__:
            pending = token.string
        elif token.type == tokenize.COMMENT and pending is not None:
            found[pending] = token.string.lstrip("# ").strip()
            pending = None
        elif token.type == tokenize.NEWLINE:
            pending = None
    missing = [name for name in cls.__members__ if name not in found]
    if missing:
        raise GenerationError(
            f"{', '.join(missing)} in {cls.__name__} (worker/domain.py) have no comment saying "
            "what they mean: the lifecycle page is generated from those comments"
        )
    return found


def _states(states: frozenset[domain.JobState]) -> str:
    order = list(domain.JobState)
    return ", ".join(s.value for s in sorted(states, key=order.index))


def _code(text: str) -> str:
    """Inline code for the names the comments quote (``Kept``), in Markdown."""
    return text.replace("``", "`")


def states_table() -> str:
    said = comments(domain.JobState)
    lines = ["| state | meaning | kind |", "|---|---|---|"]
    for state in domain.JobState:
        kinds = [
            label
            for label, members in (
                ("final", domain.FINAL_STATES),
                ("past the gate", domain.PAST_GATE_STATES),
                ("resumable", domain.RESUMABLE_STATES),
                ("open", domain.OPEN_STATES),
            )
            if state in members
        ]
        lines.append(f"| `{state.value}` | {_code(said[state.name])} | {', '.join(kinds)} |")
    return "\n".join(lines) + "\n"


def lifecycle_table() -> str:
    said = comments(domain.Event)
    lines = ["| event | meaning | from | to |", "|---|---|---|---|"]
    for event, move in domain.LIFECYCLE.items():
        target = move.target.value if move.target is not None else "(unchanged)"
        who = " (by a person)" if event in domain.OPERATOR_EVENTS else ""
        lines.append(
            f"| `{event.value}`{who} | {_code(said[event.name])} | {_states(move.sources)} "
            f"| {target} |"
        )
    return "\n".join(lines) + "\n"
