"""A person asking to be removed ("unsubscribe me", "bitte austragen"): the unsubscribe rule.

Owns: `removal_request(mail)`, the rule unsubscribe_text, reading only the new text of a
reply (a quoted footer's "unsubscribe" is ours, not theirs), skipping lines that read like a
sender's footer, and dropping a phrase that is negated ("don't stop emailing me") or asked
and answered no ("Unsubscribe me? No, ..."). Its phrases live in the language files.
"""

from __future__ import annotations

import functools
import re

# removal_request declares its sections of lang/*.yaml (read_removal is wired in later).
from sequencer.classify import lexicon
from sequencer.classify.parse import Mail, addresses
from sequencer.classify.removal_request import read_removal
from sequencer.classify.verdict import Hit, Verdict

REQUEST = lexicon.section(
    "unsubscribe_request", "phrases", 'how a person asks to be removed ("take me off")'
)
NEGATION = lexicon.section(
    "unsubscribe_negation",
    "phrases",
    'words that negate a removal phrase just before it ("don\'t", "nicht")',
)
ANSWER_NO = lexicon.section(
    "unsubscribe_answer_no",
    "phrases",
    'a "no" answering a removal question ("unsubscribe me? no, ...")',
)
SUBJECT = lexicon.section(
    "unsubscribe_subject",
    "phrases",
    'a subject that is a removal request by itself ("unsubscribe", "abmelden")',
)
FOOTER = lexicon.section(
    "footer_line",
    "phrases",
    'words of a sender\'s footer line, skipped when looking for a request ("click")',
)

_LINK = re.compile(r"https?://|www\.")
_CLAUSE_END = re.compile(r"[,.;:!?\n()\u2013\u2014]| - ")
_QUESTION = re.compile(r"[^.!?\n]*\?")


@functools.cache  # the phrase files are read once per process
def _subject() -> re.Pattern[str]:
    prefix = lexicon.alternation(lexicon.phrases("reply_prefix").every)
    words = lexicon.alternation(lexicon.phrases(SUBJECT).every)
    return re.compile(rf"\s*(?:{prefix}\s*:\s*)?{words}[\s.!]*")


@functools.cache
def _answer_no() -> re.Pattern[str]:
    return re.compile(r"\s*" + lexicon.alternation(lexicon.phrases(ANSWER_NO).every))


def rule_removal(mail: Mail) -> Hit | None:
    """A person asking to be removed (removal_request.read_removal reads the words), with whom
    to suppress and whether they also ask for their data to be erased."""
    found = read_removal(
        mail.new_text,
        subject=mail.subject,
        sender=mail.from_address,
        reply_relation=mail.reply_relation,
        recipients=tuple(addresses(mail.header("To")) + addresses(mail.header("Cc"))),
    )
    if found is None:
        old = removal_request(mail)
        if old is None:
            return None
        return Hit(old.verdict, also=(*old.also, "old_rule"), suppress=_sender(mail))
    return Hit(
        Verdict.UNSUBSCRIBE_REQUEST,
        also=found.evidence,
        suppress=found.suppress,
        erasure=found.erasure,
    )


def _sender(mail: Mail) -> tuple[str, ...]:
    return (mail.from_address,) if mail.from_address else ()


def removal_request(mail: Mail) -> Hit | None:
    """A person asking to be removed, in the new text only (quoted footers do not count).

    Lines that read like a sender's footer (a link, "click", "preferences") are skipped, and
    a message that answers nothing is only read at its top, where a person would write it.
    """
    if _subject().fullmatch(mail.subject_lowered):
        return Hit(Verdict.UNSUBSCRIBE_REQUEST, also=("subject",))
    text = mail.new_lowered if mail.reply_relation else mail.new_lowered.strip()[:500]
    footer = lexicon.phrases(FOOTER)
    text = "\n".join(ln for ln in text.splitlines() if not (_LINK.search(ln) or footer.search(ln)))
    for match in lexicon.phrases(REQUEST).finditer(text):
        if not _negated(text, match.start(), match.end()):
            return Hit(Verdict.UNSUBSCRIBE_REQUEST)
    return None


def _negated(text: str, start: int, end: int) -> bool:
    """Whether the phrase at text[start:end] is negated or asked and answered "no".

    Only the last three words of its own clause count, so "No, please remove me" and
    "Not interested - remove me" stay requests (tests/mail/human-trap-*.eml).
    """
    before = text[max(0, start - 80) : start]
    clause = _CLAUSE_END.split(before)[-1]
    if lexicon.phrases(NEGATION).search(" ".join(clause.split()[-3:])):
        return True
    after = text[end : end + 200]
    question = _QUESTION.match(after)
    return bool(question and _answer_no().match(after[question.end() :]))
