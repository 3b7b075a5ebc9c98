"""What every command shares: the configuration, read once, the logging it asks for, and the
clients it builds from them."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from worker.archive import Archive
    from worker.ledger import Ledger
    from worker.settings import Settings


class Context:
    """Built once per command from the global options; the commands' only way to the
    configuration, and to the clients built from it, each when first asked for (a command
    that fails on its arguments opens nothing)."""

    def __init__(
        self, config: str | None, *, verbosity: int = 0, log_format: str | None = None
    ) -> None:
        self.config = config
        self.verbosity = verbosity
        self.log_format = log_format
        self._settings: Settings | None = None
        self._logging = False

    @property
    def quiet(self) -> bool:
        """-q: no progress lines or bars; results only."""
        return self.verbosity < 0

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from worker.redact import register_secrets
            from worker.settings import load_settings

            self.start_logging()
            self._settings = load_settings(self.config)
            register_secrets(self._settings.secret_values())
        return self._settings

    def start_logging(self) -> None:
        """Logs on stderr, whatever the command prints: JSON lines, or for reading when
        stderr is a terminal; INFO, or WARNING at a terminal, moved by -v and -q."""
        if self._logging:
            return
        # Deferred: structlog is imported when something logs, so a command that logs
        # nothing (status, config show) never loads it.
        from worker.logsetup import STDERR, cli_level, configure_logging

        at_terminal = sys.stderr.isatty()
        as_json = self.log_format == "json" if self.log_format else not at_terminal
        configure_logging(
            level=cli_level(self.verbosity, at_terminal=at_terminal), json=as_json, stream=STDERR
        )
        self._logging = True

    def provider(self, name: str) -> str:
        """A provider the configuration names (ConfigError, exit 2, otherwise)."""
        self.settings.provider(name)
        return name

    def providers(self, names: tuple[str, ...]) -> list[str]:
        settings = self.settings
        chosen = list(dict.fromkeys(names)) or list(settings.providers)
        for name in chosen:
            settings.provider(name)
        if not chosen:
            from worker.errors import ConfigError

            raise ConfigError("the configuration has no [providers.NAME] tables")
        return chosen

    def ledger(self) -> Ledger:
        from worker.ledger import Ledger

        s = self.settings
        return Ledger.open(s.ledger.url, auto_migrate=s.ledger.auto_migrate)

    def archive(self) -> Archive:
        from worker.archive import Archive, make_s3_client

        s = self.settings.archive
        return Archive(make_s3_client(s), s)


pass_ctx = click.make_pass_decorator(Context)
