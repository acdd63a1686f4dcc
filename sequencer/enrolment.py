"""Enrolling contacts: validated contacts in, enrollments with their first send time out.

Owns the one path every caller takes (`sequencer enroll`, the demo, the tests): suppressed
addresses are skipped (always), and so are addresses a sequence already ended for good
(replied, completed, bounced, unsubscribed, stopped; unless `again`), so nobody is started at
step 1 twice by accident; the first step is planned by the etiquette (window, holidays, the
gap to the last email this address got, or a promise), promises are checked, and everything
is written in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sequencer.contacts import Contact
from sequencer.errors import EnrollError
from sequencer.etiquette import Etiquette, Promise, check_promises, parse_local, timeline
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
    written) when a promise cannot be kept."""
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
        promises = parse_promises(promised or {}, etiquette.zone_name(person.values))
        try:
            plan = timeline(
                etiquette,
                seq,
                person.values,
                now,
                promises=promises,
                last_contact=last.get(person.email),
                not_before=not_before,
            )
        except ValueError as exc:  # a window that never opens: `check` names the cause
            raise EnrollError(
                [f"{person.email}: cannot plan '{seq.id}': {exc} (run `sequencer check`)"]
            ) from None
        if promises:
            problems = check_promises(seq, promises, now, plan)
            if problems:
                raise EnrollError([f"{person.email}: {p}" for p in problems])
            result.warnings += etiquette.promise_warnings(seq, person.values, promises)
        first = plan[0]
        result.first[person.email] = first.planned
        todo.append(
            queries.NewEnrollment(
                person.email,
                seq.id,
                seq.mailbox,
                person.values,
                first.planned.at,
                first.planned.reasons,
                {str(k): v.to_json() for k, v in promises.items()},
                first.promised,
            )
        )
    outcome = await queries.enroll(todo, allow_overlap=allow_overlap, now=now, again=again)
    result.created = outcome.created
    result.skipped_active = outcome.skipped_active
    result.skipped_before.update(outcome.skipped_before)
    return result


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
