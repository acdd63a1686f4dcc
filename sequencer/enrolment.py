"""Enrolling contacts: validated contacts in, enrollments with their first send time out.

Owns the one path every caller takes (`sequencer enroll`, the demo, the tests): suppressed
addresses are skipped (always), and so are addresses a sequence already ended for good
(replied, completed, bounced, unsubscribed, stopped; unless `again`), so nobody is started at
step 1 twice by accident; the first step is planned by the etiquette (window, holidays, the
gap to the last email this address got, or a promise), promises are checked, and everything
is written in one transaction. `enroll` takes a list; `enroll_stream` a CSV of any length, a
chunk at a time, in flat memory, planning once per place (`Planner`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tortoise.transactions import in_transaction

from sequencer import contacts
from sequencer.contacts import Contact, Refused
from sequencer.errors import EnrollError
from sequencer.etiquette import (
    Etiquette,
    PlannedStep,
    Promise,
    check_promises,
    parse_local,
    timeline,
)
from sequencer.schedule import Planned
from sequencer.sequences import Sequence as Seq
from sequencer.store import queries
from sequencer.store.models import Suppression
from sequencer.store.queries import Previous
from sequencer.suppression import one_line


@dataclass
class Enrolled:
    created: list[int] = field(default_factory=list)
    skipped_active: list[str] = field(default_factory=list)
    blocked: dict[str, Suppression] = field(default_factory=dict)
    skipped_before: dict[str, Previous] = field(default_factory=dict)  # by address
    first: dict[str, Planned] = field(default_factory=dict)  # by address
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Plan:
    first: PlannedStep
    promises: dict[int, Promise]
    warnings: tuple[str, ...]
    stored: dict[str, dict[str, str]]  # the promises as the enrollment keeps them


class Planner:
    """Step 1's time for each contact of one enrolment run (one sequence, one `now`, the
    same promises and `not_before` for all), planned once per place.

    The plan reads a contact's values only through `Etiquette.place` and `zone_name`: their
    `timezone`, `country` and `subdivision` (the key below). So contacts with the same three
    values and no earlier email (the gap rule reads `last_contact`) get the same plan,
    promise checks and warnings; a list of a million contacts in a dozen zones is planned a
    dozen times. tests/test_enrolment.py checks cached against uncached plans."""

    #: Places whose plan is kept (a real list has a few dozen).
    PLACES = 10_000

    def __init__(
        self,
        etiquette: Etiquette,
        seq: Seq,
        now: datetime,
        *,
        promised: Mapping[int, str] | None = None,
        not_before: datetime | None = None,
    ) -> None:
        self.etiquette, self.seq, self.now = etiquette, seq, now
        self.promised, self.not_before = promised or {}, not_before
        self._cache: dict[tuple[str | None, ...], _Plan] = {}

    def plan(self, person: Contact, last_contact: datetime | None) -> _Plan:
        """Raises EnrollError when the sequence cannot be planned or a promise kept."""
        if last_contact is not None:
            return self._plan(person, last_contact)
        values = person.values
        key = (values.get("timezone"), values.get("country"), values.get("subdivision"))
        found = self._cache.get(key)
        if found is None:
            found = self._plan(person, None)
            if len(self._cache) < self.PLACES:  # a hostile list of endless places stays bounded
                self._cache[key] = found
        return found

    def _plan(self, person: Contact, last_contact: datetime | None) -> _Plan:
        etiquette, seq = self.etiquette, self.seq
        promises = parse_promises(self.promised, etiquette.zone_name(person.values))
        try:
            plan = timeline(
                etiquette,
                seq,
                person.values,
                self.now,
                promises=promises,
                last_contact=last_contact,
                not_before=self.not_before,
            )
        except ValueError as exc:  # a window that never opens: `check` names the cause
            raise EnrollError(
                [f"{person.email}: cannot plan '{seq.id}': {exc} (run `sequencer check`)"]
            ) from None
        warnings: list[str] = []
        if promises:
            problems = check_promises(seq, promises, self.now, plan)
            if problems:
                raise EnrollError([f"{person.email}: {p}" for p in problems])
            warnings = etiquette.promise_warnings(seq, person.values, promises)
        stored = {str(k): v.to_json() for k, v in promises.items()}
        return _Plan(plan[0], promises, tuple(warnings), stored)

    def new(self, person: Contact, plan: _Plan) -> queries.NewEnrollment:
        first = plan.first
        return queries.NewEnrollment(
            person.email,
            self.seq.id,
            self.seq.mailbox,
            person.values,
            first.planned.at,
            first.planned.reasons,
            plan.stored,
            first.promised,
        )


async def enroll(
    etiquette: Etiquette,
    seq: Seq,
    people: Sequence[Contact],
    now: datetime,
    *,
    allow_overlap: bool = False,
    promised: Mapping[int, str] | None = None,
    again: bool = False,
    not_before: datetime | None = None,
) -> Enrolled:
    """Plan and write. `promised` maps step numbers to local times ("2026-12-01 10:00") in
    each contact's zone. `again` enrolls addresses a sequence already ended for good; it never
    overrides suppression. `not_before`: step 1 goes at the first opening at or after it (a
    reply's follow_up_on), every etiquette rule applying. Raises EnrollError (nothing
    written) when a promise cannot be kept. For a few contacts (one, a reply's referrals):
    a list of any length goes through `enroll_stream`."""
    planner = Planner(etiquette, seq, now, promised=promised, not_before=not_before)
    result = Enrolled(blocked=await queries.suppressed(p.email for p in people))
    # Looked at here so that nobody skipped is planned (or fails a promise check); decided
    # again in the writing transaction.
    before = {} if again else await queries.contacted_before(p.email for p in people)
    last = await queries.last_contacts(p.email for p in people)
    todo = []
    for person in people:
        if person.email in result.blocked:
            continue
        if person.email in before:
            result.skipped_before[person.email] = before[person.email]
            continue
        plan = planner.plan(person, last.get(person.email))
        result.warnings += plan.warnings
        result.first[person.email] = plan.first.planned
        todo.append(planner.new(person, plan))
    outcome = await queries.enroll(todo, allow_overlap=allow_overlap, now=now, again=again)
    result.created = outcome.created
    result.skipped_active = outcome.skipped_active
    result.skipped_before.update(outcome.skipped_before)
    return result


#: Contacts looked up, planned and written together by `enroll_stream`: each look-up is one
#: statement (the suppression list is asked three keys per address, within
#: queries.MAX_PARAMS), and one INSERT is executed for all of them.
CHUNK = queries.MAX_PARAMS // 3
#: Bad rows listed in the error (all are counted): enough to fix a file by, bounded output.
MAX_LISTED = 1000


@dataclass
class Streamed:
    """What `enroll_stream` did. Memory grows only with the addresses skipped (each is named
    on stderr), never with the contacts enrolled."""

    valid: int = 0  # rows that are contacts
    created: int = 0
    skipped_active: int = 0
    blocked: dict[str, Suppression] = field(default_factory=dict)
    skipped_before: dict[str, Previous] = field(default_factory=dict)
    first: Planned | None = None  # the earliest step 1 planned
    first_values: dict[str, str] | None = None  # the first contact's (its zone, for one)
    warnings: dict[str, None] = field(default_factory=dict)  # in order, each once
    bad: int = 0  # problems found in the rows that are not contacts
    problems: list[str] = field(default_factory=list)  # the first MAX_LISTED of them


async def enroll_stream(
    etiquette: Etiquette,
    seq: Seq,
    people: Iterable[Contact | Refused],
    now: datetime,
    name: str,
    result: Streamed,
    *,
    allow_overlap: bool = False,
    promised: Mapping[int, str] | None = None,
    again: bool = False,
    chunk: int = CHUNK,
) -> None:
    """`enroll` for a list of any length, read as it goes (`contacts.each` of a CSV), in one
    transaction: every row of the file is written, or none.

    Rows are checked, looked up, planned and written a chunk at a time inside that
    transaction. The first bad row stops the writing but not the reading: every bad row is
    still found and listed (`name:line: ...`, as `contacts.read_csv` does), and the whole
    transaction is rolled back. A bad row is found only by reading the file, so checking it
    all first would read and check every row twice; rolling back costs nothing more than the
    writes already made. A promise that cannot be kept is reported only when no row is bad,
    as before. `result` is filled as it goes, so the caller knows what was read even when
    this raises."""
    planner = Planner(etiquette, seq, now, promised=promised)
    failed: EnrollError | None = None
    async with in_transaction():
        await queries.for_a_long_list()
        batch: list[Contact] = []
        for item in people:
            if isinstance(item, Refused):
                result.bad += len(item.problems)
                room = MAX_LISTED - len(result.problems)
                result.problems += item.problems[: max(room, 0)]
                continue
            result.valid += 1
            if result.first_values is None:
                result.first_values = item.values
            if result.bad or failed is not None:
                continue  # nothing is written now: only the reading goes on
            batch.append(item)
            if len(batch) >= chunk:
                failed = await _chunk(planner, batch, result, allow_overlap, again)
                batch = []
        if batch and not result.bad and failed is None:
            failed = await _chunk(planner, batch, result, allow_overlap, again)
        if result.bad:
            raise contacts.refusal(name, result.problems, result.bad)
        if failed is not None:
            raise failed


async def _chunk(
    planner: Planner, batch: list[Contact], result: Streamed, allow_overlap: bool, again: bool
) -> EnrollError | None:
    """Look up, plan and write one chunk; the planning error, if any (then nothing more is
    written, and the caller rolls back)."""
    found = await queries.screen([p.email for p in batch], again=again)
    result.blocked.update(found.blocked)
    result.skipped_before.update(found.before)
    todo = []
    for person in batch:
        if person.email in found.blocked or person.email in found.before:
            continue
        try:
            plan = planner.plan(person, found.last.get(person.email))
        except EnrollError as exc:
            return exc
        result.warnings.update(dict.fromkeys(plan.warnings))
        planned = plan.first.planned
        if result.first is None or planned.at < result.first.at:
            result.first = planned
        todo.append(planner.new(person, plan))
    outcome = await queries.enroll_bulk(
        todo, found.active, allow_overlap=allow_overlap, now=planner.now
    )
    result.created += outcome.created
    result.skipped_active += len(outcome.skipped_active)
    return None


_ENDED = {
    "replied": "replied in",
    "completed": "completed",
    "bounced": "bounced in",
    "unsubscribed": "unsubscribed from",
    "stopped": "was stopped in",
}


def describe(previous: Previous) -> str:
    """`replied in 'follow-up' on 2026-12-03 ("Re: Notes")`: what ended it and when, with the
    subject of the message that ended it when one did, else the recorded reason."""
    verb = _ENDED.get(previous.state, f"{previous.state} in")
    why = one_line(previous.reason or "")
    if previous.subject is not None:
        why = f'"{one_line(previous.subject)}"'
    if len(why) > 100:
        why = why[:99] + "…"
    when = previous.at.astimezone(UTC).date().isoformat()
    return f"{verb} '{previous.sequence}' on {when}" + (f" ({why})" if why else "")


def parse_promises(promised: Mapping[int, str], zone: str) -> dict[int, Promise]:
    problems, out = [], {}
    for step, text in sorted(promised.items()):
        try:
            out[step] = parse_local(text, zone)
        except ValueError as exc:
            problems.append(f"step {step}: {exc}")
    if problems:
        raise EnrollError(problems)
    return out


def parse_promise_options(first_at: str | None, promise: Sequence[str]) -> dict[int, str]:
    """`--first-at TIME` and `--promise STEP=TIME` (repeatable) as {step: time}."""
    out: dict[int, str] = {}
    problems = []
    if first_at:
        out[1] = first_at
    for item in promise:
        step, sep, when = item.partition("=")
        if not sep or not step.strip().isdigit() or not when.strip():
            problems.append(
                f"--promise {item!r}: expected STEP=TIME, e.g. --promise 2='2026-12-08 10:00'"
            )
            continue
        if int(step) in out:
            problems.append(f"step {int(step)} is promised twice")
        out[int(step)] = when.strip()
    if problems:
        raise EnrollError(problems)
    return out
