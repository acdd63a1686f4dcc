"""structlog setup: one JSON object per line, `event`, `level`, `timestamp` (ISO 8601 UTC)
and the context that applies (`sequence`, `email`, `step`, `message_id`, `mailbox`).

`run` logs to stdout, where systemd's journal picks it up; every other command logs to stderr
so its results on stdout can be piped. Secrets are scrubbed from every value, whatever the
code that logged it, in either form.

Two forms of the same events (`run --log-format`): JSON lines for machines (journald, jq,
a pipe), and structlog's ConsoleRenderer for a person at a terminal. `auto` picks the console
form only on a terminal that is not systemd's journal stream.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Literal, TextIO

import structlog

REDACTED = "[redacted]"

Format = Literal["json", "console"]


def resolve(choice: str, stream: TextIO, environ: Mapping[str, str] | None = None) -> Format:
    """`auto`: console on a terminal, JSON anywhere else. $JOURNAL_STREAM means systemd
    connected our output to the journal, which wants JSON even if it looks like a tty."""
    if choice in ("json", "console"):
        return "json" if choice == "json" else "console"
    env = os.environ if environ is None else environ
    tty = stream.isatty() if hasattr(stream, "isatty") else False
    return "console" if tty and "JOURNAL_STREAM" not in env else "json"


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def add(self, secret: str, replaces: str | None = None) -> None:
        """A secret learnt while running (an OAuth2 access token): scrubbed from now on. The
        one it `replaces` (an expired token) is dropped, so an hourly refresh never grows
        the list a long-running daemon checks every log line against."""
        kept = {s for s in self.secrets if s != replaces}
        if secret:
            kept.add(secret)
        self.secrets = sorted(kept, key=len, reverse=True)

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.scrub(v) for v in value]
        return value

    def __call__(
        self, _logger: Any, _name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if not self.secrets:
            return event
        for key in list(event):
            if key.lower() in ("password", "secret", "token", "access_token", "refresh_token"):
                event[key] = REDACTED
            else:
                event[key] = self.scrub(event[key])
        return event


#: The configured redactor, so secrets learnt later (OAuth2 tokens) can be added to it.
_redactor = Redactor()


def redact(secret: str, replaces: str | None = None) -> None:
    """Scrub this secret from every log line from now on (instead of `replaces`)."""
    _redactor.add(secret, replaces)


def configure(
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
    level: str = "info",
    fmt: Format = "json",
) -> None:
    # Tracebacks are made text before the Redactor in both forms, so they are scrubbed too.
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=True)
        if fmt == "console"
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    _redactor.secrets = Redactor(secrets).secrets
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
    # Libraries that use the standard logging module (tortoise, aiosmtpd) stay quiet unless
    # something is wrong; their warnings go to stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # flufl.bounce logs a traceback for every malformed header it meets; hostile mail would
    # flood the journal. classify() copes with those messages itself.
    logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)
    # While PostgreSQL is down asyncpg's pool logs a traceback at each reconnect attempt;
    # `database.unavailable` already says so, once, in our own words.
    logging.getLogger("asyncpg.pool").setLevel(logging.CRITICAL)
