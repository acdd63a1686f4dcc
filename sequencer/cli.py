"""The `sequencer` command: run | check | preview | enroll | status | agenda | resume | stop |
forget | suppress | migrate | classify | demo.

Results go to stdout, diagnostics to stderr (so `--json` can be piped). A SequencerError is
printed as it is and exits 2; anything else is a bug and shows a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import difflib
import enum
import functools
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

import structlog
import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer._click.core import Context, Parameter
from typer.core import TyperCommand, TyperGroup, TyperOption

from sequencer import contacts, csvfile, enrolment, logs, render, suppression, tls
from sequencer.addresses import normalize_address
from sequencer.clock import SystemClock
from sequencer.config import Mailbox, Settings, find_config, load_settings
from sequencer.errors import (
    AgendaError,
    ConfigError,
    EnrollError,
    SequenceError,
    SequencerError,
    SuppressionError,
)
from sequencer.etiquette import Etiquette, parse_local
from sequencer.holds import ADVICE, SHORT, MailboxView, mailbox_view
from sequencer.sequences import Sequence, load_all, load_each, load_sequence, weekend_only
from sequencer.states import Hold, State
from sequencer.store import db, inbox_duty, queries, schema

if TYPE_CHECKING:
    from sequencer.lint import Finding


def _plain_flags(params: list[Parameter]) -> list[Parameter]:
    """On/off options read as plain flags in --help: this typer labels every option with its
    type, and `--json <bool>` looks as if it wanted a value."""
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class _Command(TyperCommand):
    def get_params(self, ctx: Context) -> list[Parameter]:
        return _plain_flags(super().get_params(ctx))


class _Group(TyperGroup):
    def get_params(self, ctx: Context) -> list[Parameter]:
        return _plain_flags(super().get_params(ctx))

    def get_command(self, ctx: Context, cmd_name: str) -> Any:
        """The command list shows each command's first sentence, not its whole help (this
        typer prints the whole docstring there, hard line breaks and all)."""
        command = super().get_command(ctx, cmd_name)
        if command is not None and command.short_help is None and command.help:
            command.short_help = _first_sentence(command.help)
        return command


def _first_sentence(text: str) -> str:
    """Up to the first full stop that ends a sentence (not one of "GDPR Art. 17")."""
    flat = " ".join(text.split())
    end = re.search(r"(?<!\b[A-Z][a-z])(?<!\b[A-Z][a-z]{2})\.\s", flat)
    return flat if end is None else flat[: end.start() + 1]


def _example(command: str) -> str:
    """A --help epilog: one command as a person would type it, to copy and adapt."""
    return f"Example: {command}"


#: `-h` as well as `--help`, on every command (subcommands inherit it from the context).
HELP = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    help="A polite email follow-up daemon: sequences as YAML, stopped the moment they reply.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=HELP,
    cls=_Group,
    epilog=_example("sequencer check --strict --config sequencer.yaml"),
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Settings file (default: $SEQUENCER_CONFIG, else ./sequencer.yaml)"
    ),
]
T = TypeVar("T")


def _version(value: bool) -> None:
    if value:
        out.print(f"sequencer {_installed_version()}", highlight=False)
        raise typer.Exit()


def _installed_version() -> str:
    """The version pip installed (what a bug report needs), not a constant that can drift."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sequencer-followup")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from sequencer import __version__

        return f"{__version__} (not installed)"


@app.callback()
def _main(
    _: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the installed version and exit",
        ),
    ] = False,
) -> None:
    """A polite email follow-up daemon: sequences as YAML, stopped the moment they reply."""


def _fail(exc: SequencerError) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True)
    return typer.Exit(2)


def _run(coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        return asyncio.run(coro())
    except SequencerError as exc:
        raise _fail(exc) from None


def _settings(config: Path | None) -> Settings:
    path = find_config(config)
    if not path.exists():
        hint = "pass --config PATH or set SEQUENCER_CONFIG" if config is None else "check the path"
        raise ConfigError(
            [f"{path}: settings file not found ({hint}; see deploy/sequencer.yaml for an example)"]
        )
    return load_settings(path)


def _oauth_readiness(box: Mailbox, where: str) -> list[str]:
    if box.oauth2 is None:
        return []
    from sequencer import oauth  # Authlib and httpx2 load only where OAuth2 is used

    return oauth.readiness(box, where)


def _sequences(settings: Settings) -> dict[str, Sequence]:
    return load_all(settings.sequences, settings.mailboxes)


def _sample_renders(settings: Settings, seqs: dict[str, Sequence]) -> list[str]:
    """Every step rendered with sample values, in the render process and within the budget
    the daemon uses: a template that fails, runs away or needs too much is refused here."""
    return [p for problems in _sample_renders_each(settings, seqs).values() for p in problems]


def _sample_renders_each(settings: Settings, seqs: dict[str, Sequence]) -> dict[str, list[str]]:
    """`_sample_renders`, by sequence id (only those with problems)."""
    if not seqs:
        return {}
    from sequencer.renderer import Renderer, sample_problems

    senders = {
        name: {"name": box.display_name, "address": box.address}
        for name, box in settings.mailboxes.items()
    }

    async def go() -> dict[str, list[str]]:
        found = {}
        async with Renderer() as renderer:
            for name, seq in sorted(seqs.items()):
                if problems := await sample_problems(renderer, [seq], senders):
                    found[name] = problems
        return found

    return asyncio.run(go())


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    """ " (did you mean 'x'?)" for the closest known name, or "": a typo gets its fix."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _one_sequence(settings: Settings, name: str) -> Sequence:
    path = settings.sequences / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in settings.sequences.glob("*.yaml"))
        raise SequenceError(
            [
                f"unknown sequence '{name}'{_did_you_mean(name, known)} (no {path}); "
                f"available: {', '.join(known) or 'none'}"
            ]
        )
    return load_sequence(path, settings.mailboxes)


#: Fields the scheduler reads from any contact, whatever the sequence.
PLACE_FIELDS = frozenset({"timezone", "country", "subdivision"})


def _known_fields(seq: Sequence) -> frozenset[str]:
    """Every contact field the sequence declares, reads, or the scheduler uses."""
    return (
        render.BUILTIN_FIELDS | PLACE_FIELDS | set(seq.variables) | seq.fields_used
    ) | seq.fields_optional


def _note_extra_columns(seq: Sequence, text: str, path: Path) -> None:
    """A note (not an error) naming the CSV's columns no template or rule uses: CRM exports
    carry dozens, and a column meant for a template but misspelt shows up here. `text`: the
    file's text, or its first line."""
    line = text.removeprefix("\ufeff").split("\n", 1)[0].rstrip("\r")
    try:
        header = next(csv.reader([line], delimiter=csvfile.sniff(line, str(path))), [])
    except (ValueError, csv.Error):
        return  # the reader that follows reports an unreadable header, with its line
    known = _known_fields(seq)
    extra = [h for h in dict.fromkeys(c.strip().lower() for c in header) if h and h not in known]
    if extra:
        hints = [f"{x}{_did_you_mean(x, known - {'email'})}" for x in extra]
        err.print(
            f"note: {path}: column(s) not used by sequence '{seq.id}' (kept with each contact, "
            f"not used in any email): {', '.join(hints)}",
            highlight=False,
            markup=False,
        )


def _vars(seq: Sequence, pairs: list[str], allow_unknown: bool) -> dict[str, str]:
    """--var pairs, refusing a name the sequence neither declares nor reads: `compnay=Acme`
    would otherwise be dropped silently and the template would use its default."""
    given = contacts.parse_vars(pairs)
    known = _known_fields(seq)
    unknown = sorted(set(given) - known)
    if unknown and not allow_unknown:
        raise EnrollError(
            [
                f"--var {name}: sequence '{seq.id}' has no variable '{name}'"
                f"{_did_you_mean(name, known - set(given))}; it knows "
                f"{', '.join(sorted(known))} (--allow-unknown to pass it anyway)"
                for name in unknown
            ]
        )
    return given


@app.command(
    cls=_Command,
    epilog=_example("sequencer check after-meeting --strict --csv leads.csv")
    + "\n\n"
    + _example("sequencer check --connect"),
)
def check(
    sequence: Annotated[
        str | None, typer.Argument(help="Lint only this sequence (all are still validated)")
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Fail on warnings too (for CI and before a launch)")
    ] = False,
    connect: Annotated[
        bool,
        typer.Option(
            "--connect",
            help="Then log in to every mailbox's SMTP and IMAP server (TLS included), one "
            "line each with the time it took; nothing is sent",
        ),
    ] = False,
    csv_file: Annotated[
        Path | None,
        typer.Option(
            "--csv", help="Also check SEQUENCE's templates against this contact list (a CSV)"
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Validate the settings file and every sequence, and lint what the sequences say.

    Errors exit 2 with every problem found; content warnings are printed (exit 0) unless
    --strict, which makes them errors. With --connect, a login that fails exits 2 too."""
    from sequencer.lint import lint

    try:
        settings = _settings(config)
        problems: list[str] = []
        try:
            seqs = _sequences(settings)
        except SequenceError as exc:
            problems += exc.problems
            seqs = {}
        warnings = []
        for name, box in settings.mailboxes.items():
            for kind, server in (("smtp", box.smtp), ("imap", box.imap)):
                try:
                    server.password(f"{settings.source}: mailboxes.{name}.{kind}")
                except ConfigError as exc:
                    warnings += exc.problems
            warnings += _oauth_readiness(box, f"{settings.source}: mailboxes.{name}")
            if box.imap.security == "starttls":
                problems.append(f"{settings.source}: mailboxes.{name}.imap: {tls.IMAP_STARTTLS}")
            problems += _ca_problems(settings, name)
        if not settings.mailboxes:
            problems.append(
                f"{settings.source}: no mailboxes configured (add one under 'mailboxes:')"
            )
        default = settings.window.window() if settings.window else None
        for seq in seqs.values():
            if seq.window is None and default is not None and weekend_only(default):
                problems += [
                    f"{seq.path}:{st.line}: step {st.number}: a wait in business days can never "
                    f"land in the settings' default window, open only at weekends ({default}); "
                    "give the sequence its own window or the wait in days"
                    for st in seq.steps
                    if st.wait.business_days
                ]
        problems += _sample_renders(settings, seqs)
        findings: list[Finding] = []
        if csv_file is not None and sequence is None:
            raise EnrollError(
                ["--csv FILE needs the SEQUENCE it is for: check SEQUENCE --csv FILE"]
            )
        if sequence is not None and sequence not in seqs and not problems:
            _one_sequence(settings, sequence)  # raises: unknown sequence, with the known ones
        for seq_id in sorted(seqs) if sequence is None else [sequence] if sequence in seqs else []:
            findings += lint(seqs[seq_id])
        if csv_file is not None:
            found, bad = _check_csv(seqs.get(sequence or ""), csv_file)
            findings += found
            problems += bad
        if strict:
            problems += [f"{w} (needed by `sequencer run`)" for w in warnings]
        else:
            for w in warnings:
                err.print(f"[yellow]warning:[/] {w} (needed by `sequencer run`)", highlight=False)
        failing = [f for f in findings if f.severity == "error" or strict]
        for f in findings:
            if f not in failing:
                err.print(str(f), highlight=False, markup=False)
        problems += [str(f) for f in failing]
        if problems:
            counted = len(warnings) + sum(1 for f in findings if f.severity == "warning")
            if strict and counted:
                problems.append(f"(--strict: warnings count as errors; {counted} warning(s))")
            raise SequenceError(problems)
    except SequencerError as exc:
        raise _fail(exc) from None
    notes = len(warnings) + sum(1 for f in findings if f.severity == "warning")
    out.print(
        f"ok: {settings.source}: {len(settings.mailboxes)} mailbox(es), "
        f"{len(seqs)} sequence(s): {', '.join(sorted(seqs))}"
        + (f"; {notes} warning(s) above" if notes else ""),
        highlight=False,
    )
    if connect:
        from sequencer import trial

        boxes = list(settings.mailboxes.values())
        failed = _print_steps(lambda: trial.try_logins(boxes), boxes, trial.LOGIN_STEPS)
        if failed:
            err.print(
                f"[bold red]error:[/] {failed} of {2 * len(boxes)} login(s) failed (above)",
                highlight=False,
            )
            raise typer.Exit(2)


def _print_steps(
    steps: Callable[[], AsyncIterator[Any]], boxes: Iterable[Any], what_width: int
) -> int:
    """Print each trial step as it ends (a slow server shows where it is slow); the number
    that failed."""
    width = max((len(b.name) for b in boxes), default=0)

    async def go() -> int:
        failed = 0
        async for step in steps():
            out.print(step.line(width, what_width), highlight=False, markup=False)
            failed += not step.ok
        return failed

    return asyncio.run(go())


@app.command(
    "test",
    cls=_Command,
    epilog=_example("sequencer test sales --timeout 60s"),
)
def self_test(
    mailbox: Annotated[str, typer.Argument(help="The mailbox's name, as under 'mailboxes:'")],
    timeout: Annotated[
        str,
        typer.Option("--timeout", help="How long to wait for the message to arrive: 60s, 2m"),
    ] = "60s",
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the test message in the folder")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Send a message from MAILBOX to itself and wait until it arrives in the watched folder.

    Logs in to SMTP and IMAP, sends a message marked X-Sequencer-Test (the daemon ignores
    it), waits until it is in the folder the daemon watches, then deletes it. Each step is
    one line with its time. Exits 2 at the first step that fails, 0 when all pass."""
    from sequencer import trial
    from sequencer.schedule import parse_duration

    try:
        settings = _settings(config)
        box = settings.mailboxes.get(mailbox)
        if box is None:
            known = sorted(settings.mailboxes)
            raise ConfigError(
                [
                    f"{settings.source}: no mailbox '{mailbox}'"
                    f"{_did_you_mean(mailbox, known)}; configured: {', '.join(known) or 'none'}"
                ]
            )
        try:
            wait = parse_duration(timeout, "--timeout").total_seconds()
        except ValueError as exc:
            raise ConfigError([f"--timeout {timeout}: {exc} (try 60s or 2m)"]) from None
        if wait <= 0:
            raise ConfigError([f"--timeout {timeout}: must be more than 0s (try 60s)"])
        if problems := _ca_problems(settings, mailbox):
            raise ConfigError(problems)
    except SequencerError as exc:
        raise _fail(exc) from None
    failed = _print_steps(
        lambda: trial.round_trip(box, wait=wait, keep=keep), [box], trial.TEST_STEPS
    )
    if failed:
        err.print(f"[bold red]error:[/] mailbox '{mailbox}': the test failed (above)")
        raise typer.Exit(2)
    out.print(f"ok: mailbox '{mailbox}' sends, and its folder {box.imap.folder} sees it arrive")


def _ca_problems(settings: Settings, name: str) -> list[str]:
    """Each server's ca_file, loaded as a connection would load it: missing, unreadable or
    not a PEM certificate is an error (the daemon could not connect)."""
    box = settings.mailboxes[name]
    found = []
    for kind, server in (("smtp", box.smtp), ("imap", box.imap)):
        if server.ca_file is not None:
            try:
                tls.context(server, f"{settings.source}: mailboxes.{name}.{kind}")
            except ConfigError as exc:
                found += exc.problems
    return found


def _csv_text(path: Path, error: type[SequencerError] = EnrollError) -> str:
    """The CSV's text however a spreadsheet saved it (csvfile.load); a file that was not UTF-8
    gets a note on stderr, so the user can check the accents."""
    try:
        text, note = csvfile.load(path)
    except ValueError as exc:
        raise error([str(exc)]) from None
    if note:
        err.print(f"note: {note}", highlight=False, markup=False)
    return text


def _check_csv(seq: Sequence | None, path: Path) -> tuple[list[Finding], list[str]]:
    """`check SEQUENCE --csv FILE`, in one pass over the file (any length, flat memory, as
    `enroll --csv` reads it): the encoding note, the note on unused columns, the lint of the
    fields the list lacks, and every row `enroll --csv` would refuse, by line (the import is
    all-or-nothing, so one bad row would stop the whole list), the first MAX_LISTED of them
    listed. `seq` None (the sequence did not load): the file is only opened and its header
    read."""
    from sequencer.lint import ContactTally

    name = str(path)
    with contextlib.ExitStack() as stack:
        header, rows = _stream_csv(stack, path, seq, required=None)
        if seq is None:
            return [], []
        tally = ContactTally(seq)
        counted = tally.counted(rows)
        bad, listed = 0, list[str]()
        try:
            csvfile.require(header, "email", name)
            contacts.check_header(header, name)
        except (ValueError, EnrollError) as exc:
            listed = exc.problems if isinstance(exc, EnrollError) else [str(exc)]
            bad = len(listed)
            for _ in counted:  # the lint still counts every row
                pass
        else:
            for row in contacts.each(seq, counted, name):
                if isinstance(row, contacts.Refused):
                    bad += len(row.problems)
                    listed += row.problems[: max(enrolment.MAX_LISTED - len(listed), 0)]
    more = [f"... and {bad - len(listed)} more"] if bad > len(listed) else []
    refused = [
        f"{name}: {bad} problem(s); `sequencer enroll {seq.id} --csv` would refuse the whole "
        "file until each is fixed:",
        *listed,
        *more,
    ]
    return tally.findings(name), refused if bad else []


def _stream_csv(
    stack: contextlib.ExitStack, path: Path, seq: Sequence | None, required: str | None = "email"
) -> tuple[list[str], Iterator[csvfile.Row]]:
    """A contact list opened to be read a row at a time, as `check` and `enroll` read it: the
    note on its encoding, the note on columns no template uses (given the sequence), and its
    header; an unreadable file or header row is an EnrollError."""
    try:
        handle, note = stack.enter_context(csvfile.opened(path))
        if note:
            err.print(f"note: {note}", highlight=False, markup=False)
        if seq is not None:
            _note_extra_columns(seq, handle.readline(_HEADER_MAX), path)
        return csvfile.stream(handle, str(path), required=required)
    except ValueError as exc:
        raise EnrollError([str(exc)]) from None


async def _enroll_csv(
    settings: Settings,
    seq: Sequence,
    path: Path,
    first_at: str | None,
    promise: list[str],
    allow_overlap: bool,
    again: bool,
) -> None:
    """`enroll --csv`: the file read a row at a time (any length, flat memory), written in
    one transaction (every row, or none: enrolment.enroll_stream)."""
    name = str(path)
    with contextlib.ExitStack() as stack:
        header, rows = _stream_csv(stack, path, seq)
        contacts.check_header(header, name)
        people = contacts.each(seq, rows, name)
        now = SystemClock().now()
        try:
            promised = enrolment.parse_promise_options(first_at, promise)
        except EnrollError:
            # The rows first, as when the whole file was read before.
            bad, listed = 0, list[str]()
            for row in people:
                if isinstance(row, contacts.Refused):
                    bad += len(row.problems)
                    listed += row.problems[: max(enrolment.MAX_LISTED - len(listed), 0)]
            if bad:
                raise contacts.refusal(name, listed, bad) from None
            raise
        result = enrolment.Streamed()
        async with db.connected(settings.database):
            try:
                await enrolment.enroll_stream(
                    Etiquette(settings),
                    seq,
                    people,
                    now,
                    name,
                    result,
                    allow_overlap=allow_overlap,
                    promised=promised,
                    again=again,
                )
            except EnrollError:
                if promised and not result.bad and result.valid > 1:
                    err.print(_PROMISE_ZONES, highlight=False)
                raise
    if promised and result.valid > 1:
        err.print(_PROMISE_ZONES, highlight=False)
    for address in sorted(result.blocked):
        err.print(
            f"skipped {address}: suppressed ({_entry_why(result.blocked[address])})",
            highlight=False,
            markup=False,
        )
    for address in sorted(result.skipped_before):
        err.print(
            f"skipped {address}: contacted before "
            f"({enrolment.describe(result.skipped_before[address])})",
            highlight=False,
            markup=False,
        )
    _enrolled_summary(settings, seq, result)


_PROMISE_ZONES = "note: promised times are read in each contact's own time zone"
#: The most of line 1 read for the note on unused columns (a hostile file has no end of line).
_HEADER_MAX = 1 << 20


def _enrolled_summary(settings: Settings, seq: Sequence, result: enrolment.Streamed) -> None:
    """The warnings, then `enrolled N in 'seq'; skipped ...; first send ...` on stdout."""
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    when = ""
    if result.first is not None and result.first_values is not None:
        first = result.first
        zone = Etiquette(settings).place(result.first_values).zone
        local = first.at.astimezone(zone)
        why = f" ({', '.join(first.reasons)})" if first.reasons else ""
        when = f"; first send {local:%a %Y-%m-%d %H:%M} {zone.key}{why}"
        if result.valid > 1:
            when = f"; first send from {first.at:%Y-%m-%d %H:%M} UTC"
    blocked, before = result.blocked, result.skipped_before
    out.print(
        f"enrolled {result.created} in '{seq.id}'"
        + (f"; skipped {result.skipped_active} already active" if result.skipped_active else "")
        + (f"; skipped {len(blocked)} suppressed" if blocked else "")
        + (f"; skipped {len(before)} contacted before (use --again)" if before else "")
        + when,
        highlight=False,
    )


@app.command(
    cls=_Command,
    epilog=_example(
        "sequencer enroll after-meeting jo@acme.test --var first_name=Jo --var company=Acme"
    ),
)
def enroll(
    sequence: Annotated[str, typer.Argument(help="Sequence id (file name without .yaml)")],
    email: Annotated[str | None, typer.Argument(help="Contact address")] = None,
    var: Annotated[list[str] | None, typer.Option("--var", help="key=value, repeatable")] = None,
    allow_unknown: Annotated[
        bool,
        typer.Option(
            "--allow-unknown", help="Accept a --var the sequence neither declares nor uses"
        ),
    ] = False,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="CSV with a header row: email, first_name, ...")
    ] = None,
    allow_overlap: Annotated[
        bool,
        typer.Option(
            "--allow-overlap", help="Enroll even if the address is active in another sequence"
        ),
    ] = False,
    again: Annotated[
        bool,
        typer.Option(
            "--again",
            help="Enroll even addresses a sequence already ended (replied, completed, bounced, "
            "unsubscribed, stopped); never suppressed ones",
        ),
    ] = False,
    first_at: Annotated[
        str | None,
        typer.Option(
            "--first-at",
            help='Send step 1 exactly then, in the contact\'s zone: "2026-12-01 10:00"',
        ),
    ] = None,
    promise: Annotated[
        list[str] | None,
        typer.Option(
            "--promise",
            help='STEP=TIME: send that step exactly then (repeatable): 2="2026-12-08 10:00"',
        ),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Enroll one contact, or every row of a CSV (all rows valid, or nothing is written).

    Suppressed addresses are never enrolled; addresses a sequence already ended (replied,
    completed, bounced, unsubscribed, stopped) only with --again. A promise (--first-at,
    --promise) is kept exactly: no window, holiday, gap or pace rule moves it; only a reply or
    a stop cancels it."""

    async def go() -> None:
        settings = _settings(config)
        seq = _one_sequence(settings, sequence)
        if (email is None) == (csv_file is None):
            raise EnrollError(["give either an EMAIL or --csv FILE"])
        if csv_file is not None:
            if var:
                raise EnrollError(["--var goes with a single EMAIL; put the values in CSV columns"])
            await _enroll_csv(
                settings, seq, csv_file, first_at, promise or [], allow_overlap, again
            )
            return
        person = contacts.contact(seq, email or "", _vars(seq, var or [], allow_unknown))
        now = SystemClock().now()
        promised = enrolment.parse_promise_options(first_at, promise or [])
        async with db.connected(settings.database):
            result = await enrolment.enroll(
                Etiquette(settings),
                seq,
                [person],
                now,
                allow_overlap=allow_overlap,
                promised=promised,
                again=again,
            )
        address = person.email
        if result.blocked:
            row = result.blocked[address]
            through = f" through its domain {row.email}" if row.email != address else ""
            if suppression.is_hashed(row.email):
                through = " (they asked to be forgotten: only a hash of the address is kept)"
            raise EnrollError(
                [
                    f"{address} is on the suppression list{through} ({_entry_why(row)}, since "
                    f"{row.created_at:%Y-%m-%d}); it cannot be enrolled, even with --again "
                    f"(if that entry is wrong: sequencer suppress remove {row.email} --reason ...)"
                ]
            )
        if result.skipped_active:
            raise EnrollError(
                [
                    f"{address} is already active in a sequence "
                    "(use --allow-overlap to enroll anyway, or `sequencer stop` it)"
                ]
            )
        if result.skipped_before:
            raise EnrollError(
                [
                    f"{address} was contacted before: "
                    f"{enrolment.describe(result.skipped_before[address])}; "
                    "use --again to enroll anyway"
                ]
            )
        firsts = sorted(result.first.values(), key=lambda p: p.at)
        _enrolled_summary(
            settings,
            seq,
            enrolment.Streamed(
                valid=1,
                created=len(result.created),
                first=firsts[0] if firsts else None,
                first_values=person.values,
                warnings=dict.fromkeys(result.warnings),
            ),
        )

    _run(go)


@app.command(
    cls=_Command,
    epilog=_example(
        "sequencer preview after-meeting --var first_name=Jo --var timezone=America/New_York"
    ),
)
def preview(
    sequence: Annotated[str, typer.Argument(help="Sequence id (file name without .yaml)")],
    var: Annotated[
        list[str] | None,
        typer.Option("--var", help="key=value, repeatable (timezone=, country= place the contact)"),
    ] = None,
    allow_unknown: Annotated[
        bool,
        typer.Option(
            "--allow-unknown", help="Accept a --var the sequence neither declares nor uses"
        ),
    ] = False,
    first_at: Annotated[
        str | None,
        typer.Option("--first-at", help="A promised time for step 1, in the contact's zone"),
    ] = None,
    promise: Annotated[
        list[str] | None,
        typer.Option("--promise", help="STEP=TIME, a promised time for a later step"),
    ] = None,
    now_at: Annotated[
        str | None,
        typer.Option(
            "--now",
            help="Enrolment time, ISO 8601 (an offset, or the contact's zone); default: now",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array on stdout")] = False,
    config: ConfigOpt = None,
) -> None:
    """Show every step as the contact would receive it, when it would go and why then
    (assuming no reply). Nothing is written; no server is contacted."""
    from sequencer import preview as pv
    from sequencer.lint import lint

    try:
        settings = _settings(config)
        seq = _one_sequence(settings, sequence)
        person, missing = contacts.sample(seq, _vars(seq, var or [], allow_unknown))
        etiquette = Etiquette(settings)
        zone_name = etiquette.zone_name(person.values)
        now = _parse_now(now_at, zone_name) if now_at else SystemClock().now()
        promises = enrolment.parse_promises(
            enrolment.parse_promise_options(first_at, promise or []), zone_name
        )
        steps = pv.preview(etiquette, seq, person.values, now, promises)
    except SequencerError as exc:
        raise _fail(exc) from None
    if as_json:
        sys.stdout.write(json.dumps([s.to_json() for s in steps], indent=2) + "\n")
        return
    place, window = etiquette.place(person.values), etiquette.window(seq)
    sender_zone = etiquette.mailbox_zone(seq.mailbox)
    findings: dict[int | None, list[Any]] = {}
    for finding in lint(seq):
        findings.setdefault(finding.step, []).append(finding)
    where = place.zone.key + (
        f", holidays of {place.country}" + (f"-{place.subdivision}" if place.subdivision else "")
        if place.country
        else ", no holiday calendar (set country)"
    )
    print_ = functools.partial(out.print, highlight=False, markup=False)
    print_(f"{seq.id} ({seq.path}) for {person.email}: {where}")
    print_(
        f"enrolled {pv.local(now, place.zone)}; window: "
        + (f"{window}, contact's time" if window else "none (any hour; set one in the sequence)")
        + f"; min_gap {settings.min_gap}; you: {seq.mailbox} in {sender_zone.key}"
    )
    if missing:
        print_(f"placeholders for values not given: {', '.join(missing)} (pass --var NAME=...)")
    for note in etiquette.promise_warnings(seq, person.values, promises):
        print_(f"note: {note}")
    for finding in findings.get(None, []):
        print_(f"  {finding.severity}: {finding.message}")
    for s in steps:
        kind = " (break-up)" if s.breakup else ""
        print_("")
        print_(
            f"step {s.step}{kind}: {pv.local(s.at, s.contact_zone)} for them"
            + (
                f", {pv.local(s.at, s.sender_zone)} for you"
                if s.sender_zone.key != s.contact_zone.key
                else ""
            )
            + f"  [wait {s.wait}]"
        )
        for reason in s.reasons:
            print_(
                "  why: "
                + pv.explain(
                    reason,
                    place=place,
                    window=window,
                    min_gap=settings.gap,
                    zone_name=place.zone.key,
                )
            )
        for finding in findings.get(s.step, []):
            print_(f"  {finding.severity}: {finding.message} [{finding.code}]")
        print_(f"  Subject: {s.subject}")
        for line in s.body.rstrip("\n").splitlines():
            print_(f"  | {line}")
    print_("")
    print_(
        "Assumes no reply. At send time the mailbox's pace can add minutes (spacing) or roll a "
        "step to the next opening when its daily limit is reached."
    )


def _parse_now(text: str, zone: str) -> datetime:
    try:
        return parse_local(text, zone).at
    except ValueError:
        raise EnrollError(
            [f"--now {text!r}: expected ISO 8601, e.g. 2026-12-01T09:00:00+00:00"]
        ) from None


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def _row(
    e: Any,
    ended: Any,
    steps_total: int | None,
    etiquette: Etiquette,
    held: Any,
    box: MailboxView | None = None,
) -> dict[str, Any]:
    active = e.state == "active"
    zone = etiquette.place(e.variables).zone
    # A contact's own hold first; else its mailbox's (nothing goes from a held mailbox).
    hold, hold_since, hold_detail = e.hold, e.hold_since, e.hold_detail
    if hold is None and box is not None and box.hold is not None:
        hold, hold_since, hold_detail = box.hold, box.since, box.last_error
    return {
        "id": e.id,
        "email": e.email,
        "sequence": e.sequence,
        "mailbox": e.mailbox,
        "state": e.state,
        "reason": e.reason,
        "steps_sent": e.steps_sent,
        "steps_total": steps_total,
        "next_step": e.steps_sent + 1 if active else None,
        "next_send_at": _iso(e.next_at) if active else None,
        "local_next_send_at": e.next_at.astimezone(zone).isoformat()
        if active and e.next_at
        else None,
        "timezone": zone.key,
        "next_reasons": list(e.next_reasons or []) if active else [],
        "promised": bool(e.promised) if active else False,
        "promises": {
            step: {"local": p["local"].replace("T", " ")[:16], "zone": p["zone"]}
            for step, p in sorted((e.promises or {}).items(), key=lambda kv: int(kv[0]))
        },
        "paused_until": _iso(e.paused_until) if active else None,
        "held_by": held if active else None,
        "hold": str(hold) if active and hold else None,
        "hold_since": _iso(hold_since) if active and hold else None,
        "hold_detail": hold_detail if active and hold else None,
        "enrolled_at": _iso(e.enrolled_at),
        "last_sent_at": _iso(e.last_sent_at),
        "finished_at": _iso(e.finished_at),
        "last_error": e.last_error,
        "reply_intent": e.reply_intent,
        "follow_up_on": e.follow_up_on.isoformat() if e.follow_up_on else None,
        "referral": list(e.referral or []),
        "ended_by": None
        if ended is None
        else {
            "subject": ended.subject,
            "from": ended.from_address,
            "verdict": ended.verdict,
            "kind": ended.kind,
            "rules": ended.rules,
            "received_at": _iso(ended.received_at),
        },
    }


async def _pace_gates(etiquette: Etiquette, now: datetime) -> dict[str, dict[str, Any]]:
    """Each mailbox's live pace state, as the daemon would see it if it claimed work now."""
    from sequencer import pacing

    gates = {}
    for name in etiquette.settings.mailboxes:
        zone, pace = etiquette.mailbox_zone(name), etiquette.pace(name)
        load = await queries.mailbox_load(name, pacing.day_start(now, zone))
        gate = pacing.closed_until(now, pace, zone, load)
        if gate is not None:
            gates[name] = {
                "reason": gate.reason,
                "opens_at": _iso(gate.opens_at),
                "sent_today": load.sent_today,
                "daily_limit": pace.daily_limit,
            }
    return gates


def _held_by(gate: dict[str, Any] | None, e: Any, now: datetime) -> dict[str, Any] | None:
    """The mailbox gate that holds this contact's due step: pace holds all but a promise,
    a reputation pause holds everything."""
    if gate is None or e.next_at is None or e.next_at > now:
        return None
    return gate if gate["reason"] == "reputation" or not e.promised else None


def _asked(r: dict[str, Any]) -> str:
    """What their reply asked for: `; intent not_now, from 2027-07-01; referral: ann@...`."""
    parts = []
    if r["reply_intent"]:
        parts.append(f"intent {r['reply_intent']}")
    if r["follow_up_on"]:
        parts.append(f"from {r['follow_up_on']}")
    if r["referral"]:
        people = [
            f"{p['name']} <{p['address']}>" if p.get("name") else str(p["address"])
            for p in r["referral"]
        ]
        parts.append("referral: " + ", ".join(people))
    return ("; " + ", ".join(parts)) if parts else ""


def _why(r: dict[str, Any]) -> str:
    """The table's `why` column: for an active contact why the next send is then."""
    if r["state"] != "active":
        asked = _asked(r)
        if r["ended_by"]:
            eb = r["ended_by"]
            rules = ", ".join(eb["rules"])
            return f"{r['reason']} (from {eb['from']}, {eb['verdict']}, rules: {rules}){asked}"
        return (r["reason"] or "") + asked
    parts = []
    if r["hold"] == Hold.MANUAL_PAUSE:  # the contact's own, or its mailbox's
        parts.append(f"HELD ({r['hold']}): {r['hold_detail']}")
    elif r["hold"]:
        short = SHORT[Hold(r["hold"])].replace("EMAIL", r["email"])
        parts.append(f"HELD ({r['hold']}): {short}")
    if r["promised"]:
        parts.append("promised: kept exactly")
    if r["paused_until"]:
        parts.append(f"out of office until {r['paused_until'][:10]}")
    parts += [
        reason.replace("holiday:", "holiday: ").replace("manual_pause", "after a pause")
        for reason in r["next_reasons"]
        if reason not in {"promise", "out_of_office", "follow_up_on"}
    ]
    if "follow_up_on" in r["next_reasons"]:
        parts.insert(0, "waits for the day their reply named")
    if r["held_by"]:
        held = r["held_by"]
        if held["reason"] == "reputation":
            parts.append(
                f"mailbox paused until {held['opens_at'][:16].replace('T', ' ')} UTC: a server "
                "refused our mail for our reputation (see the mailbox.paused log line)"
            )
        elif held["reason"] == "pace:daily_limit":
            parts.append(
                f"pace: {held['sent_today']}/{held['daily_limit']} sent today, "
                f"resumes {held['opens_at'][:16].replace('T', ' ')} UTC"
            )
        else:
            parts.append(f"pace: spacing until {held['opens_at'][11:19]} UTC")
    if r["last_error"]:
        parts.append(f"retrying: {r['last_error']}")
    return "; ".join(parts)


async def _mailbox_views(settings: Settings, now: datetime) -> dict[str, MailboxView]:
    """Each mailbox's inbox and hold as recorded by the daemon, read from any process."""
    states = await queries.mailbox_states()
    views = {}
    for name, mailbox in settings.mailboxes.items():
        st = states.get(name)
        views[name] = replace(
            mailbox_view(
                name,
                inbox=st.inbox if st else None,
                inbox_since=st.inbox_since if st else None,
                caught_up_at=st.caught_up_at if st else None,
                inbox_error=st.inbox_error if st else None,
                smtp_failed_since=st.smtp_failed_since if st else None,
                smtp_error=st.smtp_error if st else None,
                paused_until=st.paused_until if st else None,
                pause_reason=st.pause_reason if st else None,
                keepalive=mailbox.imap.keepalive_seconds,
                now=now,
                manual_since=st.manual_since if st else None,
                manual_until=st.manual_until if st else None,
            ),
            watcher=st.watcher if st else None,
        )
    return views


def _print_mailboxes(views: dict[str, MailboxView], as_json: bool) -> None:
    rows = [
        {
            "mailbox": v.mailbox,
            "inbox": str(v.inbox),
            "held_reason": str(v.hold) if v.hold else None,
            "since": _iso(v.since),
            "last_error": v.last_error,
            "watcher": v.watcher,
        }
        for v in views.values()
    ]
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("mailbox", "inbox", "held", "since (UTC)", "last error", "watched by"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["mailbox"],
            r["inbox"],
            r["held_reason"] or "-",
            (r["since"] or "")[:16].replace("T", " "),
            r["last_error"] or "",
            r["watcher"] or "",
        )
    out.print(table, highlight=False)
    for hold in dict.fromkeys(v.hold for v in views.values() if v.hold):
        out.print(f"{hold}: {ADVICE[hold]}", highlight=False)


#: Rows read per query by `status`: memory stays flat whatever the size of the table.
PAGE = 500


def _totals(settings: Settings) -> dict[str, int]:
    """Each sequence's number of steps (for `sent 1/4`), from the files as they are now."""
    totals: dict[str, int] = {}
    for path in settings.sequences.glob("*.yaml"):
        try:
            totals[path.stem] = len(load_sequence(path).steps)
        except SequencerError:
            continue
    return totals


async def _facts(settings: Settings, now: datetime) -> Any:
    """What the summary needs, in a few grouped queries whatever the number of rows."""
    from sequencer.summary import Facts, NextSend

    views = await _mailbox_views(settings, now)
    held = [name for name, v in views.items() if v.hold is not None]
    tallies = await queries.counts()
    active = {t.mailbox for t in tallies if t.state == State.ACTIVE}
    first, due_now = await queries.next_sends(now, held, active)
    nxt = None
    if first is not None and first.next_at is not None:
        nxt = NextSend(
            first.next_at, first.email, first.sequence, first.steps_sent + 1, first.mailbox
        )
    etiquette = Etiquette(settings)
    return Facts(
        tallies=[(t.mailbox, t.state, t.hold, t.n) for t in tallies],
        views=views,
        next_send=nxt,
        due_now=due_now,
        sent_day=await queries.sent_by_mailbox(
            now - timedelta(days=1), {t.mailbox for t in tallies} | set(views)
        ),
        now=now,
        zone=ZoneInfo(settings.timezone),
        zones={name: etiquette.mailbox_zone(name) for name in settings.mailboxes},
    )


async def _rows(
    settings: Settings, filters: dict[str, str | None], limit: int | None, now: datetime
) -> Any:
    """`status --json` objects for the matching enrollments, read PAGE at a time by id."""
    etiquette = Etiquette(settings)
    totals = _totals(settings)
    views = await _mailbox_views(settings, now)
    gates = await _pace_gates(etiquette, now)
    after, left = 0, limit
    while left is None or left > 0:
        size = PAGE if left is None else min(PAGE, left)
        page = await queries.page(after, size, **filters)
        for e, ended in page:
            yield _row(
                e,
                ended,
                totals.get(e.sequence),
                etiquette,
                _held_by(gates.get(e.mailbox), e, now),
                views.get(e.mailbox),
            )
        if len(page) < size:
            return
        after = page[-1][0].id
        left = None if left is None else left - len(page)
    # The limit is reached: say whether there is more.
    if await queries.page(after, 1, **filters):
        yield None


def _check_state(state: str | None) -> None:
    from sequencer.states import State

    known = [str(s) for s in State]
    if state is not None and state not in known:
        raise EnrollError(
            [
                f"--state {state}: not a state{_did_you_mean(state, known)}; "
                f"one of {', '.join(known)}"
            ]
        )


@app.command(
    cls=_Command,
    epilog=_example(
        "sequencer status   |   sequencer status jo@acme.test   |   "
        "sequencer status --state failed --limit 20   |   sequencer status --watch"
    ),
)
def status(
    email: Annotated[str | None, typer.Argument(help="Only this address (shows rows)")] = None,
    sequence: Annotated[
        str | None, typer.Option("--sequence", help="Rows of this sequence")
    ] = None,
    state: Annotated[
        str | None, typer.Option("--state", help="Rows in this state: active, failed, replied...")
    ] = None,
    mailbox: Annotated[str | None, typer.Option("--mailbox", help="Rows of this mailbox")] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="At most this many rows")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Every matching row as a JSON array on stdout")
    ] = False,
    mailboxes: Annotated[
        bool,
        typer.Option("--mailboxes", help="Each mailbox: its inbox watcher and any hold"),
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh every --interval seconds until Ctrl-C")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.5, help="Seconds between --watch refreshes")
    ] = 5.0,
    config: ConfigOpt = None,
) -> None:
    """Without arguments, a summary: counts by state and by mailbox, the next send, what is
    held and why. With an EMAIL or a filter, one row per enrollment (paged on a terminal):
    state, steps sent, the next send in the contact's zone and why then (window, holiday,
    gap, pace, promise, out-of-office, a hold), or why it ended. --json: every matching row.
    --mailboxes: one row per mailbox."""
    from sequencer import pager, summary

    address = email.strip().lower() if email else None
    filters = {"email": address, "sequence": sequence, "state": state, "mailbox": mailbox}
    wants_rows = as_json or limit is not None or any(v is not None for v in filters.values())

    async def frame(settings: Settings) -> list[str]:
        now = SystemClock().now()
        width = out.width
        if not wants_rows:
            return summary.summary_lines(await _facts(settings, now), width)
        cols = summary.Columns.for_width(width)
        lines = summary.header(cols)
        room = limit or max((out.height - 6) // 2, 5)
        shown, more = 0, False
        async for row in _rows(settings, filters, room, now):
            if row is None:
                more = True
                continue
            shown += 1
            lines += summary.row_lines(row, _why(row), cols, now)
        return [*lines, summary.count_line(shown, more)]

    async def go() -> None:
        _check_state(state)
        if watch and (as_json or mailboxes):
            raise EnrollError(["--watch shows the summary or rows; not with --json or --mailboxes"])
        settings = _settings(config)
        now = SystemClock().now()
        async with db.connected(settings.database):
            if mailboxes:
                _print_mailboxes(await _mailbox_views(settings, now), as_json)
                return
            if watch:
                await _watch(lambda: frame(settings), interval)
                return
            if not wants_rows:
                for line in summary.summary_lines(await _facts(settings, now), out.width):
                    out.print(line, highlight=False, markup=False)
                return
            if as_json:
                await _json_rows(_rows(settings, filters, limit, now))
                return
            with pager.Output(page=True) as sink:
                cols = summary.Columns.for_width(out.width)
                shown, more = 0, False
                async for row in _rows(settings, filters, limit, now):
                    if row is None:
                        more = True
                        continue
                    if not shown:
                        sink.write("\n".join(summary.header(cols)) + "\n")
                    shown += 1
                    sink.write("\n".join(summary.row_lines(row, _why(row), cols, now)) + "\n")
                if shown:
                    sink.write(summary.count_line(shown, more) + "\n")
        if not shown:
            out.print("no enrollments" + (f" for {email}" if email else " match"))

    try:
        _run(go)
    except pager.Closed:
        pager.quiet_broken_pipe()
    except KeyboardInterrupt:  # --watch ends with Ctrl-C; so may a long listing
        raise typer.Exit(0) from None


async def _json_rows(rows: Any) -> None:
    """A JSON array written as it is read, byte for byte what json.dumps(rows, indent=2)
    would give for the whole list."""
    from sequencer.pager import Output

    with Output(page=False) as sink:
        first = True
        async for row in rows:
            if row is None:
                continue
            text = json.dumps(row, indent=2).replace("\n", "\n  ")
            sink.write(("[\n  " if first else ",\n  ") + text)
            first = False
        sink.write("[]\n" if first else "\n]\n")


async def _watch(frame: Callable[[], Coroutine[Any, Any, list[str]]], interval: float) -> None:
    """Refresh `frame` every `interval` seconds until Ctrl-C: in place on a terminal (rich
    Live), as successive frames anywhere else."""
    from rich.live import Live

    title = f"every {interval:g}s; Ctrl-C to stop"
    if not out.is_terminal:
        while True:
            lines = await frame()
            out.print("\n".join([title, *lines, ""]), highlight=False, markup=False)
            sys.stdout.flush()
            await asyncio.sleep(interval)
    with Live(console=out, auto_refresh=False, transient=False) as live:
        while True:
            lines = await frame()
            live.update(Text("\n".join([title, *lines])), refresh=True)
            await asyncio.sleep(interval)


def _when(at: datetime, zone: ZoneInfo) -> str:
    """`Mon 04 Jan 2027 09:00 CET`: a time as the person it concerns reads it."""
    local = at.astimezone(zone)
    return f"{local:%a %d %b %Y %H:%M} {local.tzname()}"


def _ended_note(address: str, rows: list[Any]) -> str:
    """What each ended enrollment of an address is, and what to use instead of pause/resume:
    `resume` never revives a stopped or failed contact."""
    parts = [f"'{e.sequence}' is {e.state}" for e in rows]
    fixes = []
    if any(e.state == "failed" for e in rows):
        fixes.append(
            f"a failed one goes on with `sequencer retry {address}` once its cause is fixed"
        )
    if any(e.state not in ("failed", "active") for e in rows):
        fixes.append(
            "an ended one is never revived; to write to them again: "
            f"`sequencer enroll SEQUENCE {address} --again`"
        )
    return f"{address} has no active enrollment ({', '.join(parts)}); " + "; ".join(fixes)


async def _enrollments(address: str) -> list[Any]:
    """Every enrollment of an address (active first), or EnrollError with 'did you mean'."""
    rows = await queries.enrollments_of(address)
    if not rows:
        near = await queries.similar_addresses(address)
        raise EnrollError(
            [
                f"no enrollment for {address}{_did_you_mean(address, near)} "
                "(see `sequencer status --limit 50`)"
            ]
        )
    return rows


def _mailbox_name(settings: Settings, name: str) -> str:
    if name not in settings.mailboxes:
        known = sorted(settings.mailboxes)
        raise EnrollError(
            [
                f"unknown mailbox '{name}'{_did_you_mean(name, known)}; "
                f"{settings.source} has {', '.join(known) or 'none'}"
            ]
        )
    return name


def _until(text: str, now: datetime, zone: ZoneInfo) -> datetime:
    """The instant a `--until DATE` pause ends (the start of that day in `zone`)."""
    from sequencer import pauses

    try:
        day = pauses.parse_day(text, now, zone)
    except ValueError as exc:
        raise EnrollError([str(exc)]) from None
    end = pauses.pause_end(day, zone)
    if why := pauses.until_in_future(day, end, now, zone):
        raise EnrollError([why])
    return end


def _chosen(rows: list[Any], sequence: str | None, address: str, what: str) -> list[Any]:
    from sequencer import pauses

    try:
        wanted = pauses.pick([e.sequence for e in rows], sequence, address, what)
    except ValueError as exc:
        raise EnrollError([str(exc)]) from None
    return [e for e in rows if e.sequence in wanted]


@app.command(
    cls=_Command,
    epilog=_example(
        "sequencer pause jo@acme.test --until 2027-01-04   |   "
        'sequencer pause --mailbox sales --until "4 January"'
    ),
)
def pause(
    email: Annotated[str | None, typer.Argument(help="Contact address")] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="Resume by itself at the start of this day, in the contact's zone (the "
            'mailbox\'s with --mailbox): 2027-01-04, "4 January", "next monday"',
        ),
    ] = None,
    sequence: Annotated[
        str | None, typer.Option("--sequence", help="Only this sequence of theirs")
    ] = None,
    mailbox: Annotated[
        str | None,
        typer.Option("--mailbox", help="Pause a whole mailbox instead (a salesperson's holiday)"),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Pause a contact, or a whole mailbox: nothing is sent until --until DATE, or until
    `sequencer resume`. The contact stays active (held: manual_pause); replies are still
    watched and stop the sequence as always. Afterwards the next step goes at the first time
    the window, holidays and the gap allow."""

    async def go() -> list[str]:
        settings = _settings(config)
        etiquette = Etiquette(settings)
        now = SystemClock().now()
        if (email is None) == (mailbox is None):
            raise EnrollError(["give either an EMAIL or --mailbox NAME"])
        if mailbox is not None:
            if sequence is not None:
                raise EnrollError(["--sequence goes with an EMAIL, not with --mailbox"])
            name = _mailbox_name(settings, mailbox)
            zone = etiquette.mailbox_zone(name)
            end = _until(until, now, zone) if until else None
            async with db.connected(settings.database):
                await queries.pause_mailbox_by_hand(name, end, now)
            when = _when(end, zone) if end else f"`sequencer resume --mailbox {name}`"
            return [
                f"paused mailbox '{name}' until {when}: nothing is sent from it until then; "
                "its inbox is still watched, so replies stop sequences as always"
            ]
        seqs = _sequences(settings)
        address = (email or "").strip().lower()
        done = []
        async with db.connected(settings.database):
            rows = await _enrollments(address)
            active = [e for e in rows if e.state == "active"]
            if not active:
                raise EnrollError([_ended_note(address, rows)])
            chosen = _chosen(active, sequence, address, "active")
            for e in chosen:
                if e.hold is not None and e.hold is not Hold.MANUAL_PAUSE:
                    raise EnrollError(
                        [f"{address} in '{e.sequence}' is held ({e.hold}): {ADVICE[e.hold]}"]
                    )
            last = await queries.last_contact(address)
            for e in chosen:
                zone = etiquette.place(e.variables).zone
                end = _until(until, now, zone) if until else None
                next_at: datetime | None = None
                reasons: tuple[str, ...] = ()
                keep = True
                if end is not None:
                    seq = seqs.get(e.sequence)
                    base = max(e.next_at or end, end)
                    planned = etiquette.settle(
                        seq,
                        e.variables,
                        base,
                        last_contact=last,
                        paused_until=None,
                        step=e.steps_sent + 1,
                    )
                    next_at, reasons = planned.at, ("manual_pause", *planned.reasons)
                    keep = not (e.promised and (e.next_at is None or e.next_at < end))
                    if not keep:
                        err.print(
                            f"note: step {e.steps_sent + 1} of '{e.sequence}' was promised for "
                            f"{_when(e.next_at, zone)}, inside the pause: it goes at the first "
                            "allowed time after the pause instead",
                            highlight=False,
                        )
                detail = f"until {_when(end, zone)}" if end else "until `sequencer resume`"
                await queries.pause_contact(
                    e.id,
                    until=end,
                    next_at=next_at,
                    reasons=reasons,
                    detail=f"paused by hand {detail}",
                    now=now,
                    keep_promise=keep,
                )
                line = f"paused {address} in '{e.sequence}' {detail}"
                if next_at is not None:
                    line += f"; then step {e.steps_sent + 1} at {_when(next_at, zone)}"
                done.append(line)
        return done

    for line in _run(go):
        out.print(line, highlight=False, markup=False)


def _replanned(
    etiquette: Etiquette, seq: Sequence | None, enr: Any, last: datetime | None, now: datetime
) -> datetime:
    """When the next step goes after a pause is lifted: its wait from the last send, then
    the first time the window, holidays and the gap allow, and not before now."""
    step = enr.steps_sent + 1
    at = now
    if seq is not None and step <= len(seq.steps):
        planned, _ = etiquette.step_time(
            seq,
            step,
            enr.variables,
            after=enr.last_sent_at or enr.enrolled_at,
            last_contact=last,
            paused_until=enr.paused_until,
        )
        at = max(at, planned.at)
    return etiquette.settle(
        seq, enr.variables, at, last_contact=last, paused_until=enr.paused_until, step=step
    ).at


@app.command(
    cls=_Command,
    epilog=_example(
        "sequencer resume jo@acme.test   |   sequencer resume jo@acme.test --sent   |   "
        "sequencer resume --mailbox sales"
    ),
)
def resume(
    email: Annotated[str | None, typer.Argument(help="Contact address")] = None,
    sent: Annotated[
        bool, typer.Option("--sent", help="The uncertain step did reach them: go on from it")
    ] = False,
    resend: Annotated[
        bool,
        typer.Option("--resend", help="It did not: send it again (same Message-ID)"),
    ] = False,
    sequence: Annotated[
        str | None, typer.Option("--sequence", help="Only this sequence of theirs")
    ] = None,
    mailbox: Annotated[
        str | None, typer.Option("--mailbox", help="Lift a mailbox's pause (`pause --mailbox`)")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Release a contact held for a person to decide: paused by hand (`sequencer pause`),
    after an uncertain send (check your Sent folder first, then say --sent or --resend), or
    after an inbound message that could not be handled (read it yourself first). Never
    revives a stopped or failed contact (`sequencer retry` puts a failed one back)."""
    from sequencer.worker import settle

    async def go() -> list[str]:
        if sent and resend:
            raise EnrollError(["say --sent or --resend, not both"])
        if (email is None) == (mailbox is None):
            raise EnrollError(["give either an EMAIL or --mailbox NAME"])
        settings = _settings(config)
        now = SystemClock().now()
        if mailbox is not None:
            name = _mailbox_name(settings, mailbox)
            async with db.connected(settings.database):
                lifted = await queries.resume_mailbox_by_hand(name)
                view = (await _mailbox_views(settings, now))[name]
            if not lifted:
                why = f" (it is held: {view.hold}: {ADVICE[view.hold]})" if view.hold else ""
                raise EnrollError([f"mailbox '{name}' is not paused by hand{why}"])
            still = f"; still held: {view.hold}: {ADVICE[view.hold]}" if view.hold else ""
            return [f"mailbox '{name}': sending resumes{still}"]
        etiquette = Etiquette(settings)
        seqs = _sequences(settings)
        address = (email or "").strip().lower()
        done: list[str] = []
        async with db.connected(settings.database):
            rows = await _enrollments(address)
            active = [e for e in rows if e.state == "active"]
            if not active:
                raise EnrollError([_ended_note(address, rows)])
            active = _chosen(active, sequence, address, "active")
            held = [e for e in active if e.hold is not None]
            if not held:
                views = await _mailbox_views(settings, now)
                boxes = [views[e.mailbox] for e in active if e.mailbox in views]
                if any(v.hold for v in boxes):
                    v = next(v for v in boxes if v.hold)
                    assert v.hold is not None
                    raise EnrollError(
                        [
                            f"{address} is not held itself; its mailbox '{v.mailbox}' is "
                            f"({v.hold}): {ADVICE[v.hold]}"
                        ]
                    )
                raise EnrollError([f"{address} is not held (see `sequencer status {address}`)"])
            last = await queries.last_contact(address)
            for enr in held:
                if enr.hold is Hold.MANUAL_PAUSE:
                    zone = etiquette.place(enr.variables).zone
                    next_at = enr.next_at
                    if enr.promised and next_at is not None and next_at > now:
                        await queries.resume_contact(enr.id, None)  # the promise stands
                    else:
                        # Planned again as if there had been no pause (a dated pause moved
                        # it to the pause's end), and never before now.
                        next_at = _replanned(etiquette, seqs.get(enr.sequence), enr, last, now)
                        await queries.resume_contact(enr.id, next_at)
                    done.append(
                        f"{enr.sequence}: pause lifted; step {enr.steps_sent + 1} at "
                        f"{_when(next_at or now, zone)}"
                    )
                elif enr.hold is Hold.UNCERTAIN_SEND:
                    if not (sent or resend):
                        raise EnrollError(
                            [
                                f"{address}: step {enr.steps_sent + 1} of '{enr.sequence}' may or "
                                "may not have reached them. Look for it in your Sent folder, "
                                "then run again with --sent (it went) or --resend (it did not)"
                            ]
                        )
                    row = await queries.step_message(enr.id, enr.steps_sent + 1)
                    seq = seqs.get(enr.sequence)
                    if row is None or seq is None:
                        raise EnrollError(
                            [f"{address}: sequence '{enr.sequence}' is not loaded; restore it"]
                        )
                    await settle(Etiquette(settings), enr, seq, row, sent=sent, now=now)
                    done.append(
                        f"{enr.sequence}: step {row.step} "
                        + ("recorded as sent" if sent else "will be sent again")
                    )
                elif enr.hold is Hold.INBOUND_FAILED:
                    await queries.dismiss_inbound_hold(enr.id)
                    done.append(f"{enr.sequence}: released (the message is left for you)")
                else:
                    raise EnrollError([f"{address}: held ({enr.hold}): {ADVICE[enr.hold]}"])
        return done

    for line in _run(go):
        out.print(line if mailbox else f"resumed {email}: {line}", highlight=False, markup=False)


@app.command(
    cls=_Command,
    epilog=_example("sequencer retry jo@acme.test --sequence after-meeting"),
)
def retry(
    email: Annotated[str, typer.Argument(help="Contact address")],
    sequence: Annotated[
        str | None, typer.Option("--sequence", help="The sequence it failed in")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Put a failed contact back where it failed, once the cause is fixed (a template that
    would not render, a step the server refused): active again at the same step, attempts
    reset, sent as soon as every etiquette rule allows. Only for `failed`; stopped, replied
    or completed contacts are never revived."""

    async def go() -> str:
        settings = _settings(config)
        etiquette = Etiquette(settings)
        seqs = _sequences(settings)
        address = email.strip().lower()
        now = SystemClock().now()
        async with db.connected(settings.database):
            rows = await _enrollments(address)
            failed = [e for e in rows if e.state == "failed"]
            if not failed:
                states = ", ".join(f"'{e.sequence}' is {e.state}" for e in rows)
                raise EnrollError(
                    [
                        f"{address} has no failed enrollment ({states}); retry only puts a "
                        "failed contact back (held: `sequencer resume`; ended: `sequencer "
                        f"enroll SEQUENCE {address} --again`)"
                    ]
                )
            chosen = _chosen(failed, sequence, address, "failed")
            names = list(dict.fromkeys(e.sequence for e in chosen))
            if len(names) > 1:
                raise EnrollError(
                    [
                        f"{address} failed in {len(names)} sequences ({', '.join(names)}): "
                        f"say which with --sequence, e.g. --sequence {names[0]}"
                    ]
                )
            enr = chosen[0]  # the latest: enrollments_of lists the most recent first
            if any(e.state == "active" and e.sequence == enr.sequence for e in rows):
                raise EnrollError(
                    [f"{address} is active in '{enr.sequence}' again (enrolled since it failed)"]
                )
            if blocked := await queries.suppressed([address]):
                raise EnrollError(
                    [
                        f"{address} is on the suppression list ({_entry_why(blocked[address])}); "
                        "nothing can be sent to it"
                    ]
                )
            seq = seqs.get(enr.sequence)
            step = enr.steps_sent + 1
            if seq is None or step > len(seq.steps):
                raise EnrollError(
                    [
                        f"sequence '{enr.sequence}' is not loaded or has no step {step}; restore "
                        "it (`sequencer check`) before retrying"
                    ]
                )
            planned = etiquette.settle(
                seq,
                enr.variables,
                now,
                last_contact=await queries.last_contact(address),
                paused_until=enr.paused_until,
                step=step,
            )
            await queries.retry_failed(enr.id, planned.at, planned.reasons)
        zone = etiquette.place(enr.variables).zone
        return (
            f"retrying {address} in '{enr.sequence}': step {step} at "
            f"{_when(planned.at, zone)} (it had failed: {enr.reason})"
        )

    out.print(_run(go), highlight=False, markup=False)


@app.command(cls=_Command, epilog=_example("sequencer stop jo@acme.test"))
def stop(
    email: Annotated[str, typer.Argument(help="Contact address")],
    sequence: Annotated[str | None, typer.Option(help="Only this sequence")] = None,
    config: ConfigOpt = None,
) -> None:
    """Stop a contact by hand (state `stopped`, reason `manual`)."""

    async def go() -> int:
        settings = _settings(config)
        async with db.connected(settings.database):
            ended = await queries.stop_by_hand(email.strip().lower(), sequence, SystemClock().now())
        if not ended:
            raise EnrollError(
                [f"{email} has no active enrollment" + (f" in '{sequence}'" if sequence else "")]
            )
        return len(ended)

    n = _run(go)
    out.print(f"stopped {n} enrollment(s) of {email}", highlight=False)


agenda_app = typer.Typer(
    help="What needs you: interested replies, not-now dates coming due, referrals, erasure "
    "requests.",
    cls=_Group,
    epilog=_example("sequencer agenda --all"),
)
app.add_typer(agenda_app, name="agenda")

#: A not-now item shows this long before the day they named.
AGENDA_HORIZON = timedelta(days=14)


def _agenda_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": str(row.kind),
        "email": row.email,
        "sequence": row.sequence,
        "received_at": _iso(row.received_at),
        "follow_up_on": row.follow_up_on.isoformat() if row.follow_up_on else None,
        "referral": list(row.referral or []),
        "excerpt": row.excerpt,
    }


@agenda_app.callback(invoke_without_command=True)
def agenda(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array on stdout")] = False,
    show_all: Annotated[
        bool,
        typer.Option("--all", help="Also not-now dates more than 14 days away"),
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """List what needs you, newest first: interested replies to answer now, not-now dates
    due within 14 days (or with no date), referrals, erasure requests; each with the first
    lines of the reply. `sequencer agenda done ID` clears an item."""
    if ctx.invoked_subcommand is not None:
        return

    async def go() -> tuple[list[Any], dict[int, str]]:
        settings = _settings(config)
        today = SystemClock().now().astimezone(ZoneInfo(settings.timezone)).date()
        async with db.connected(settings.database):
            rows = await queries.agenda(None if show_all else today + AGENDA_HORIZON)
        return rows, {r.id: r.note for r in rows}

    rows, notes = _run(go)
    items = [_agenda_json(r) for r in rows]
    if as_json:
        sys.stdout.write(json.dumps(items, indent=2) + "\n")
        return
    if not items:
        out.print("nothing on the agenda" + ("" if show_all else " (--all: later dates too)"))
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("who", overflow="fold", min_width=14, max_width=26)
    table.add_column("what", overflow="fold", min_width=20, ratio=1)
    for item in items:
        when = f"received {item['received_at'][:10]}"
        if item["follow_up_on"]:
            when += f", from {item['follow_up_on']}"
        who = Text(item["email"])
        if item["sequence"]:
            who.append(f"\n{item['sequence']}", style="dim")
        what = Text(when, style="dim")
        note = suppression.one_line(notes.get(item["id"], ""))
        if note:
            what.append("\n" + note)
        if item["excerpt"]:
            what.append(
                "\n\u201c" + suppression.one_line(item["excerpt"]) + "\u201d", style="italic"
            )
        table.add_row(str(item["id"]), item["kind"], who, what)
    out.print(table, highlight=False)


@agenda_app.command("done", cls=_Command, epilog=_example("sequencer agenda done 12"))
def agenda_done(
    item_id: Annotated[int, typer.Argument(metavar="ID", help="The item's id (see `agenda`)")],
    config: ConfigOpt = None,
) -> None:
    """Clear one item: you dealt with it."""

    async def go() -> Any:
        settings = _settings(config)
        async with db.connected(settings.database):
            row = await queries.agenda_done(item_id)
        if row is None:
            raise AgendaError(
                f"no agenda item {item_id} (it was cleared already, or never existed; "
                "see `sequencer agenda --all`)"
            )
        return row

    row = _run(go)
    out.print(f"cleared {item_id}: {row.kind} {row.email}", highlight=False, markup=False)


@app.command(cls=_Command, epilog=_example("sequencer forget jo@acme.test"))
def forget(
    email: Annotated[str, typer.Argument(help="The address whose data is erased")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
    config: ConfigOpt = None,
) -> None:
    """Erase everything stored about a person (GDPR Art. 17): their enrollments, the messages
    sent to them (and the bytes kept of them), their inbound messages and excerpts, agenda
    items, suppression entries and mentions in other rows; keep only a hashed suppression
    entry, so they are never written to again. Irreversible; one transaction."""

    try:
        address = normalize_address(email)
    except ValueError as exc:
        raise _fail(EnrollError([f"{email}: {exc}"])) from None
    if not yes:
        try:
            settings = _settings(config)
        except SequencerError as exc:
            raise _fail(exc) from None
        sure = typer.confirm(
            f"Erase everything stored about {address} in {db.redact(settings.database)}? "
            "This cannot be undone",
            default=False,
            err=True,
        )
        if not sure:
            err.print("nothing erased", highlight=False)
            raise typer.Exit(1)

    async def go() -> queries.Forgotten:
        settings = _settings(config)
        async with db.connected(settings.database):
            return await queries.forget(address, SystemClock().now())

    done = _run(go)
    out.print(
        f"forgot {address}: erased {done.enrollments} enrollment(s), {done.sent_messages} sent "
        f"message(s), {done.inbound_messages} inbound message(s), {done.agenda_items} agenda "
        f"item(s), {done.suppressions} suppression entr{'y' if done.suppressions == 1 else 'ies'}"
        + (f", {done.referrals} referral mention(s)" if done.referrals else "")
        + (f", {done.mentions} mention(s) in other rows" if done.mentions else "")
        + f"; kept {done.entry} so they are never written to again",
        highlight=False,
        markup=False,
    )


suppress_app = typer.Typer(
    help="The suppression list: addresses and @domains no sequence may enroll or send to.",
    no_args_is_help=True,
    cls=_Group,
    epilog=_example('sequencer suppress add jo@acme.test --reason "asked by phone"'),
)
app.add_typer(suppress_app, name="suppress")


def _entry_why(row: Any) -> str:
    """An entry's reason and detail on one bounded line."""
    why, detail = suppression.one_line(str(row.reason)), suppression.one_line(str(row.detail))
    text = f"{why}: {detail}" if detail else why
    return text if len(text) <= 120 else text[:119] + "…"


def _entry(raw: str) -> str:
    try:
        return suppression.normalize_entry(raw)
    except ValueError as exc:
        raise SuppressionError(
            [f"{exc} (give an address, or @domain for every address at a domain)"]
        ) from None


def _reason(text: str) -> str:
    try:
        reason = suppression.check_reason(text)
    except ValueError as exc:
        raise SuppressionError([f"--reason: {exc}"]) from None
    return reason


def _entry_json(row: Any) -> dict[str, Any]:
    return {
        "email": row.email,
        "domain": suppression.is_domain(row.email),
        "hashed": suppression.is_hashed(row.email),
        "reason": row.reason,
        "detail": row.detail,
        "source": row.source or suppression.source_for(row.reason),
        "since": _iso(row.created_at),
    }


def _lift_json(row: Any) -> dict[str, Any]:
    return {
        "email": row.email,
        "reason": row.reason,
        "lifted_at": _iso(row.lifted_at),
        "suppressed": {
            "reason": row.suppressed_reason,
            "detail": row.suppressed_detail,
            "source": row.suppressed_source,
            "since": _iso(row.suppressed_at),
        },
    }


def _stopped_note(stopped: list[Any]) -> str:
    shown = sorted({e.email for e in stopped})
    more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
    return f"stopped {len(stopped)} active enrollment(s): {', '.join(shown[:5])}{more}"


@suppress_app.command("list", cls=_Command, epilog=_example("sequencer suppress list --lifted"))
def suppress_list(
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array on stdout")] = False,
    lifted: Annotated[
        bool, typer.Option("--lifted", help="The log of entries taken off the list instead")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Every entry: the address or @domain, where it came from, since when and why."""

    async def go() -> list[dict[str, Any]]:
        settings = _settings(config)
        async with db.connected(settings.database):
            if lifted:
                return [_lift_json(r) for r in await queries.suppression_lifts()]
            return [_entry_json(r) for r in await queries.suppression_list()]

    rows = _run(go)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    if not rows:
        out.print("nothing was ever lifted" if lifted else "the suppression list is empty")
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    columns = (
        ("entry", "lifted", "why lifted", "was") if lifted else ("entry", "source", "since", "why")
    )
    for col in columns:
        wraps = col in {"entry", "why lifted", "was", "why"}
        table.add_column(col, no_wrap=not wraps, overflow="fold", min_width=12 if wraps else None)
    for r in rows:
        if lifted:
            was = r["suppressed"]
            table.add_row(
                r["email"],
                r["lifted_at"][:10],
                suppression.one_line(r["reason"]),
                f"{was['source']} since {was['since'][:10]}: {_entry_why(SimpleNamespace(**was))}",
            )
        else:
            entry = r["email"]
            if r["hashed"]:
                entry = f"{entry[:19]}… (hashed: forgotten)"
            table.add_row(entry, r["source"], r["since"][:10], _entry_why(SimpleNamespace(**r)))
    out.print(table, highlight=False)


@suppress_app.command(
    "add",
    cls=_Command,
    epilog=_example('sequencer suppress add @competitor.test --reason "a competitor"'),
)
def suppress_add(
    entry: Annotated[str, typer.Argument(help="An address, or @domain for every address there")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (shown in the list)")] = None,
    config: ConfigOpt = None,
) -> None:
    """Suppress an address or a whole @domain, and stop the active enrollments it covers."""

    async def go() -> tuple[str, bool, Any, list[Any]]:
        key = _entry(entry)
        why = _reason(reason or "") or "added by hand"
        settings = _settings(config)
        now = SystemClock().now()
        async with db.connected(settings.database):
            new = await queries.suppress(key, why, "", now, source="manual")
            row = await queries.suppression_entry(key)
            # Stopped even when the entry was there: nothing it covers should still be active.
            stopped = await queries.stop_suppressed([key], f"suppressed by hand ({why})", now)
        return key, new, row, stopped

    key, new, row, stopped = _run(go)
    if new:
        out.print(f"suppressed {key} ({_entry_why(row)})", highlight=False, markup=False)
    else:
        source = row.source or suppression.source_for(row.reason)
        out.print(
            f"{key} was already suppressed since {row.created_at:%Y-%m-%d} "
            f"({source}: {_entry_why(row)}); kept as it was",
            highlight=False,
            markup=False,
        )
    if stopped:
        out.print(_stopped_note(stopped), highlight=False, markup=False)


@suppress_app.command(
    "remove",
    cls=_Command,
    epilog=_example('sequencer suppress remove jo@acme.test --reason "asked us to write again"'),
)
def suppress_remove(
    entry: Annotated[str, typer.Argument(help="The address or @domain to take off the list")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why it is lifted (kept in the log: list --lifted)")
    ],
    config: ConfigOpt = None,
) -> None:
    """Take an entry off the list; the reason is logged (see `list --lifted`)."""

    async def go() -> tuple[str, Any, Any]:
        key = _entry(entry)
        why = _reason(reason)
        if not why:
            raise SuppressionError(["--reason is empty: say why this entry is lifted"])
        settings = _settings(config)
        async with db.connected(settings.database):
            row = await queries.lift(key, why, SystemClock().now())
            still = (
                None if suppression.is_domain(key) else (await queries.suppressed([key])).get(key)
            )
        if row is None:
            if still is not None and suppression.is_hashed(still.email):
                raise SuppressionError(
                    [
                        f"{key} is not on the suppression list itself: they asked to be "
                        f"forgotten, and {still.email} keeps them off (to lift it: sequencer "
                        f"suppress remove {still.email} --reason ...)"
                    ]
                )
            if still is not None:
                raise SuppressionError(
                    [
                        f"{key} is not on the suppression list itself: its domain {still.email} "
                        f"is (to lift the whole domain: sequencer suppress remove {still.email} "
                        "--reason ...)"
                    ]
                )
            raise SuppressionError(
                [f"{key} is not on the suppression list (see `sequencer suppress list`)"]
            )
        return key, row, still

    key, row, still = _run(go)
    source = row.source or suppression.source_for(row.reason)
    out.print(
        f"lifted {key} (was {source} since {row.created_at:%Y-%m-%d}: {_entry_why(row)}); "
        "logged with your reason",
        highlight=False,
        markup=False,
    )
    if source in {"reply", "complaint"}:
        err.print(
            f"warning: {key} had asked not to be written to ({source}): be sure they agreed",
            highlight=False,
            markup=False,
        )
    if still is not None:
        err.print(
            f"warning: {key} is still suppressed through its domain {still.email}",
            highlight=False,
            markup=False,
        )


@suppress_app.command(
    "import", cls=_Command, epilog=_example("sequencer suppress import do-not-contact.csv")
)
def suppress_import(
    csv_file: Annotated[
        Path,
        typer.Argument(
            help="CSV with an 'email' column (addresses or @domains), optional 'reason'"
        ),
    ],
    config: ConfigOpt = None,
) -> None:
    """Add every row of a CSV at once; one bad row (listed by line) and nothing is written."""

    async def go() -> tuple[int, queries.Imported]:  # (repeated rows, outcome)
        settings = _settings(config)
        text = _csv_text(csv_file, SuppressionError)
        entries = suppression.read_csv(text, str(csv_file))
        rows = [
            (e.email, e.reason or "imported", f"from {csv_file.name} line {e.line}")
            for e in entries
        ]
        async with db.connected(settings.database):
            result = await queries.import_suppressions(
                rows, "import", SystemClock().now(), f"suppressed by import of {csv_file.name}"
            )
        return len(entries) - len({e.email for e in entries}), result

    repeated, result = _run(go)
    out.print(
        f"imported {csv_file}: {result.added} new, {result.present} already on the list"
        + (f" ({repeated} repeated row(s) counted once)" if repeated else ""),
        highlight=False,
        markup=False,
    )
    if result.stopped:
        out.print(_stopped_note(result.stopped), highlight=False, markup=False)


@app.command(
    cls=_Command,
    epilog=_example('sequencer init --address sam@vendor.example --name "Sam Seller"'),
)
def init(
    address: Annotated[
        str | None, typer.Option(help="Your mailbox's address (servers are guessed from it)")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Your name, as contacts see it")] = None,
    folder: Annotated[
        Path, typer.Option(help="Where to write sequencer.yaml (default: this folder)")
    ] = Path("."),
    force: Annotated[bool, typer.Option(help="Replace an existing sequencer.yaml")] = False,
) -> None:
    """Write a sequencer.yaml that works from this folder (and an example sequence if there
    is no sequences folder), to edit and then check with `sequencer check --strict`."""
    from sequencer import starter

    try:
        made = starter.render(address, name, starter.local_zone())
        written = starter.write(folder, made, force=force)
    except SequencerError as exc:
        raise _fail(exc) from None
    for path in written:
        out.print(f"wrote {path}", highlight=False)
    if address is None:
        out.print("edit the mailbox in it: address, servers, usernames", highlight=False)
    elif made.guessed_hosts:
        out.print(
            "the SMTP and IMAP hosts in it are guesses: check them against your provider's "
            "settings",
            highlight=False,
        )
    out.print(
        "next: export SMTP_PASSWORD=... IMAP_PASSWORD=...; sequencer check --strict",
        highlight=False,
    )


@app.command(
    cls=_Command, epilog=_example("sequencer migrate --config /etc/sequencer/sequencer.yaml")
)
def migrate(config: ConfigOpt = None) -> None:
    """Upgrade the database to this version's schema, keeping every contact. A SQLite database
    is backed up beside itself first; on PostgreSQL, one migration runs at a time."""

    async def go() -> schema.Migrated:
        return await db.migrate(_settings(config).database, datetime.now(UTC))

    done = _run(go)
    if done.backup:
        out.print(f"backed up the database to {done.backup}", highlight=False)
    if done.created:
        out.print(f"created the schema at {done.version}", highlight=False)
    if done.adopted:
        out.print(
            f"recognised a database made before migrations as {done.adopted}", highlight=False
        )
    if done.dropped:
        out.print(f"dropped empty table(s) made early: {', '.join(done.dropped)}", highlight=False)
    for name in done.applied:
        out.print(f"applied {name}", highlight=False)
    if not (done.created or done.adopted or done.applied):
        out.print(f"already up to date ({done.version})", highlight=False)


@app.command(
    cls=_Command,
    epilog=_example("sequencer auth sales --config /etc/sequencer/sequencer.yaml"),
)
def auth(
    mailbox: Annotated[str, typer.Argument(help="The mailbox to sign in (a key of mailboxes:)")],
    browser: Annotated[
        bool,
        typer.Option(
            "--browser",
            help="Sign in through a browser redirect to this machine, even where the provider "
            "offers a device code",
        ),
    ] = False,
    port: Annotated[
        int,
        typer.Option(
            "--port", help="Port for the browser's redirect on 127.0.0.1 (default: a free one)"
        ),
    ] = 0,
    config: ConfigOpt = None,
) -> None:
    """Sign a mailbox in with OAuth2 (Google Workspace, Microsoft 365) and save its refresh
    token where oauth2.refresh_token_file says (else in the state directory), mode 0600. Run
    it as the daemon's user; a running daemon picks the new token up by itself."""
    from sequencer import authflow

    async def go() -> authflow.Outcome:
        settings = _settings(config)
        box = settings.mailboxes.get(mailbox)
        if box is None:
            known = ", ".join(sorted(settings.mailboxes)) or "none"
            raise ConfigError([f"{settings.source}: no mailbox '{mailbox}' (mailboxes: {known})"])
        if box.oauth2 is None:
            raise ConfigError(
                [
                    f"{settings.source}: mailbox '{mailbox}' does not use OAuth2 (give it "
                    "auth: oauth2 on smtp and imap, and an oauth2: block)"
                ]
            )

        def say(line: str) -> None:
            out.print(line, highlight=False, markup=False, soft_wrap=True)
            out.file.flush()  # a person (or a script) is waiting on this line

        return await authflow.sign_in(box, browser=browser, port=port, say=say)

    done = _run(go)
    out.print(
        f"signed in: mailbox '{mailbox}' ({done.flow} flow); refresh token saved to "
        f"{done.path} (mode 0600)",
        highlight=False,
        markup=False,
    )


class LogFormat(enum.StrEnum):
    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


@app.command(cls=_Command, epilog=_example("sequencer run --config sequencer.yaml"))
def run(
    config: ConfigOpt = None,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format",
            help="auto: readable lines on a terminal, JSON lines otherwise (a pipe, journald)",
        ),
    ] = LogFormat.AUTO,
    lease: Annotated[
        float,
        # Hidden: for tests that kill a daemon and must not wait out the default lease.
        typer.Option("--lease-seconds", hidden=True, min=1.0),
    ] = 45.0,
) -> None:
    """The daemon, in the foreground. Logs go to stdout (JSON lines unless on a terminal).
    Under systemd (Type=notify) it reports READY, STATUS, WATCHDOG, RELOADING and STOPPING."""
    from sequencer.sdnotify import Notifier
    from sequencer.worker import Daemon

    try:
        settings = _settings(config)
        # A broken sequence file holds its own contacts, it does not stop the daemon.
        seqs, broken = load_each(settings.sequences, settings.mailboxes)
        for name, rendering in _sample_renders_each(settings, seqs).items():
            broken[name] = rendering
            del seqs[name]
        for name, box in settings.mailboxes.items():  # fail now, not at the first send
            box.smtp.password(f"{settings.source}: mailboxes.{name}.smtp")
            box.imap.password(f"{settings.source}: mailboxes.{name}.imap")
            if box.oauth2 is not None:
                box.oauth2.client_secret(f"{settings.source}: mailboxes.{name}.oauth2")
        if ca_problems := [p for name in settings.mailboxes for p in _ca_problems(settings, name)]:
            raise ConfigError(ca_problems)
        if not settings.mailboxes:
            raise ConfigError([f"{settings.source}: no mailboxes configured"])
    except SequencerError as exc:
        raise _fail(exc) from None
    logs.configure(
        sys.stdout, secrets=settings.secrets(), fmt=logs.resolve(log_format.value, sys.stdout)
    )
    notifier = Notifier()  # reads and clears $NOTIFY_SOCKET and $WATCHDOG_*
    if os.geteuid() == 0:
        # Warned, not refused: containers and CI run as root on purpose. The harm root could
        # do to the service (files it cannot open) is refused where the database is opened.
        structlog.get_logger("sequencer").warning(
            "daemon.running_as_root",
            advice="run it as the service user (systemctl start sequencer, or sudo -u sequencer)",
        )

    async def go() -> None:
        # The lifecycle in one stack, unwound in reverse: the lock, the database, then the
        # daemon (watchers, senders, Sent folders).
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(db.daemon_lock(settings.database))
            await stack.enter_async_context(db.connected(settings.database))
            daemon = Daemon(
                settings,
                seqs,
                SystemClock(),
                reload=lambda: load_each(settings.sequences, settings.mailboxes),
                lease=timedelta(seconds=lease),
                owns_database=db.sqlite_path(settings.database) is not None,
                notifier=notifier,
                duty=inbox_duty.for_database(settings.database),
            )
            daemon.report_broken(broken)
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, daemon.stop)
            loop.add_signal_handler(signal.SIGINT, daemon.stop)
            loop.add_signal_handler(signal.SIGHUP, daemon.reload_sequences)
            await stack.enter_async_context(daemon)
            await daemon.run()

    try:
        asyncio.run(go())
    except SequencerError as exc:
        structlog.get_logger("sequencer").error("daemon.failed", error=str(exc))
        raise _fail(exc) from None


@app.command("classify", cls=_Command, epilog=_example("sequencer classify reply.eml --json"))
def classify_cmd(
    files: Annotated[list[Path], typer.Argument(help="Raw RFC 5322 messages (.eml)")],
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array on stdout")] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Read fiscal_year_start from this settings file (default: calendar quarters)",
        ),
    ] = None,
) -> None:
    """Show how sequencer reads each message: verdict, kind and the rules that decided, and
    for a person's reply what it asks for (intent, follow-up day, referral, whom to remove)."""
    from sequencer.classify import classify

    fiscal = (1, 1)
    if config is not None:  # only when asked: classify needs no settings file
        try:
            fiscal = _settings(config).fiscal_year
        except SequencerError as exc:
            raise _fail(exc) from None
    results = []
    for path in files:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise _fail(SequencerError(f"{path}: cannot read it: {exc.strerror}")) from None
        results.append({"file": str(path), **classify(raw, fiscal_year_start=fiscal).to_json()})
    if as_json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
        return
    for r in results:
        extra = f" kind={r['kind']}" if r["kind"] else ""
        if r["hard"] is not None:
            extra += f" hard={str(r['hard']).lower()}"
        if r["recipients"]:
            extra += f" recipients={','.join(r['recipients'])}"
        if r["return_date"]:
            extra += f" back={r['return_date']}"
        if r["alternatives"]:
            extra += f" instead={','.join(r['alternatives'])}"
        if r.get("intent"):
            extra += f" intent={r['intent']}"
        if r.get("follow_up_on"):
            extra += f" follow_up_on={r['follow_up_on']}"
        if r.get("referral"):
            extra += " referral=" + ",".join(
                f"{p['name']} <{p['address']}>" if p.get("name") else p["address"]
                for p in r["referral"]
            )
        if r.get("suppress"):
            extra += f" suppress={','.join(r['suppress'])}"
        if r.get("erasure"):
            extra += " erasure=true"
        out.print(
            f"{r['file']}: {r['verdict']}{extra} (rules: {', '.join(r['rules'])})",
            highlight=False,
            markup=False,  # names and addresses come from the message: text, not markup
        )


@app.command(cls=_Command, epilog=_example("sequencer demo"))
def demo() -> None:
    """Play the whole story on loopback servers in a temporary folder, in under a minute."""
    from sequencer.demo import run_demo

    try:
        asyncio.run(run_demo(out))
    except SequencerError as exc:
        raise _fail(exc) from None


def main() -> None:
    app(prog_name="sequencer")  # the same usage line under `python -m sequencer`
