"""How a command's error reads, on stderr: ``error: ...``, or, when the command was asked for
JSON, one object (restic's ``exit_error``) with the exit code."""

from __future__ import annotations

from collections.abc import Iterator

from worker.render.view import View


class ErrorView(View):
    message_type = "exit_error"

    def __init__(self, message: str, code: int) -> None:
        self.message = message
        self.code = code

    def lines(self) -> Iterator[str]:
        yield f"error: {self.message}"

    def fields(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message}
