"""Every database query, by name. No network I/O happens here, and no transaction is held
across a network call (tortoise serialises SQLite transactions within one process).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from sequencer.store.models import (
    ACTIVE,
    Enrollment,
    InboundMessage,
    MailboxCursor,
    SentMessage,
    Suppression,
)


@dataclass(frozen=True)
class NewEnrollment:
    email: str
    sequence: str
    mailbox: str
    variables: dict[str, str]
    next_at: datetime


@dataclass
class EnrollOutcome:
    created: list[int] = field(default_factory=list)
    skipped_active: list[str] = field(default_factory=list)


async def suppressed(emails: Iterable[str]) -> dict[str, Suppression]:
    rows = await Suppression.filter(email__in=list(set(emails)))
    return {row.email: row for row in rows}


async def active_emails(emails: Iterable[str]) -> set[str]:
    rows = await Enrollment.filter(email__in=list(set(emails)), state=ACTIVE).values_list(
        "email", flat=True
    )
    return {str(r) for r in rows}


async def enroll(
    items: Sequence[NewEnrollment], *, allow_overlap: bool, now: datetime
) -> EnrollOutcome:
    """Create enrollments in one transaction: all of them or none."""
    outcome = EnrollOutcome()
    async with in_transaction():
        busy = set() if allow_overlap else await active_emails(i.email for i in items)
        if allow_overlap:
            # Even with overlap allowed, never the same sequence twice at once.
            rows = await Enrollment.filter(
                email__in=[i.email for i in items], state=ACTIVE
            ).values_list("email", "sequence")
            same = {(str(e), str(s)) for e, s in rows}
        seen: set[str] = set()
        for item in items:
            if item.email in busy or item.email in seen:
                outcome.skipped_active.append(item.email)
                continue
            if allow_overlap and (item.email, item.sequence) in same:
                outcome.skipped_active.append(item.email)
                continue
            seen.add(item.email)
            row = await Enrollment.create(
                email=item.email,
                sequence=item.sequence,
                mailbox=item.mailbox,
                variables=item.variables,
                next_at=item.next_at,
                enrolled_at=now,
            )
            outcome.created.append(row.id)
    return outcome


async def next_due_at() -> datetime | None:
    row = (
        await Enrollment.filter(state=ACTIVE, next_at__not_isnull=True)
        .order_by("next_at")
        .first()
        .values_list("next_at", flat=True)
    )
    return row if isinstance(row, datetime) else None


async def due_ids(now: datetime, limit: int) -> list[int]:
    """Ids of enrollments due now and not claimed by a live lease, oldest due first."""
    rows = (
        await Enrollment.filter(next_at__lte=now, state=ACTIVE)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .order_by("next_at")
        .limit(limit)
        .values_list("id", flat=True)
    )
    return [int(str(r)) for r in rows]


async def claim(enrollment_id: int, now: datetime, lease: timedelta) -> Enrollment | None:
    """Take one enrollment with a single conditional UPDATE; None if someone else has it."""
    taken = (
        await Enrollment.filter(id=enrollment_id, state=ACTIVE, next_at__lte=now)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claimed_until=now + lease)
    )
    if not taken:
        return None
    return await Enrollment.get(id=enrollment_id)


async def release(enrollment_id: int) -> None:
    await Enrollment.filter(id=enrollment_id).update(claimed_until=None)


async def pending_send(enrollment_id: int, step: int) -> SentMessage | None:
    return await SentMessage.get_or_none(enrollment_id=enrollment_id, step=step)


async def thread(enrollment_id: int) -> list[str]:
    """Message-IDs already sent to this contact in this sequence, oldest first."""
    rows = (
        await SentMessage.filter(enrollment_id=enrollment_id, status__in=("sent", "uncertain"))
        .order_by("step")
        .values_list("message_id", flat=True)
    )
    return [str(r) for r in rows]


async def record_pending(
    enrollment_id: int, step: int, message_id: str, subject: str, now: datetime
) -> SentMessage:
    return await SentMessage.create(
        enrollment_id=enrollment_id,
        step=step,
        message_id=message_id,
        subject=subject,
        status="pending",
        created_at=now,
    )


async def forget_pending(sent_id: int) -> None:
    """The server refused the message for sure: the step was not sent."""
    await SentMessage.filter(id=sent_id, status="pending").delete()


async def record_sent(
    enr: Enrollment,
    sent: SentMessage,
    *,
    status: str,
    sent_at: datetime,
    next_at: datetime | None,
    breakup: bool,
) -> bool:
    """Confirm a send and move the enrollment on. Returns False if it had ended meanwhile
    (a reply that arrived during SMTP): the send is still recorded, the state is kept."""
    async with in_transaction():
        await SentMessage.filter(id=sent.id).update(status=status, sent_at=sent_at)
        common: dict[str, Any] = {
            "steps_sent": sent.step,
            "last_sent_at": sent_at,
            "attempts": 0,
            "last_error": None,
            "claimed_until": None,
        }
        if sent.step == 1:
            common["thread_subject"] = sent.subject
        await Enrollment.filter(id=enr.id).update(**common)
        if breakup:
            changed = await Enrollment.filter(id=enr.id, state=ACTIVE).update(
                state="completed", reason="break-up sent", next_at=None, finished_at=sent_at
            )
        else:
            changed = await Enrollment.filter(id=enr.id, state=ACTIVE).update(next_at=next_at)
    return bool(changed)


async def retry_later(enr: Enrollment, error: str, at: datetime) -> None:
    await Enrollment.filter(id=enr.id, state=ACTIVE).update(
        next_at=at, attempts=enr.attempts + 1, last_error=error, claimed_until=None
    )


async def finish(
    enrollment_id: int, state: str, reason: str, now: datetime, inbound_id: int | None = None
) -> bool:
    changed = await Enrollment.filter(id=enrollment_id, state=ACTIVE).update(
        state=state,
        reason=reason,
        next_at=None,
        claimed_until=None,
        finished_at=now,
        ended_by_id=inbound_id,
    )
    return bool(changed)


async def finish_address(
    email: str,
    state: str,
    reason: str,
    now: datetime,
    inbound_id: int | None = None,
    sequence: str | None = None,
) -> list[Enrollment]:
    """End every active enrollment of an address (optionally of one sequence)."""
    query = Enrollment.filter(email=email, state=ACTIVE)
    if sequence is not None:
        query = query.filter(sequence=sequence)
    rows = await query
    ended = []
    for row in rows:
        if await finish(row.id, state, reason, now, inbound_id):
            ended.append(row)
    return ended


async def suppress(email: str, reason: str, detail: str, now: datetime) -> None:
    # Already suppressed: the first reason stands.
    with contextlib.suppress(IntegrityError):
        await Suppression.create(email=email, reason=reason, detail=detail, created_at=now)


async def enrollment_for_message_ids(message_ids: Iterable[str]) -> Enrollment | None:
    ids = list(message_ids)
    if not ids:
        return None
    sent = await SentMessage.filter(message_id__in=ids).order_by("-step").first()
    if sent is None:
        return None
    return await Enrollment.get(id=sent.enrollment_id)  # type: ignore[attr-defined]


async def is_our_message(message_id: str | None) -> bool:
    if not message_id:
        return False
    return await SentMessage.exists(message_id=message_id)


async def enrollments_of(email: str) -> list[Enrollment]:
    """Active first, then the most recent: who a message from this address is about."""
    rows = await Enrollment.filter(email=email).order_by("-enrolled_at")
    return sorted(rows, key=lambda r: r.state != ACTIVE)


async def inbound_seen(mailbox: str, uidvalidity: int, uid: int) -> bool:
    return await InboundMessage.exists(mailbox=mailbox, uidvalidity=uidvalidity, uid=uid)


async def record_inbound(**values: Any) -> InboundMessage | None:
    """Insert the inbound log row; None when this (mailbox, uidvalidity, uid) was handled."""
    try:
        return await InboundMessage.create(**values)
    except IntegrityError:
        return None


async def set_inbound_action(inbound_id: int, action: str) -> None:
    await InboundMessage.filter(id=inbound_id).update(action=action)


async def get_cursor(mailbox: str) -> MailboxCursor | None:
    return await MailboxCursor.get_or_none(mailbox=mailbox)


async def set_cursor(mailbox: str, uidvalidity: int, last_uid: int) -> None:
    updated = await MailboxCursor.filter(mailbox=mailbox).update(
        uidvalidity=uidvalidity, last_uid=last_uid
    )
    if not updated:
        try:
            await MailboxCursor.create(mailbox=mailbox, uidvalidity=uidvalidity, last_uid=last_uid)
        except IntegrityError:
            await MailboxCursor.filter(mailbox=mailbox).update(
                uidvalidity=uidvalidity, last_uid=last_uid
            )


async def listing(email: str | None = None) -> list[tuple[Enrollment, InboundMessage | None]]:
    """Enrollments, each with the inbound message that ended it (if one did)."""
    query = Enrollment.all() if email is None else Enrollment.filter(email=email)
    rows = list(await query.order_by("id"))
    ids = [r.ended_by_id for r in rows if r.ended_by_id is not None]
    inbound = {m.id: m for m in await InboundMessage.filter(id__in=ids)} if ids else {}
    return [(r, inbound.get(r.ended_by_id) if r.ended_by_id else None) for r in rows]


async def stop_by_hand(email: str, sequence: str | None, now: datetime) -> list[Enrollment]:
    return await finish_address(email, "stopped", "manual", now, sequence=sequence)
