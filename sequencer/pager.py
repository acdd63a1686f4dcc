"""Long output to the user's pager on a terminal, written as it is produced.

`status` with rows may list a million enrollments: they are read a page at a time and each
page goes to `$PAGER` (else `less`) as soon as it is read, so the first screen shows at once
and quitting the pager stops the reading. Off a terminal (a pipe, a file, a test) the text
goes straight to stdout.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
from types import TracebackType
from typing import IO


class Closed(Exception):
    """The reader went away (the pager quit, or the pipe closed): stop producing."""


class Output:
    """A text sink: the pager when stdout is a terminal, stdout otherwise."""

    def __init__(self, *, page: bool) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self._stream: IO[str] = sys.stdout
        if page and sys.stdout.isatty():
            command = shlex.split(os.environ.get("PAGER") or "less")
            if command and shutil.which(command[0]):
                # less: quit if it fits one screen, keep it on screen after, pass colours.
                env = {**os.environ, "LESS": os.environ.get("LESS", "FRX")}
                self._proc = subprocess.Popen(  # noqa: S603 - the user's own pager
                    command, stdin=subprocess.PIPE, text=True, env=env
                )
                assert self._proc.stdin is not None
                self._stream = self._proc.stdin

    def write(self, text: str) -> None:
        try:
            self._stream.write(text)
            if self._proc is None:
                self._stream.flush()
        except (BrokenPipeError, OSError) as exc:
            raise Closed from exc

    def __enter__(self) -> Output:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(BrokenPipeError, OSError):
            self._stream.close()
        while True:
            try:
                self._proc.wait()
                return
            except KeyboardInterrupt:  # Ctrl-C belongs to the pager while it runs
                continue


def quiet_broken_pipe() -> None:
    """After the reader closed stdout: point it at /dev/null, so the interpreter's final
    flush does not print an error for output nobody wanted."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
