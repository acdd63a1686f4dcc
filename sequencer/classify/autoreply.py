"""Automatic replies: what proves a robot answered (RFC 3834 and vendor headers, Precedence,
absence subjects and texts), and what kind of auto-reply it is (out of office with its return
date, left the company with the addresses it names, challenge-response, other).

Owns: the rules challenge_response, auto_submitted, autoreply_header, precedence, ooo_subject
and ooo_text, and `auto_reply`, the refinement they share. The words people's auto-replies
use live in the language files (sections below); challenge-response services' own English
wording stays a pattern here, as it is a robot's.
"""

from __future__ import annotations

import functools
import re

from sequencer.classify import dates, lexicon
from sequencer.classify.parse import Mail, addresses, is_reply_subject
from sequencer.classify.verdict import Hit, Verdict

OOO_SUBJECT_START = lexicon.section(
    "ooo_subject_start",
    "phrases",
    'what an absence notice\'s subject starts with ("out of office", "abwesend")',
)
OOO_SUBJECT = lexicon.section(
    "ooo_subject",
    "phrases",
    'absence markers anywhere in a subject ("automatic reply", "(out of office)")',
)
OOO_TEXT = lexicon.section(
    "ooo_text",
    "phrases",
    'how an absence notice says the person is away ("i am out of the office")',
)
OOO_RETURN = lexicon.section(
    "ooo_return",
    "phrases",
    'how an absence notice announces the return ("i will be back", "wieder im büro")',
)
AUTO_REPLY_SUBJECT = lexicon.section(
    "auto_reply_subject",
    "phrases",
    'what an autoresponder\'s subject starts with when it is no absence ("thank you for your")',
)
LEFT_COMPANY = lexicon.section(
    "left_company",
    "phrases",
    'how a notice says the person left or the mailbox closed ("no longer with")',
)

# Challenge-response services' own wording: a robot's, in English whatever the recipient's
# language, so a pattern here rather than phrases in a language file.
_CHALLENGE = re.compile(
    r"boxbe|bluebottle|spam ?arrest|mailblocks|sender not pre-?approved|"
    r"server requires confirmation|verify (that )?you are (a )?(human|real person|person)|"
    r"prove (that )?you are (a )?human|confirm (that )?you are (a )?(human|real)|"
    r"please confirm your (message|e-?mail|address)|challenge[- ]response|"
    r"added to (the|my) (recipient'?s )?(allowed|approved|white) ?(list|senders)|"
    r"whitelist request|(add|added) (you|your address) to (my|the) (whitelist|white list|"
    r"approved senders)|"
    r"protected by [\w ]{0,30}(spam|anti-?spam|verification)|this account is protected by"
)
_ADDRESS_IN_TEXT = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_AUTOMATIC_SUFFIX = re.compile(r"\(automatic (response|reply)\)\s*$")


@functools.cache  # the phrase files are read once per process
def _at_start(name: str) -> re.Pattern[str]:
    """A section's phrases at the start of a subject, after blanks and an opening "["."""
    words = lexicon.phrases(name).every
    return re.compile(r"\s*\[?" + lexicon.alternation(words))


def _search(name: str, lowered: str) -> bool:
    return lexicon.phrases(name).search(lowered) is not None


def looks_absent(lowered: str) -> bool:
    """Whether a lowered text says its writer is away (the ooo_text phrases)."""
    return _search(OOO_TEXT, lowered)


def auto_reply(mail: Mail) -> Hit:
    """Refine an auto-reply already proven by other evidence: kind and return date."""
    text = mail.subject + "\n" + mail.new_text
    lowered = mail.subject_lowered + "\n" + mail.new_lowered
    if _search(LEFT_COMPANY, lowered):
        to = addresses(mail.header("To"))
        others = tuple(
            a
            for a in dict.fromkeys(m.lower().rstrip(".") for m in _ADDRESS_IN_TEXT.findall(text))
            if a != mail.from_address and a not in to
        )
        return Hit(
            Verdict.AUTO_REPLY,
            kind="left_company",
            alternatives=others,
            also=("left_company",) + (("alternatives",) if others else ()),
        )
    if (
        _search(OOO_TEXT, lowered)
        or _search(OOO_RETURN, lowered)
        or _search(OOO_SUBJECT, mail.subject_lowered)
        or _at_start(OOO_SUBJECT_START).match(mail.subject_lowered)
    ):
        back = dates.return_date(lowered, mail.sent)
        return Hit(
            Verdict.AUTO_REPLY,
            kind="out_of_office",
            return_date=back,
            also=("out_of_office",) + (("return_date",) if back else ()),
        )
    return Hit(Verdict.AUTO_REPLY, kind="other")


def rule_challenge(mail: Mail) -> Hit | None:
    """Challenge-response filters ask us to prove we are human; some dress up as DSNs."""
    # No _CHALLENGE match spans a line break or looks outside itself, so a piece contained in
    # another one cannot add a match: read the new text and the report text once when one
    # holds the other, as it does in most messages.
    new, report = mail.new_lowered, mail.report_lowered
    if new in report:
        body = [report]
    elif report in new:
        body = [new]
    else:
        body = [new, report]
    diagnostics = " ".join(r.diagnostic for r in mail.dsn).lower()
    text = "\n".join([mail.subject_lowered, *body, diagnostics])
    if _CHALLENGE.search(text):
        return Hit(Verdict.AUTO_REPLY, kind="challenge")
    return None


def rule_auto_submitted(mail: Mail) -> Hit | None:
    """RFC 3834: any Auto-Submitted value but "no" means no person sent it."""
    value = mail.header("Auto-Submitted").lower()
    if not value or value.startswith("no"):
        return None
    if value.startswith("auto-replied") or mail.reply_relation:
        return auto_reply(mail)
    # Lotus Notes sends its out-of-office as "auto-generated (out-of-office)" with no
    # In-Reply-To (tests/mail/ooo-it-notes.eml).
    if re.search(r"out-of-office|vacation|auto-?repl", value):
        return auto_reply(mail)
    # auto-generated and answering nothing: a notification
    return Hit(Verdict.OTHER, name="auto_generated")


def rule_autoreply_headers(mail: Mail) -> Hit | None:
    """Vendor auto-reply headers (Gmail X-Autoreply, X-Autorespond, Exchange suppress flags)."""
    if mail.header("X-Autoreply").lower() not in {"", "no", "false"}:
        return auto_reply(mail)
    if mail.header("X-Autorespond") or mail.header("X-Autoresponse"):
        return auto_reply(mail)
    # Exchange stamps its own OOF replies with X-Auto-Response-Suppress; a person's "RE:"
    # carrying it needs the text to agree before we call it a robot.
    suppress = mail.header("X-Auto-Response-Suppress").lower()
    if re.search(r"\b(oof|autoreply|all)\b", suppress) and (
        not is_reply_subject(mail.subject) or looks_absent(mail.new_lowered)
    ):
        return auto_reply(mail)
    return None


def rule_precedence(mail: Mail) -> Hit | None:
    """Precedence auto_reply/junk/bulk from a single sender (not a list) marks a robot."""
    value = (mail.header("Precedence") or mail.header("X-Precedence")).lower()
    if value not in {"auto_reply", "auto-reply", "junk", "bulk"}:
        return None
    if value == "bulk":
        # Bulk is also every newsletter's mark: believe it for an answer to us, or for a
        # message that reads like an auto-reply, and leave lists to the list rule.
        if mail.header("List-Id") or mail.header("List-Unsubscribe"):
            return None
        robotic = _at_start(AUTO_REPLY_SUBJECT).match(mail.subject_lowered) or _search(
            OOO_SUBJECT, mail.subject_lowered
        )
        if not (mail.reply_relation or robotic or looks_absent(mail.new_lowered)):
            return None
    return auto_reply(mail)


def rule_ooo_subject(mail: Mail) -> Hit | None:
    """Auto-reply subjects start with the marker; a person's "Re: Automatic reply" does not."""
    subject = mail.subject_lowered
    if _at_start(OOO_SUBJECT_START).match(subject) or _AUTOMATIC_SUFFIX.search(subject):
        return auto_reply(mail)
    return None


def rule_ooo_text(mail: Mail) -> Hit | None:
    """Absence or retirement notices in the new text, when nothing else marks the sender.

    Only for subjects that are not a person's "Re:": people write "I'm out until Monday,
    but yes" in real replies, and missing a robot costs less than ignoring a person.
    """
    if is_reply_subject(mail.subject):
        return None
    if looks_absent(mail.new_lowered) or _search(LEFT_COMPANY, mail.new_lowered):
        return auto_reply(mail)
    return None
