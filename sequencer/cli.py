"""The `sequencer` command: run | check | enroll | status | stop | classify | demo.

Results go to stdout, diagnostics to stderr (so `--json` can be piped). A SequencerError is
printed as it is and exits 2; anything else is a bug and shows a traceback.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from sequencer import contacts, enrolment, logs
from sequencer.clock import SystemClock
from sequencer.config import Settings, find_config, load_settings
from sequencer.errors import ConfigError, EnrollError, SequenceError, SequencerError
from sequencer.etiquette import Etiquette
from sequencer.sequences import Sequence, load_all, load_sequence
from sequencer.store import db, queries

app = typer.Typer(
    help="A polite email follow-up daemon: sequences as YAML, stopped the moment they reply.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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


def _fail(exc: SequencerError) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
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


def _sequences(settings: Settings) -> dict[str, Sequence]:
    return load_all(settings.sequences, settings.mailboxes)


def _one_sequence(settings: Settings, name: str) -> Sequence:
    path = settings.sequences / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in settings.sequences.glob("*.yaml"))
        raise SequenceError(
            [f"unknown sequence '{name}' (no {path}); available: {', '.join(known) or 'none'}"]
        )
    return load_sequence(path, settings.mailboxes)


@app.command()
def check(config: ConfigOpt = None) -> None:
    """Validate the settings file and every sequence; exit 2 with every problem found."""
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
            if box.imap.security == "starttls":
                problems.append(
                    f"{settings.source}: mailboxes.{name}.imap.security: starttls "
                    "is not supported for IMAP; use tls (usually port 993)"
                )
        if not settings.mailboxes:
            problems.append(
                f"{settings.source}: no mailboxes configured (add one under 'mailboxes:')"
            )
        for w in warnings:
            err.print(f"[yellow]warning:[/] {w} (needed by `sequencer run`)", highlight=False)
        if problems:
            raise SequenceError(problems)
    except SequencerError as exc:
        raise _fail(exc) from None
    out.print(
        f"ok: {settings.source}: {len(settings.mailboxes)} mailbox(es), "
        f"{len(seqs)} sequence(s): {', '.join(sorted(seqs))}",
        highlight=False,
    )


@app.command()
def enroll(
    sequence: Annotated[str, typer.Argument(help="Sequence id (file name without .yaml)")],
    email: Annotated[str | None, typer.Argument(help="Contact address")] = None,
    var: Annotated[list[str] | None, typer.Option("--var", help="key=value, repeatable")] = None,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="CSV with a header row: email, first_name, ...")
    ] = None,
    allow_overlap: Annotated[
        bool, typer.Option(help="Enroll even if the address is active in another sequence")
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

    A promise (--first-at, --promise) is kept exactly: no window, holiday, gap or pace rule
    moves it; only a reply or a stop cancels it."""

    async def go() -> None:
        settings = _settings(config)
        seq = _one_sequence(settings, sequence)
        if (email is None) == (csv_file is None):
            raise EnrollError(["give either an EMAIL or --csv FILE"])
        if csv_file is not None:
            if var:
                raise EnrollError(["--var goes with a single EMAIL; put the values in CSV columns"])
            try:
                text = csv_file.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                raise EnrollError([f"{csv_file}: cannot read it: {exc}"]) from None
            people = contacts.read_csv(seq, text, str(csv_file))
        else:
            people = [contacts.contact(seq, email or "", contacts.parse_vars(var or []))]
        now = SystemClock().now()
        promised = enrolment.parse_promise_options(first_at, promise or [])
        if promised and csv_file is not None and len(people) > 1:
            err.print(
                "note: promised times are read in each contact's own time zone",
                highlight=False,
            )
        async with db.connected(settings.database):
            result = await enrolment.enroll(
                Etiquette(settings),
                seq,
                people,
                now,
                allow_overlap=allow_overlap,
                promised=promised,
            )
        blocked = result.blocked
        if blocked and csv_file is None:
            row = blocked[people[0].email]
            raise EnrollError(
                [
                    f"{people[0].email} is on the suppression list "
                    f"({row.reason}: {row.detail}); it cannot be enrolled again"
                ]
            )
        if csv_file is None and result.skipped_active:
            raise EnrollError(
                [
                    f"{people[0].email} is already active in a sequence "
                    "(use --allow-overlap to enroll anyway, or `sequencer stop` it)"
                ]
            )
        for address in sorted(blocked):
            err.print(f"skipped {address}: suppressed ({blocked[address].reason})", highlight=False)
        for warning in dict.fromkeys(result.warnings):
            err.print(f"[yellow]warning:[/] {warning}", highlight=False)
        firsts = sorted(result.first.values(), key=lambda p: p.at)
        when = ""
        if firsts:
            first = firsts[0]
            zone = Etiquette(settings).place(people[0].values).zone
            local = first.at.astimezone(zone)
            why = f" ({', '.join(first.reasons)})" if first.reasons else ""
            when = f"; first send {local:%a %Y-%m-%d %H:%M} {zone.key}{why}"
            if len(people) > 1:
                when = f"; first send from {first.at:%Y-%m-%d %H:%M} UTC"
        out.print(
            f"enrolled {len(result.created)} in '{seq.id}'"
            + (
                f"; skipped {len(result.skipped_active)} already active"
                if result.skipped_active
                else ""
            )
            + (f"; skipped {len(blocked)} suppressed" if blocked else "")
            + when,
            highlight=False,
        )

    _run(go)


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def _row(e: Any, ended: Any, steps_total: int | None) -> dict[str, Any]:
    return {
        "id": e.id,
        "email": e.email,
        "sequence": e.sequence,
        "mailbox": e.mailbox,
        "state": e.state,
        "reason": e.reason,
        "steps_sent": e.steps_sent,
        "steps_total": steps_total,
        "next_send_at": _iso(e.next_at) if e.state == "active" else None,
        "enrolled_at": _iso(e.enrolled_at),
        "last_sent_at": _iso(e.last_sent_at),
        "finished_at": _iso(e.finished_at),
        "last_error": e.last_error,
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


@app.command()
def status(
    email: Annotated[str | None, typer.Argument(help="Only this address")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array on stdout")] = False,
    config: ConfigOpt = None,
) -> None:
    """One row per enrollment: state, steps sent, next send, and why it ended."""

    async def go() -> list[dict[str, Any]]:
        settings = _settings(config)
        totals: dict[str, int] = {}
        for path in settings.sequences.glob("*.yaml"):
            try:
                totals[path.stem] = len(load_sequence(path).steps)
            except SequencerError:
                continue
        address = email.strip().lower() if email else None
        async with db.connected(settings.database):
            rows = await queries.listing(address)
        return [_row(e, ended, totals.get(e.sequence)) for e, ended in rows]

    rows = _run(go)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    if not rows:
        out.print("no enrollments" + (f" for {email}" if email else ""))
        return
    table = Table(show_lines=False)
    for col in ("id", "email", "sequence", "state", "sent", "next send (UTC)", "why"):
        table.add_column(col, overflow="fold")
    for r in rows:
        total = r["steps_total"] or "?"
        nxt = (r["next_send_at"] or "")[:16].replace("T", " ")
        why = r["reason"] or (f"retrying: {r['last_error']}" if r["last_error"] else "")
        if r["ended_by"]:
            eb = r["ended_by"]
            rules = ", ".join(eb["rules"])
            why = f"{r['reason']} (from {eb['from']}, {eb['verdict']}, rules: {rules})"
        table.add_row(
            str(r["id"]),
            r["email"],
            r["sequence"],
            r["state"],
            f"{r['steps_sent']}/{total}",
            nxt,
            why,
        )
    out.print(table)


@app.command()
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


@app.command()
def run(config: ConfigOpt = None) -> None:
    """The daemon, in the foreground. Logs go to stdout as JSON lines."""
    from sequencer.worker import Daemon

    try:
        settings = _settings(config)
        seqs = _sequences(settings)
        for name, box in settings.mailboxes.items():  # fail now, not at the first send
            box.smtp.password(f"{settings.source}: mailboxes.{name}.smtp")
            box.imap.password(f"{settings.source}: mailboxes.{name}.imap")
        if not settings.mailboxes:
            raise ConfigError([f"{settings.source}: no mailboxes configured"])
    except SequencerError as exc:
        raise _fail(exc) from None
    logs.configure(sys.stdout, secrets=settings.secrets())

    async def go() -> None:
        with db.daemon_lock(settings.database):
            async with db.connected(settings.database):
                daemon = Daemon(settings, seqs, SystemClock(), reload=lambda: _sequences(settings))
                loop = asyncio.get_running_loop()
                loop.add_signal_handler(signal.SIGTERM, daemon.stop)
                loop.add_signal_handler(signal.SIGINT, daemon.stop)
                loop.add_signal_handler(signal.SIGHUP, daemon.reload_sequences)
                await daemon.start()
                await daemon.run()

    try:
        asyncio.run(go())
    except SequencerError as exc:
        import structlog

        structlog.get_logger("sequencer").error("daemon.failed", error=str(exc))
        raise _fail(exc) from None


@app.command("classify")
def classify_cmd(
    files: Annotated[list[Path], typer.Argument(help="Raw RFC 5322 messages (.eml)")],
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array on stdout")] = False,
) -> None:
    """Show how sequencer reads each message: verdict, kind and the rules that decided."""
    from sequencer.classify import classify

    results = []
    for path in files:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise _fail(SequencerError(f"{path}: cannot read it: {exc.strerror}")) from None
        results.append({"file": str(path), **classify(raw).to_json()})
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
        out.print(
            f"{r['file']}: {r['verdict']}{extra} (rules: {', '.join(r['rules'])})", highlight=False
        )


@app.command()
def demo() -> None:
    """Play the whole story on loopback servers in a temporary folder, in under a minute."""
    from sequencer.demo import run_demo

    try:
        asyncio.run(run_demo(out))
    except SequencerError as exc:
        raise _fail(exc) from None


def main() -> None:
    app()
