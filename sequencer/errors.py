"""The error tree. Every failure a user can cause or fix is a SequencerError.

    SequencerError                  the CLI prints str(err) to stderr and exits 2
    ├── ConfigError                 settings file: path:line: what is wrong, how to fix it
    ├── SequenceError               a sequence file: path:line: step N: what, how to fix
    ├── TemplateError               a template cannot render for this contact
    ├── EnrollError                 enrollment refused (bad address, suppressed, duplicate ...)
    ├── SuppressionError            the suppression list: a bad entry or import row, not listed
    ├── AgendaError                 `agenda done ID` with no such item
    ├── StoreError                  database unreachable, locked by another daemon, or its
    │                               schema is not this version's (run `sequencer migrate`)
    ├── InboxError                  an inbox cannot be watched (inbox.py)
    └── DeliveryError               SMTP edge; `transient` says whether a retry can help
        └── SendFailed              one attempt, with where it stopped (sender.py; what it
                                    means is delivery.py's table)

Any other exception is a bug and gets a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class SequencerError(Exception):
    """Base of every user-facing error: its text is the whole message the user sees."""


class Located(SequencerError):
    """An error that points at a place in a file, possibly several problems at once."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def where(path: Path | str, line: int | None) -> str:
    """`path:line` for messages, the form editors and terminals make clickable."""
    return f"{path}:{line}" if line else str(path)


class ConfigError(Located):
    pass


class SequenceError(Located):
    pass


class TemplateError(SequencerError):
    pass


class EnrollError(Located):
    pass


class SuppressionError(Located):
    pass


class AgendaError(SequencerError):
    pass


class StoreError(SequencerError):
    pass


class DeliveryError(SequencerError):
    """An SMTP failure. `code` is the server's reply code when there was one."""

    def __init__(self, message: str, *, transient: bool, code: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.code = code


class InboxError(SequencerError):
    """The inbox cannot be watched (login refused, folder missing, server unreachable)."""
