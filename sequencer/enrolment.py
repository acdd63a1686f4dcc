"""Enrolling contacts: validated contacts in, enrollments with their first send time out.

Owns the one path every caller takes (`sequencer enroll`, the demo, the tests): suppressed
addresses are skipped, the first step is planned by the etiquette (window, holidays, the gap
to the last email this address got, or a promise), promises are checked, and everything is
written in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sequencer.contacts import Contact
from sequencer.errors import EnrollError
from sequencer.etiquette import Etiquette, Promise, check_promises, parse_local, timeline
from sequencer.schedule import Planned
from sequencer.sequences import Sequence as Seq
from sequencer.store import queries
from sequencer.store.models import Suppression


@dataclass
class Enrolled:
    created: list[int] = field(default_factory=list)
    skipped_active: list[str] = field(default_factory=list)
    blocked: dict[str, Suppression] = field(default_factory=dict)
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
) -> Enrolled:
    """Plan and write. `promised` maps step numbers to local times ("2026-12-01 10:00") in
    each contact's zone. Raises EnrollError (nothing written) when a promise cannot be kept."""
    result = Enrolled(blocked=await queries.suppressed(p.email for p in people))
    last = await queries.last_contacts(p.email for p in people)
    todo = []
    for person in people:
        if person.email in result.blocked:
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
    outcome = await queries.enroll(todo, allow_overlap=allow_overlap, now=now)
    result.created = outcome.created
    result.skipped_active = outcome.skipped_active
    return result


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
