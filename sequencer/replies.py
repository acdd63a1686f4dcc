"""What an inbound message does: match it to an enrollment, then act on its verdict.

Owns the policy (the action table below) and what a person's reply asks for afterwards (its
intent kept with the enrollment, the agenda, the sequence's `on_reply`); classification itself
is pure and lives in classify/, the IMAP I/O in inbox.py. The whole effect of one message is
written in one short transaction, so a message is handled exactly once even if the daemon
restarts.

Entry points: `handle` (raw bytes: classify, then act) and `act_on` (a Classification already
made, with the raw bytes for the excerpt and the sender's name), which tests drive directly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from functools import cached_property
from zoneinfo import ZoneInfo

import structlog
from tortoise.transactions import in_transaction

from sequencer import contacts, enrolment, safetext
from sequencer.classify import (
    BounceKind,
    Classification,
    Intent,
    Verdict,
    classify,
    classify_parsed,
)
from sequencer.classify.removal_request import OTHERS_NO_ADDRESS
from sequencer.companies import company_domain
from sequencer.errors import EnrollError
from sequencer.etiquette import Etiquette
from sequencer.excerpt import excerpt
from sequencer.schedule import wall_to_instant
from sequencer.sequences import Sequence
from sequencer.states import Agenda, Hold, State
from sequencer.store import queries
from sequencer.store.models import Enrollment, InboundMessage

log = structlog.get_logger("sequencer.replies")


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    action: str
    enrollment_id: int | None
    ended: tuple[int, ...] = ()
    enrolled: tuple[int, ...] = ()  # enrollments an on_reply action started
    agenda: tuple[int, ...] = ()  # agenda items it added


#: What the classifier is given once at start-up: a person's reply and an out-of-office. Its
#: phrase files and patterns load on first use (about a second), which would otherwise be
#: added to the stop of the first reply after every start.
_WARM_UP = (
    b"From: Jo <jo@prospect.test>\r\nTo: sales@vendor.test\r\nSubject: Re: Notes\r\n"
    b"In-Reply-To: <first@vendor.test>\r\n\r\nThanks, Thursday works. Or please remove me.\r\n",
    b"From: Jo <jo@prospect.test>\r\nTo: sales@vendor.test\r\nSubject: Out of office\r\n"
    b"Auto-Submitted: auto-replied\r\n\r\nI am away until Monday 14 December.\r\n",
)


def warm_up() -> None:
    """Load the classifier's phrases and patterns now, not at the first reply."""
    for raw in _WARM_UP:
        classify(raw)


async def handle(
    mailbox: str,
    uidvalidity: int,
    uid: int,
    raw: bytes,
    *,
    now: datetime,
    own_addresses: Iterable[str],
    etiquette: Etiquette | None = None,
    sequences: Mapping[str, Sequence] | None = None,
    replaces: int | None = None,
) -> Outcome | None:
    """Classify and act. None when the message is not about any enrollment (left alone).
    `replaces`: the recorded failed attempt at this same message, settled now. The settings
    (through `etiquette`) give the fiscal year's start, for "try me in Q3"."""
    if is_self_test(raw, own_addresses):
        # `sequencer test` wrote it from this mailbox to itself: never a reply to anything.
        log.info("inbound.self_test", mailbox=mailbox, uid=uid)
        await _settled(replaces)
        return None
    fiscal = etiquette.settings.fiscal_year if etiquette is not None else (1, 1)
    c, parsed = classify_parsed(raw, fiscal_year_start=fiscal)
    if c.rules == ("unparseable",):
        # Too complex to parse: its headers still say who it is from and what it answers.
        c, parsed = replace(header_facts(raw), rules=("unparseable",)), None
    return await act_on(
        c,
        raw,
        mailbox,
        uidvalidity,
        uid,
        now=now,
        own_addresses=own_addresses,
        etiquette=etiquette,
        sequences=sequences,
        replaces=replaces,
        parsed=parsed,
    )


async def act_on(
    c: Classification,
    raw: bytes,
    mailbox: str,
    uidvalidity: int,
    uid: int,
    *,
    now: datetime,
    own_addresses: Iterable[str],
    etiquette: Etiquette | None = None,
    sequences: Mapping[str, Sequence] | None = None,
    replaces: int | None = None,
    parsed: Message | None = None,
) -> Outcome | None:
    """Act on a message already classified (`raw`: its bytes, for the agenda's excerpt and
    the sender's display name; `parsed`: the classifier's parse of them, so the excerpt does
    not parse them again). None when it is not about any enrollment."""
    own = {a.lower() for a in own_addresses}
    ours, answered = (
        (True, None)
        if c.from_address in own
        else await queries.thread_of(c.message_id, c.related_message_ids)
    )
    if ours:
        await _settled(replaces)  # a copy of our own message is never a reply
        return None
    # Never our own mailboxes, whatever a request names (a quoted signature, a Cc).
    c = replace(
        c, suppress=tuple(dict.fromkeys(a.lower() for a in c.suppress if a.lower() not in own))
    )
    enrollment, by_thread = await _match(c, answered)
    if enrollment is None:
        if asks_removal(c) and c.from_address:
            return await _stranger_removal(c, raw, mailbox, uidvalidity, uid, now, replaces, parsed)
        await _settled(replaces)
        return None
    unread = c.rules[-1:] == ("unparseable",)
    if c.verdict == Verdict.OTHER and (
        unread or (c.rules[-1:] == ("not_a_reply",) and not by_thread)
    ):
        # A personal message from a contact we are writing to, without thread headers (a new
        # mail, or a client that drops them), is them answering us; so is one we cannot read
        # that answers our thread or comes from them. When in doubt, stop: never hassle.
        c = replace(c, verdict=Verdict.HUMAN_REPLY, rules=(*c.rules, "from_enrolled_contact"))
    async with in_transaction():
        row = await _record(c, mailbox, uidvalidity, uid, now, replaces, enrollment.id)
        if row is None:
            return None  # handled before (a restart replayed it)
        message = _Message(
            c, raw, enrollment, row.id, now, etiquette, sequences or {}, own, parsed=parsed
        )
        action, ended = await _act(message)
        await queries.set_inbound_action(row.id, action)
    if replaces is not None:
        await queries.release_hold(await _concerned_ids(c), Hold.INBOUND_FAILED)
    event = _EVENTS[c.verdict]
    log.info(
        event,
        mailbox=mailbox,
        email=enrollment.email,
        sequence=enrollment.sequence,
        enrollment_id=enrollment.id,
        uid=uid,
        message_id=c.message_id,
        verdict=str(c.verdict),
        kind=c.kind,
        rules=list(c.rules),
        action=action,
        **({"alternatives": list(c.alternatives)} if c.alternatives else {}),
    )
    return Outcome(
        c.verdict,
        action,
        enrollment.id,
        tuple(ended),
        tuple(message.enrolled),
        tuple(message.agenda),
    )


async def _record(
    c: Classification,
    mailbox: str,
    uidvalidity: int,
    uid: int,
    now: datetime,
    replaces: int | None,
    enrollment_id: int | None,
) -> InboundMessage | None:
    """The inbound log row for this message; None when it was handled before."""
    return await queries.record_inbound(
        replaces=replaces,
        mailbox=mailbox,
        uidvalidity=uidvalidity,
        uid=uid,
        message_id=c.message_id,
        from_address=c.from_address,
        subject=c.subject[:1000],
        verdict=str(c.verdict),
        kind=c.kind,
        rules=list(c.rules),
        enrollment_id=enrollment_id,
        received_at=now,
    )


async def _stranger_removal(
    c: Classification,
    raw: bytes,
    mailbox: str,
    uidvalidity: int,
    uid: int,
    now: datetime,
    replaces: int | None,
    parsed: Message | None,
) -> Outcome | None:
    """Someone we are not writing to (yet) asks to be left alone, or to leave someone else
    alone: suppress whoever it names (themselves when nobody else), so no later enrolment
    ever reaches them, and stop anything active for those it names."""
    address = c.from_address or ""
    named = sorted(set(c.suppress) or {address})
    subject = c.subject or "(no subject)"
    items: list[int] = []
    async with in_transaction():
        row = await _record(c, mailbox, uidvalidity, uid, now, replaces, None)
        if row is None:
            return None
        ended: list[int] = []
        for target in named:
            await queries.suppress(target, "unsubscribe", subject, now)
            why = f"removal requested by {address}: {subject}"
            ended += await queries.finish_address(target, State.UNSUBSCRIBED, why, now, row.id)
        if c.erasure:
            text = excerpt(raw, parsed=parsed)
            for target in named:
                items.append(await _erasure_item(target, None, row.id, now, text))
        action = f"suppressed {', '.join(named)} (not enrolled)"
        if ended:
            action += f"; stopped {len(ended)}"
        await queries.set_inbound_action(row.id, action)
    log.info(
        _EVENTS[c.verdict],
        mailbox=mailbox,
        email=address,
        uid=uid,
        message_id=c.message_id,
        verdict=str(c.verdict),
        rules=list(c.rules),
        action=action,
    )
    return Outcome(c.verdict, action, None, tuple(ended), (), tuple(items))


async def _erasure_item(
    address: str, enrollment: Enrollment | None, inbound_id: int, now: datetime, text: str
) -> int:
    item = await queries.add_agenda(
        Agenda.ERASURE,
        address,
        received_at=now,
        sequence=enrollment.sequence if enrollment else None,
        enrollment_id=enrollment.id if enrollment else None,
        inbound_id=inbound_id,
        excerpt=text,
        note=f"asked for their data to be erased (GDPR Art. 17): sequencer forget {address}",
    )
    return int(item.id)


async def _settled(replaces: int | None) -> None:
    """A failed message that, handled now, turned out to concern nobody: forget it."""
    if replaces is not None:
        async with in_transaction():
            held = await queries.drop_failed_inbound(replaces)
            await queries.release_hold(held, Hold.INBOUND_FAILED)


_MAX_HEADER_BYTES = 256 * 1024


def header_facts(raw: bytes) -> Classification:
    """Who a message is from, its Message-ID, subject and the Message-IDs it refers to, read
    from its headers alone (bounded): what we still know of mail we cannot classify."""
    end = raw.find(b"\r\n\r\n", 0, _MAX_HEADER_BYTES)
    if end < 0:
        end = raw.find(b"\n\n", 0, _MAX_HEADER_BYTES)
    head = raw[: end if end >= 0 else _MAX_HEADER_BYTES]
    try:
        msg = BytesHeaderParser(policy=compat32).parsebytes(head)
        return classify(bytes(msg))
    except Exception:  # hostile headers: we know nothing, and say so
        return Classification(Verdict.OTHER, rules=("unparseable",))


#: Marks the message `sequencer test` sends from a mailbox to itself.
SELF_TEST_HEADER = "X-Sequencer-Test"
_SELF_TEST_NAME = SELF_TEST_HEADER.lower().encode()


def is_self_test(raw: bytes, own_addresses: Iterable[str]) -> bool:
    """`sequencer test`'s message: the header, and From one of our own mailboxes. The header
    alone is not enough: anyone can write it, and a contact's reply must never be hidden."""
    top = _head(raw)
    if _SELF_TEST_NAME not in top.lower():
        return False  # no such header: nothing to parse (every inbound message asks this)
    try:
        head = BytesHeaderParser(policy=compat32).parsebytes(top)
        if head.get(SELF_TEST_HEADER) is None:
            return False
        senders = getaddresses([str(x) for x in head.get_all("From", [])])
    except Exception:  # hostile headers: not ours
        return False
    own = {a.lower() for a in own_addresses}
    return len(senders) == 1 and senders[0][1].lower() in own


def sender_name(raw: bytes) -> str | None:
    """The display name in From, decoded, on one line (None when there is none): how a
    referred colleague is told who sent us to them."""
    try:
        head = BytesHeaderParser(policy=compat32).parsebytes(_head(raw))
        pairs = getaddresses([str(make_header(decode_header(str(head.get("From", "")))))])
    except Exception:  # hostile headers: no name
        return None
    name = " ".join(pairs[0][0].split()) if pairs else ""
    if not name or "@" in name or len(name) > 100 or safetext.problem(name):
        return None
    return name


def _head(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n", 0, _MAX_HEADER_BYTES)
    if end < 0:
        end = raw.find(b"\n\n", 0, _MAX_HEADER_BYTES)
    return raw[: end if end >= 0 else _MAX_HEADER_BYTES]


async def concerned(raw: bytes) -> list[int]:
    """The active enrollments a message may concern, by its thread headers or its sender:
    those a message we failed to handle must hold until it is handled."""
    return await _concerned_ids(header_facts(raw))


async def _concerned_ids(c: Classification) -> list[int]:
    ids: set[int] = set()
    found = await queries.enrollment_for_message_ids(c.related_message_ids)
    if found is not None:
        ids |= {e.id for e in await queries.active_of(found.email)}
    if c.from_address:
        ids |= {e.id for e in await queries.active_of(c.from_address)}
    return sorted(ids)


_EVENTS = {
    Verdict.HUMAN_REPLY: "reply.detected",
    Verdict.AUTO_REPLY: "autoreply.detected",
    Verdict.BOUNCE: "bounce.detected",
    Verdict.UNSUBSCRIBE_REQUEST: "unsubscribe.detected",
    Verdict.OTHER: "inbound.noted",
}


async def _match(c: Classification, answered: Enrollment | None) -> tuple[Enrollment | None, bool]:
    """Exact evidence first (`answered`: the enrollment our Message-IDs in the thread headers
    belong to), then the address. The flag says whether the thread headers matched."""
    if answered is not None:
        return answered, True
    about_others = c.verdict == Verdict.BOUNCE or _complaint(c)
    candidates = list(c.recipients) if about_others else []
    if c.from_address and not about_others:
        candidates.append(c.from_address)
    for address in candidates:
        rows = await queries.enrollments_of(address)
        if rows:
            return rows[0], False
    return None, False


@dataclass
class _Message:
    """One matched inbound message, as the actions below see it; what its actions started
    (enrollments, agenda items) is collected here for the Outcome."""

    c: Classification
    raw: bytes
    enrollment: Enrollment
    inbound_id: int
    now: datetime
    etiquette: Etiquette | None
    sequences: Mapping[str, Sequence]
    own: set[str] = field(default_factory=set)
    parsed: Message | None = None  # the classifier's parse of `raw`, when there was one
    enrolled: list[int] = field(default_factory=list)
    agenda: list[int] = field(default_factory=list)

    @property
    def subject(self) -> str:
        return self.c.subject or "(no subject)"

    @cached_property
    def excerpt(self) -> str:
        return excerpt(self.raw, parsed=self.parsed)

    @cached_property
    def sender_name(self) -> str | None:
        return sender_name(self.raw)

    @property
    def stop_on_reply(self) -> str:
        return self.etiquette.settings.stop_on_reply if self.etiquette else "contact"

    @property
    def reported(self) -> list[str]:
        """The addresses a report is about (a bounce's recipients), else the contact's."""
        return sorted(set(self.c.recipients) or {self.enrollment.email})


Done = tuple[str, list[int]]


async def _replied(m: _Message) -> Done:
    ended = await _end(
        m.enrollment, m.c, State.REPLIED, f"replied: {m.subject}", m.inbound_id, m.now
    )
    ended += await _stop_domain(m)
    notes = await _follow_up(m)
    action = f"stopped {len(ended)} enrollment(s)" if ended else "recorded"
    return "; ".join([action, *notes]), ended


async def _removal(m: _Message) -> Done:
    """Suppress exactly whom the request names (the sender when it names nobody else). When
    it names only others ("unsubscribe my colleague"), the sender's own sequence stops as at
    any reply, and what they asked for is followed up like any reply."""
    sender_side = _addresses(m.enrollment, m.c)
    targets = set(m.c.suppress) or sender_side
    if not m.c.suppress and OTHERS_NO_ADDRESS in m.c.rules:
        # "Unsubscribe my colleague and add me instead", with no address: the colleague is
        # whom the thread was written to when someone else answers it; never the asker.
        targets = {m.enrollment.email} - {m.c.from_address}
    for address in sorted(targets):
        await queries.suppress(address, "unsubscribe", m.subject, m.now)
    why = f"asked to be removed: {m.subject}"
    ended: list[int] = []
    for address in sorted(targets):
        ended += await queries.finish_address(address, State.UNSUBSCRIBED, why, m.now, m.inbound_id)
    notes: list[str] = []
    askers = sender_side - targets
    if askers:
        for address in sorted(askers):
            ended += await queries.finish_address(
                address, State.REPLIED, f"replied: {m.subject}", m.now, m.inbound_id
            )
    ended += await _stop_domain(m)
    if askers and m.enrollment.email in askers:
        notes += await _follow_up(m)
    if m.c.erasure:
        for address in sorted(targets):
            mine = m.enrollment if address == m.enrollment.email else None
            m.agenda.append(await _erasure_item(address, mine, m.inbound_id, m.now, m.excerpt))
        notes.append("erasure requested: on the agenda")
    named = ", ".join(sorted(targets)) or "nobody (no address for whom they named)"
    action = f"suppressed {named}; stopped {len(ended)}"
    return "; ".join([action, *notes]), ended


async def _stop_domain(m: _Message) -> list[int]:
    """`stop_on_reply: domain`: a person's reply (or removal request) stops every active
    enrollment at their company's domain; free-mail domains are never a company."""
    if m.stop_on_reply != "domain":
        return []
    domains = {company_domain(a) for a in _addresses(m.enrollment, m.c)} - {None}
    ended: list[int] = []
    for domain in sorted(d for d in domains if d):
        why = f"someone at {domain} replied: {m.subject}"
        for enr in await queries.active_at_domain(domain):
            if await queries.finish(enr.id, State.STOPPED, why, m.now, m.inbound_id):
                ended.append(enr.id)
    return ended


async def _follow_up(m: _Message) -> list[str]:
    """What a person's reply asked for: kept with the enrollment it answered, put on the
    agenda, and acted on where the sequence's `on_reply` says so. Nothing here ever sends
    to anyone the reply did not ask us to write to, and suppression always wins."""
    c, enr = m.c, m.enrollment
    referral = [r.to_json() for r in c.referral]
    if c.intent is None and c.follow_up_on is None and not referral:
        return []
    await queries.record_reply(
        enr.id, str(c.intent) if c.intent else None, c.follow_up_on, referral
    )
    seq = m.sequences.get(enr.sequence)
    notes = [f"intent {c.intent}"] if c.intent else []
    if c.intent is Intent.INTERESTED:
        await _agenda(m, Agenda.INTERESTED, "interested: answer now")
    elif c.intent is Intent.NOT_NOW:
        note = await _again_later(m, seq.on_reply.not_now if seq else None)
        await _agenda(m, Agenda.NOT_NOW, note, follow_up_on=c.follow_up_on)
        notes.append(note)
    elif c.intent is Intent.REFERRAL:
        note = await _referred(m, seq.on_reply.referral if seq else None)
        await _agenda(m, Agenda.REFERRAL, note, referral=referral)
        notes.append(note)
    return notes


async def _agenda(m: _Message, kind: Agenda, note: str, **more: object) -> None:
    item = await queries.add_agenda(
        kind,
        m.c.from_address or m.enrollment.email,  # whom to answer: who wrote (usually the contact)
        received_at=m.now,
        sequence=m.enrollment.sequence,
        enrollment_id=m.enrollment.id,
        inbound_id=m.inbound_id,
        excerpt=m.excerpt,
        note=note,
        **more,  # type: ignore[arg-type]
    )
    m.agenda.append(item.id)


async def _again_later(m: _Message, target: str | None) -> str:
    """`on_reply.not_now`: enroll the contact in `target`, its first step at the first
    opening on or after the day they named. Returns what happened, for the agenda."""
    day, email = m.c.follow_up_on, m.enrollment.email
    if day is None:
        return "not now, with no date: decide when to write again"
    if target is None:
        return f"not now: write again from {day.isoformat()} (no on_reply: nothing is sent)"
    seq = m.sequences.get(target)
    if seq is None or m.etiquette is None:
        return f"not enrolled: on_reply.not_now names '{target}', which is not loaded"
    given = {k: v for k, v in m.enrollment.variables.items() if k != "email"}
    try:
        person = contacts.contact(seq, email, given)
    except EnrollError as exc:
        return f"not enrolled in '{target}': {'; '.join(exc.problems)}"
    place = m.etiquette.place(person.values)
    start = wall_to_instant(day, time(0), place.zone)
    # This contact just replied, so only the re-enrolment guard is passed (again=True), for
    # them alone; suppression still applies inside enroll.
    done = await enrolment.enroll(m.etiquette, seq, [person], m.now, again=True, not_before=start)
    return _enrolled_note(m, done, target, email, place.zone)


async def _referred(m: _Message, target: str | None) -> str:
    """`on_reply.referral`: enroll each person the reply points to in `target`, with
    `referred_by` (the replier's name, else address) and a first name from their display
    name. A referred address obeys suppression and the re-enrolment guard like any other;
    one the sequence cannot address (no name where it needs one) stays on the agenda."""
    people = [r for r in m.c.referral if r.address not in m.own]
    if not people:
        return "referral with no address: find out whom they mean"
    if target is None:
        return "referral: write to them yourself (no on_reply: nothing is sent)"
    seq = m.sequences.get(target)
    if seq is None or m.etiquette is None:
        return f"not enrolled: on_reply.referral names '{target}', which is not loaded"
    by = m.sender_name or m.c.from_address or m.enrollment.email
    notes = []
    for person in people:
        given = {"referred_by": by, queries.REFERRED_BY_EMAIL: m.c.from_address or ""}
        name = contacts.first_name(person.name)
        if name:
            given["first_name"] = name
        # The template variable checks: what the target's templates read without a fallback.
        needed = sorted(
            f
            for f in seq.required_fields
            if f != "email" and not given.get(f) and seq.variables.get(f) is None
        )
        if needed:
            what = "name" if needed == ["first_name"] else ", ".join(needed)
            notes.append(
                f"{person.address}: no {what} given, and '{target}' needs "
                f"{', '.join(needed)}: write to them yourself"
            )
            continue
        try:
            contact = contacts.contact(seq, person.address, given)
        except EnrollError as exc:
            notes.append(f"{person.address}: not enrolled in '{target}': {'; '.join(exc.problems)}")
            continue
        done = await enrolment.enroll(m.etiquette, seq, [contact], m.now)
        zone = m.etiquette.place(contact.values).zone
        notes.append(_enrolled_note(m, done, target, contact.email, zone))
    return "; ".join(notes)


def _enrolled_note(
    m: _Message, done: enrolment.Enrolled, target: str, email: str, zone: ZoneInfo
) -> str:
    if done.created:
        m.enrolled += done.created
        first = done.first[email]
        local = first.at.astimezone(zone)
        return f"enrolled {email} in '{target}': first step {local:%a %Y-%m-%d %H:%M %Z}"
    if email in done.blocked:
        return f"{email}: suppressed, not enrolled"
    if email in done.skipped_before:
        return f"{email}: {enrolment.describe(done.skipped_before[email])}; not enrolled"
    return f"{email}: already active in a sequence, not enrolled in '{target}'"


async def _hard_bounce(m: _Message) -> Done:
    ended: list[int] = []
    for address in m.reported:
        await queries.suppress(address, "hard_bounce", f"{m.c.kind}: {m.subject}", m.now)
        why = f"address bad ({m.c.kind or 'bounce'}): {m.subject}"
        ended += await queries.finish_address(address, State.BOUNCED, why, m.now, m.inbound_id)
    return f"suppressed {', '.join(m.reported)}; stopped {len(ended)}", ended


async def _complained(m: _Message) -> Done:
    ended: list[int] = []
    for address in m.reported:
        await queries.suppress(address, "complaint", m.subject, m.now)
        why = f"abuse complaint: {m.subject}"
        ended += await queries.finish_address(address, State.UNSUBSCRIBED, why, m.now, m.inbound_id)
    return f"complaint: suppressed {', '.join(m.reported)}; stopped {len(ended)}", ended


async def _delayed(m: _Message) -> Done:
    return "delivery delayed: nothing changes", []


async def _our_reputation(m: _Message) -> Done:
    until = m.now + REPUTATION_PAUSE
    if await queries.pause_mailbox(m.enrollment.mailbox, until, m.subject, m.now):
        log.error(
            "mailbox.paused",
            mailbox=m.enrollment.mailbox,
            until=until.isoformat(),
            why="a server refused our mail for the sender's reputation (blocklist, "
            "SPF/DKIM/DMARC): check the mailbox's domain and IP before sending more",
            subject=m.subject,
            rules=list(m.c.rules),
        )
    return f"refused for our reputation: mailbox paused until {until.isoformat()}", []


async def _their_policy(m: _Message) -> Done:
    ended: list[int] = []
    for address in m.reported:
        why = f"policy: {m.subject}"
        ended += await queries.finish_address(address, State.FAILED, why, m.now, m.inbound_id)
    return f"refused by the recipient's policy: failed {len(ended)}", ended


async def _soft(m: _Message) -> Done:
    return await _soft_bounce(m.c, m.enrollment, m.inbound_id, m.now, m.etiquette, m.sequences)


async def _left_company(m: _Message) -> Done:
    others = m.c.alternatives  # logged with the event, for the salesperson to decide
    ended = await queries.finish_address(
        m.enrollment.email, State.STOPPED, "left_company", m.now, m.inbound_id
    )
    named = f"; they name {', '.join(others)}" if others else ""
    return f"left the company: stopped {len(ended)}{named}", ended


async def _away(m: _Message) -> Done:
    etiquette, back_on = m.etiquette, m.c.return_date
    if etiquette is None or back_on is None:
        return await _auto_reply(m)
    paused = await _pause(
        m.enrollment.email,
        lambda values: etiquette.back_from_leave(values, back_on),
        "out_of_office",
        etiquette,
        m.sequences,
    )
    return f"out of office until {back_on.isoformat()}: paused {paused}", []


async def _auto_reply(m: _Message) -> Done:
    return f"auto-reply ({m.c.kind}): sequence continues", []


async def _recorded(m: _Message) -> Done:
    return "recorded", []


def asks_removal(c: Classification) -> bool:
    """A removal request, or a person's reply that names whom to remove or asks for erasure:
    when a reading says both, the one that sends nothing more wins."""
    if c.verdict == Verdict.UNSUBSCRIBE_REQUEST:
        return True
    return c.verdict == Verdict.HUMAN_REPLY and (c.erasure or bool(c.suppress))


def _bounce(kind: BounceKind | None = None) -> Callable[[Classification], bool]:
    return lambda c: c.verdict == Verdict.BOUNCE and (kind is None or c.kind == kind)


#: What an inbound message does, by its verdict: the first row whose test holds decides.
#: Exact evidence about the address (a reply, a removal request, a hard bounce, a complaint)
#: comes before anything that only pauses or notes.
ACTIONS: tuple[
    tuple[str, Callable[[Classification], bool], Callable[[_Message], Awaitable[Done]]], ...
] = (
    ("removal_request", lambda c: asks_removal(c), _removal),
    ("human_reply", lambda c: c.verdict == Verdict.HUMAN_REPLY, _replied),
    ("hard_bounce", lambda c: _bounce()(c) and bool(c.hard), _hard_bounce),
    ("complaint", lambda c: _complaint(c), _complained),
    ("delay", _bounce(BounceKind.DELAY), _delayed),
    ("our_reputation", lambda c: _bounce()(c) and c.reputation, _our_reputation),
    ("their_policy", _bounce(BounceKind.POLICY), _their_policy),
    ("soft_bounce", _bounce(), _soft),
    (
        "left_company",
        lambda c: c.verdict == Verdict.AUTO_REPLY and c.kind == "left_company",
        _left_company,
    ),
    (
        "out_of_office",
        lambda c: c.verdict == Verdict.AUTO_REPLY and c.return_date is not None,
        _away,
    ),
    ("auto_reply", lambda c: c.verdict == Verdict.AUTO_REPLY, _auto_reply),
    ("other", lambda c: True, _recorded),
)


async def _act(message: _Message) -> Done:
    for _name, applies, act in ACTIONS:
        if applies(message.c):
            return await act(message)
    raise AssertionError("the last row of ACTIONS applies to everything")


def _addresses(enrollment: Enrollment, c: Classification) -> set[str]:
    targets = {enrollment.email}
    if c.from_address:
        targets.add(c.from_address)
    return targets


async def _end(
    enrollment: Enrollment,
    c: Classification,
    state: State,
    reason: str,
    inbound_id: int,
    now: datetime,
) -> list[int]:
    """A reply, bounce or removal request ends every active enrollment of that address."""
    ended: list[int] = []
    for address in sorted(_addresses(enrollment, c)):
        ended += await queries.finish_address(address, state, reason, now, inbound_id)
    return ended


#: A soft bounce (mailbox full, server trouble) holds the contact this long, then retries.
SOFT_PAUSE = timedelta(days=1)
#: This many soft bounces spread over at least SOFT_SPAN make the address `bounced`.
SOFT_LIMIT = 3
SOFT_SPAN = timedelta(days=3)
SOFT_WINDOW = timedelta(days=30)  # older soft bounces are forgiven
#: A refusal for our reputation halts the whole mailbox this long (and logs it loudly).
REPUTATION_PAUSE = timedelta(hours=6)


def _complaint(c: Classification) -> bool:
    """An abuse report (ARF, or a provider's feedback loop): the reported address is gone."""
    return "arf_complaint" in c.rules


async def _soft_bounce(
    c: Classification,
    enrollment: Enrollment,
    inbound_id: int,
    now: datetime,
    etiquette: Etiquette | None,
    sequences: Mapping[str, Sequence],
) -> tuple[str, list[int]]:
    """Not a final failure: the contact waits a day and the sequence retries; only soft
    bounces repeated over days mean the address no longer takes mail."""
    subject = c.subject or "(no subject)"
    ended: list[int] = []
    paused = 0
    for address in sorted(set(c.recipients) or {enrollment.email}):
        seen = await queries.soft_bounces(address, now - SOFT_WINDOW)
        if len(seen) >= SOFT_LIMIT and seen[-1] - seen[0] >= SOFT_SPAN:
            days = (seen[-1] - seen[0]).days
            await queries.suppress(address, "soft_bounces", f"{len(seen)} in {days} days", now)
            ended += await queries.finish_address(
                address,
                State.BOUNCED,
                f"{len(seen)} soft bounces over {days} days ({c.kind}): {subject}",
                now,
                inbound_id,
            )
        elif etiquette is not None:
            paused += await _pause(
                address, lambda _values: now + SOFT_PAUSE, "soft_bounce", etiquette, sequences
            )
    if ended:
        return f"soft bounces repeated over days: stopped {len(ended)}", ended
    return f"soft bounce ({c.kind}): paused {paused} for a day, then retries", []


async def _pause(
    email: str,
    until_for: Callable[[Mapping[str, str]], datetime],
    reason: str,
    etiquette: Etiquette,
    sequences: Mapping[str, Sequence],
) -> int:
    """Every active enrollment of that address waits until `until_for(its values)` (then
    its window). A promise is kept as given; the pause holds for the steps after it."""
    paused = 0
    for enr in await queries.active_of(email):
        until = until_for(enr.variables)
        seq = sequences.get(enr.sequence)
        if enr.promised or seq is None or enr.next_at is None:
            # A promise goes as promised; the pause still holds for the steps after it.
            await queries.pause(enr.id, until, enr.next_at, enr.next_reasons)
            paused += 1
            continue
        planned = etiquette.settle(
            seq,
            enr.variables,
            max(enr.next_at, until),
            last_contact=None,
            paused_until=until,
            step=enr.steps_sent + 1,
        )
        reasons = (reason, *(r for r in planned.reasons if r not in {"out_of_office", reason}))
        await queries.pause(enr.id, until, planned.at, reasons)
        paused += 1
    return paused
