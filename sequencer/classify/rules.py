"""The ordered rule table, and the rules that belong to no other module.

Owns: the order in which rules are tried (order is policy: reports first, then robots, then
what people write), the rules read_receipt, calendar_accept, calendar_reply, list_mail,
not_a_reply and human_text, and turning the first rule's Hit into a Classification.

Adding a rule: write `def rule_x(mail: Mail) -> Hit | None` in the module that owns its
evidence, and put it in _RULES where it belongs; a Hit decides, None passes to the next.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from email.message import Message
from email.utils import getaddresses

from sequencer.classify import autoreply, bounces, lexicon, removal
from sequencer.classify.intent import IntentReading, read_intent
from sequencer.classify.parse import Mail, addresses, first_msgid, msgids, parse
from sequencer.classify.verdict import Classification, Hit, Intent, Verdict

_CAL_METHOD = re.compile(r"^METHOD:\s*REPLY\s*$", re.I | re.M)
_CAL_PARTSTAT = re.compile(r"PARTSTAT=\"?([A-Z-]+)", re.I)


def rule_mdn(mail: Mail) -> Hit | None:
    """RFC 8098 read receipt: says nothing about interest, so it is not a reply."""
    if mail.report_type == "disposition-notification":
        return Hit(Verdict.OTHER)
    return None


def rule_calendar(mail: Mail) -> Hit | None:
    """An iTIP REPLY is a person answering an invitation, even with no text at all."""
    if not mail.calendar or not _CAL_METHOD.search(mail.calendar):
        return None
    status = _CAL_PARTSTAT.search(mail.calendar)
    if status and status.group(1).upper() == "ACCEPTED":
        return Hit(Verdict.HUMAN_REPLY)
    return None


def rule_calendar_reply(mail: Mail) -> Hit | None:
    """Declined or tentative answers to an invitation are a person's answer too."""
    if mail.calendar and _CAL_METHOD.search(mail.calendar):
        return Hit(Verdict.HUMAN_REPLY)
    return None


def rule_list(mail: Mail) -> Hit | None:
    """List and bulk mail that answers nothing: newsletters, notifications."""
    precedence = (mail.header("Precedence") or mail.header("X-Precedence")).lower()
    listed = bool(mail.header("List-Id") or mail.header("List-Unsubscribe"))
    if precedence == "list" or (listed and not mail.reply_relation):
        return Hit(Verdict.OTHER)
    return None


def rule_not_a_reply(mail: Mail) -> Hit | None:
    """No In-Reply-To, no "Re:", no quote: whatever it is, it does not answer our mail."""
    if not mail.reply_relation:
        return Hit(Verdict.OTHER)
    return None


def rule_human(mail: Mail) -> Hit | None:
    """What is left answers our mail and shows no robot: a person wrote it."""
    return Hit(Verdict.HUMAN_REPLY)


OTHER_LIST = lexicon.section(
    "removal_other_list",
    "phrases",
    "a mailing other than this conversation (the newsletter), named in a removal request",
)


def _read_intent(mail: Mail, fiscal_year_start: tuple[int, int]) -> IntentReading:
    return read_intent(
        mail.new_text,
        subject=mail.subject,
        sent=mail.sent,
        cc=_others(mail),
        sender=mail.from_address,
        fiscal_year_start=fiscal_year_start,
    )


def _interested_despite(hit: Hit, mail: Mail, fiscal: tuple[int, int]) -> IntentReading | None:
    """A reply that asks off another mailing (the newsletter) and for a meeting in the same
    breath ("take me off the newsletter; a call on Thursday?") is an interested reply: reading
    it as a removal request would hide the lead and answer a request about something else."""
    if hit.verdict is not Verdict.UNSUBSCRIBE_REQUEST or hit.erasure or not mail.reply_relation:
        return None
    if not lexicon.phrases(OTHER_LIST).search(mail.new_lowered):
        return None
    reading = _read_intent(mail, fiscal)
    return reading if reading.intent is Intent.INTERESTED else None


Rule = Callable[[Mail], Hit | None]

_RULES: tuple[tuple[str, Rule], ...] = (
    ("arf_complaint", bounces.rule_arf),
    ("read_receipt", rule_mdn),
    ("challenge_response", autoreply.rule_challenge),
    ("dsn_report", bounces.rule_dsn),
    ("ses_notification", bounces.rule_ses),
    ("bounce_text", bounces.rule_bounce_text),
    ("calendar_accept", rule_calendar),
    ("calendar_reply", rule_calendar_reply),
    ("auto_submitted", autoreply.rule_auto_submitted),
    ("autoreply_header", autoreply.rule_autoreply_headers),
    ("precedence", autoreply.rule_precedence),
    ("list_mail", rule_list),
    ("unsubscribe_text", removal.rule_removal),
    ("ooo_subject", autoreply.rule_ooo_subject),
    ("ooo_text", autoreply.rule_ooo_text),
    ("not_a_reply", rule_not_a_reply),
    ("human_text", rule_human),
)


def _others(mail: Mail) -> tuple[tuple[str | None, str], ...]:
    """The reply's Cc recipients other than the sender and the people it answers (To: the
    salesperson and their colleagues' domain), as (display name, address): who a person added
    when they wrote "adding Bob, who handles this"."""
    ours = {a.rpartition("@")[2] for a in addresses(mail.header("To"))}
    theirs = (mail.from_address or "").rpartition("@")[2]
    found: list[tuple[str | None, str]] = []
    for name, address in getaddresses([mail.header("Cc")]):
        address = address.strip().lower()
        domain = address.rpartition("@")[2]
        if "@" not in address or address == mail.from_address:
            continue
        if domain in ours and domain != theirs:
            continue
        found.append((name.strip() or None, address))
    return tuple(found)


def names() -> tuple[str, ...]:
    """The rules' names in the order they are tried."""
    return tuple(name for name, _ in _RULES)


def run(raw: bytes, fiscal_year_start: tuple[int, int] = (1, 1)) -> Classification:
    """Parse `raw` and try the rules in order; the first Hit decides. A human reply is then
    read for what it asks (intent.read_intent)."""
    return run_parsed(raw, fiscal_year_start)[0]


def run_parsed(
    raw: bytes, fiscal_year_start: tuple[int, int] = (1, 1)
) -> tuple[Classification, Message | None]:
    """`run`, and the message as parsed for it (None when it had no header)."""
    mail = parse(raw)
    if mail is None:  # no header at all: not a message
        return Classification(Verdict.OTHER, rules=("unparseable",)), None
    return _decide(mail, fiscal_year_start), mail.msg


def _decide(mail: Mail, fiscal_year_start: tuple[int, int]) -> Classification:
    own = first_msgid(mail.header("Message-ID"))
    for name, rule in _RULES:
        hit = rule(mail)
        if hit is None:
            continue
        related = msgids(mail.header("In-Reply-To")) + msgids(mail.header("References"))
        name = hit.name or name
        if hit.verdict is Verdict.BOUNCE or name in {"dsn_success", "arf_complaint"}:
            related += bounces.returned_ids(mail)
        reading = None
        if hit.verdict is Verdict.HUMAN_REPLY:
            reading = _read_intent(mail, fiscal_year_start)
        elif (reading := _interested_despite(hit, mail, fiscal_year_start)) is not None:
            hit = replace(
                hit,
                verdict=Verdict.HUMAN_REPLY,
                suppress=(),
                also=(*hit.also, "removal_from_another_list"),
            )
        return Classification(
            verdict=hit.verdict,
            kind=hit.kind,
            hard=hit.hard,
            recipients=hit.recipients,
            return_date=hit.return_date,
            alternatives=hit.alternatives,
            reputation=hit.reputation,
            rules=(name, *hit.also, *(reading.evidence if reading else ())),
            message_id=own,
            from_address=mail.from_address,
            subject=mail.subject,
            related_message_ids=tuple(i for i in dict.fromkeys(related) if i != own),
            intent=reading.intent if reading else None,
            follow_up_on=reading.follow_up_on if reading else None,
            referral=reading.referral if reading else (),
            suppress=hit.suppress,
            erasure=hit.erasure,
        )
    raise AssertionError("the rule table ends with a catch-all")  # pragma: no cover
