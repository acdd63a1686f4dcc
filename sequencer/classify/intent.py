"""What a person's reply asks of the salesperson: interested, not now, someone else, no, or unclear.

Owns: `read_intent`, the reading of a human reply's new text into an `IntentReading` (the
intent, the first day of the period a "not now" named, the people a referral points to, and the
names of the sections that fired). Pure: no I/O, the reply's own date is passed in, and the words
live in the `intent_*` sections of `lang/<code>.yaml` (declared below), so a phrase or a
language is a line of data. dateparser reads explicit dates ("after 15 March", "ab dem
3. Februar"), told the message's languages and only on sentences that carry a later-cue: with
auto-detection it costs ~60 ms and ~60 MB per call, on one sentence with one language ~1 ms.

Must not import asyncio, tortoise or any network library.

Precedence, when several sections fire (first that applies wins; `evidence` lists them all):

1. referral   a referral phrase ("the right person", "talk to my colleague", "I've cc'd") and
              someone named: an address in the text, or someone new in Cc; or an address
              after a forwarding instruction in its sentence ("send it to", "wenden Sie sich
              an", `intent_forward`), or a department's address (purchasing@, einkauf@,
              `intent_role_address`), whatever else the reply says ("happy to look at it,
              but please send it to achats@x.test").
2. not_now    a period was found in a later-cue sentence, and either a not-now phrase fired or
              the period starts more than 14 days after the reply ("not now, maybe Q3";
              "happy to talk in September"). A concrete later date beats a polite decline.
3. referral   an address is named in the text (not the sender's own), and the reply is not
              interested ("not for me - try jane@x.test").
4. referral   a referral phrase with nobody named ("I'm not the right person"), not interested:
              `referral` is then empty and the caller asks the salesperson.
5. not_now    a not-now phrase without a usable date ("maybe later"), and no decline phrase
              (a negated interest is not one: "passt zeitlich nicht, gerne später").
6. interested / decline, whichever fired LAST in the text when both did ("no to the webinar,
              but a demo next week would be great" is interested). A negated interest ("no need
              for a demo", "das interessiert uns nicht"), a negated later-phrase ("no need to
              follow up") or a negated fit ("I don't think this is a fit", `intent_fit`)
              counts as a decline.
7. unclear    nothing fired with confidence.

Fail closed: nothing here sends mail; a `not_now` without a date and a referral without an
address go to the salesperson's agenda, and `unclear` sends nothing.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from sequencer.classify import lexicon, periods, quotes
from sequencer.classify.languages import COMMON_WORDS, guess_languages, numeric_date_order
from sequencer.classify.lexicon import Phrases, phrases
from sequencer.classify.verdict import Intent, Referral

INTERESTED = lexicon.section(
    "intent_interested",
    "phrases",
    "the person wants to go on: agrees to or proposes a meeting, asks for a demo, pricing, a "
    "case study or more information, or says yes",
)
NOT_NOW = lexicon.section(
    "intent_not_now",
    "phrases",
    "the person asks to be contacted later (not now, bad timing, try me in..., circle back)",
)
LATER_CUE = lexicon.section(
    "intent_later_cue",
    "phrases",
    "words that make a sentence worth giving to dateparser: month names and time units "
    "(a digit does too); other sentences are never parsed for a date",
)
DECLINE = lexicon.section(
    "intent_decline",
    "phrases",
    "the person says no without asking to be removed (not interested, no thanks, all set)",
)
COPIED = lexicon.section(
    "intent_copied",
    "phrases",
    'words saying someone was added to the conversation ("adding Tom", "je mets en copie"): a '
    "referral when that person is new in Cc",
)
REFERRAL = lexicon.section(
    "intent_referral",
    "phrases",
    "the person points to someone else (the right person, talk to my colleague, I've cc'd)",
)
NEGATION = lexicon.section(
    "intent_negation",
    "phrases",
    "words that negate an interested or later phrase that follows them in the same clause "
    "(not, no, don't, kein, pas, niet, não)",
)
NOT_NEGATION = lexicon.section(
    "intent_not_negation",
    "phrases",
    "set phrases that contain a negation word but negate nothing ('no problem', 'n'hésitez "
    "pas', 'kein Problem', 'why not'): hidden before negations are looked for",
)
NEGATION_AFTER = lexicon.section(
    "intent_negation_after",
    "phrases",
    "words that negate a phrase just before them in the same clause (German 'nicht', Dutch "
    "'niet', French 'pas': 'das interessiert uns nicht')",
)
CONTRAST = lexicon.section(
    "intent_contrast",
    "phrases",
    "words that start a new clause, so a negation before them does not reach past them "
    "(but, aber, mais, pero, ma, maar, mas)",
)
AFTER = lexicon.section(
    "intent_after",
    "phrases",
    "words meaning 'after' before a date or period: 'after March' is 1 April, 'after 15 March' "
    "is 16 March",
)
DATE_NOISE = lexicon.section(
    "intent_date_noise",
    "phrases",
    "words dateparser would take for a date that are not one here ('we may', 'now', 'today'); "
    "hidden from it",
)
SIGNOFF = lexicon.section(
    "intent_signoff",
    "phrases",
    "a line that is only a sign-off (best regards, mit freundlichen grüßen): what follows it is "
    "a signature, not read for intent",
)
MONTH_PART = lexicon.section(
    "intent_month_part",
    "table",
    "phrase: day of the month, for a part of a month before its name ('early': 1, 'mid': 11, "
    "'end of': 21): the first day of that part",
)
PERIODS = lexicon.section(
    "intent_periods",
    "table",
    "phrase: period rule, for periods a person names ('next quarter': quarter:next, 'after the "
    "summer': month:09); the rules are listed in sequencer/classify/periods.py",
)
SPAN_BEFORE = lexicon.section(
    "intent_span_before",
    "phrases",
    "words before a count and a time unit meaning 'that long from now' ('in', 'dans', 'tra', "
    "'over', 'daqui a'): 'in 3 months' is the reply's date plus three months",
)
SPAN_AFTER = lexicon.section(
    "intent_span_after",
    "phrases",
    "words after a count and a time unit meaning 'from now' ('3 months from now')",
)
SPAN_COUNT = lexicon.section(
    "intent_span_count",
    "table",
    "word: number, for the count before a time unit ('a': 1, 'a couple of': 2, 'a few': 3, "
    "'drei': 3); digits need no entry",
)
SPAN_UNIT = lexicon.section(
    "intent_span_unit",
    "table",
    "time unit: its length as days:N or months:N ('week': days:7, 'mois': months:1); months "
    "are added on the calendar",
)
HONORIFIC = lexicon.section(
    "intent_honorific",
    "phrases",
    "titles and forms of address written before a name ('mr', 'herr', 'mme', 'sra', 'dhr', "
    "'dott'), without their dot: left out of a referred person's name",
)

BEFORE = lexicon.section(
    "intent_before",
    "phrases",
    "words meaning 'before' in front of a period ('before Easter', 'vor Ostern', 'avant "
    "Pâques'); read for feasts, whose +before is in sequencer/classify/periods.py",
)
AFTER_TAIL = lexicon.section(
    "intent_after_tail",
    "phrases",
    "words just after a period meaning it is over ('Q1 is over', 'Q1 ends', 'vorbei', "
    "'terminé', 'voorbij'): 'once Q1 is over' is after Q1",
)
DETERMINER = lexicon.section(
    "intent_determiner",
    "phrases",
    "articles, demonstratives and possessives that may stand between 'after'/'end of' and a "
    "period ('after THE first quarter', 'nach DEM Sommer', 'eind VAN HET jaar'), skipped",
)
FIT = lexicon.section(
    "intent_fit",
    "phrases",
    "words saying the offer suits them ('a fit', 'relevant', 'makes sense', 'faz sentido'): "
    "nothing alone, a decline when negated ('I don't think this is a fit')",
)
FORWARD = lexicon.section(
    "intent_forward",
    "phrases",
    "words telling the salesperson to write or send to someone else ('send it to', 'forward "
    "to', 'wenden Sie sich an', 'escriba a', 'stuur het naar'): with an address after them in "
    "the sentence the reply is a referral, even when it is also interested",
)
ROLE_ADDRESS = lexicon.section(
    "intent_role_address",
    "phrases",
    "the local part of a department's address, lower case ('purchasing', 'einkauf', "
    "'achats', 'compras'): an address written with one is a referral to that department",
)

_SOON = timedelta(days=14)  # a meeting proposed within this is interest, not "later"
_FARTHEST = timedelta(days=731)  # an explicit date further off is not read (a typo, a year)
_TEXT_LIMIT = 8_000  # a reply's own words; hostile input is cut here
_ADDRESS = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+", re.ASCII)
_LINK = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+|\b(?:https?://|www\.)\S+", re.ASCII)
_SENTENCE_END = re.compile(r"[!?;]+|(?<!\d)\.(?!\d)|\n\s*\n")
_CLAUSE_END = re.compile(r"[.!?;,:()\[\]|]|\s[-–—]\s|\n\s*\n")
_REPLY_SUBJECT = re.compile(r"^\s*(?:re|aw|sv|antw|rif|r|res|ref|wg|fw|fwd|tr)\s*:", re.I)
_DIGIT = re.compile(r"\d")
_YEAR_ONLY = re.compile(r"\D*\b(20\d\d)\b\D*")
_NUMERIC_DATE = re.compile(r"\b(\d{1,2})[./-](\d{1,2})\b")
_YEAR_AFTER = re.compile(r"\s*(?:/|-|,|of|de|del|do|van|des)?\s*(20\d\d)\b")
_NAME_WORD = r"[A-ZÀ-ÖØ-Þ][\w'’.-]*"
_PARTICLE = r"(?:van|von|der|den|de|da|di|du|dos|das|del|la|le|ten|ter)"
_NAME = rf"{_NAME_WORD}(?:\s+(?:{_PARTICLE}\s+)*{_NAME_WORD}){{0,3}}"
_NAME_BEFORE = re.compile(rf"({_NAME})\s*(?:[<(\[]\s*$|[,:]?\s*(?:at|@|on|via|-|–|:)?\s*$)")
_NAME_AFTER = re.compile(rf"^\s*[>)\]]?\s*[(\[]\s*({_NAME})\s*[)\]]")
_DATEPARSER_ORDER = {"dmy": "DMY", "mdy": "MDY", "ymd": "YMD"}


@dataclass(frozen=True)
class IntentReading:
    """What a reply asks for, and why we think so."""

    intent: Intent
    follow_up_on: date | None = None  # not_now only: the first day of the period named
    referral: tuple[Referral, ...] = ()  # referral only: who they point to
    evidence: tuple[str, ...] = ()  # "<section>:<how>", in the order they were found


@dataclass(frozen=True)
class _Hit:
    start: int
    end: int
    negated: bool


def read_intent(
    new_text: str,
    *,
    subject: str = "",
    languages: tuple[str, ...] = (),
    sent: date | None = None,
    cc: tuple[tuple[str | None, str], ...] = (),
    sender: str | None = None,
    fiscal_year_start: tuple[int, int] = (1, 1),
) -> IntentReading:
    """Read a human reply's new text (quotes removed by the caller; a trailing signature is cut
    here too) into an intent.

    - `subject`: read too when it is the person's own words (not "Re: ..." of ours).
    - `languages`: lang-file codes the message is written in, best first (`guess_languages`
      when empty); they choose the negation words and dateparser's languages and date order.
    - `sent`: the reply's Date header as a date in the sender's zone; without it no
      `follow_up_on` is computed (a not-now then goes to the agenda).
    - `cc`: (display name or None, address) of the reply's other recipients, with the
      salesperson's own addresses already removed by the caller; `sender` is the From address,
      never a referral.
    - `fiscal_year_start`: (month, day) where quarter 1 begins ((1, 1): calendar quarters).
    """
    periods.check_fiscal_year_start(fiscal_year_start)
    text = _without_header_tail(_without_signature(new_text[:_TEXT_LIMIT]))
    if subject and not _REPLY_SUBJECT.match(subject):
        text = f"{subject.strip()[:300]}.\n\n{text}"
    lowered = text.lower().replace("’", "'").replace("‘", "'")
    codes = tuple(languages) or guess_languages(lowered)
    sure = bool(languages) or _clearly_written_in(lowered, codes)
    # Phrases of the message's languages and English (read in every office); all of them when
    # the text is too short to tell ("Sure!"), since a word of one language can be an
    # everyday word of another (Dutch "later", "intern").
    read = (*codes, *(() if "en" in codes else ("en",))) if sure else ()
    # Addresses and links are not words: "client.test" must not read as German "Test".
    lowered = _LINK.sub(_blank, lowered)
    marked = _mark_short_lines(lowered)
    evidence: list[str] = []

    interested = _hits(INTERESTED, lowered, marked, read)
    not_now = _hits(NOT_NOW, lowered, marked, read)
    decline = [_Hit(m.start(), m.end(), False) for m in phrases(DECLINE, *read).finditer(lowered)]
    # "I don't think this is a fit", "não faz sentido para nós": a negated fit is a no.
    unfit = [h for h in _hits(FIT, lowered, marked, read) if h.negated]
    refer = phrases(REFERRAL, *read).search(lowered)
    if interested and any(not h.negated for h in interested):
        evidence.append("interested:phrase")
    if not_now and any(not h.negated for h in not_now):
        evidence.append("not_now:phrase")
    if decline:
        evidence.append("decline:phrase")
    if unfit:
        evidence.append("decline:negated_fit")
    # A negated interest or later-phrase is a no: "no need for a demo", "no need to follow up".
    if any(h.negated for h in interested):
        evidence.append("decline:negated_interest")
    if any(h.negated for h in not_now):
        evidence.append("decline:negated_later")
    decline += unfit + [h for h in not_now if h.negated]
    # A negated interest is a softer no: "das passt zeitlich nicht, gerne später" asks for
    # later, so it does not outweigh a later-phrase the way "no thanks" does.
    soft_no = [h for h in interested if h.negated]
    explicit_no = bool(decline)
    decline += soft_no
    interested = [h for h in interested if not h.negated]
    not_now = [h for h in not_now if not h.negated]
    if refer:
        evidence.append("referral:phrase")

    sender_address = (sender or "").strip().lower()
    named = _named_people(text, lowered, sender_address)
    copied = _copied_people(cc, sender_address, {r.address for r in named})
    if named:
        evidence.append("referral:address")
    if copied:
        evidence.append("referral:cc")

    people = named + copied
    if refer and people:
        return IntentReading(Intent.REFERRAL, None, people, tuple(evidence))
    # "Adding Tom, who runs our sites" with Tom in Cc: the reply hands the thread over, even
    # when it is friendly about it (the agenda shows the reply either way).
    if copied and phrases(COPIED, *read).search(lowered):
        evidence.append("referral:copied_in")
        return IntentReading(Intent.REFERRAL, None, people, tuple(evidence))
    # "Happy to look at it, but please send it to purchasing@x.test": an instruction to write
    # to someone else's address, or a department's address, is a referral whatever else the
    # reply says.
    forwarded = _forwarded_to(text.lower(), named, read)
    if forwarded:
        evidence.append(forwarded)
        return IntentReading(Intent.REFERRAL, None, people, tuple(evidence))
    # Read the date only now that it can decide (a referral above never needs one).
    follow_up: date | None = None
    when: list[str] = []  # how the date was read; evidence only when the reply is a not-now
    if sent is not None:
        cues = (tuple(h.start for h in not_now), tuple(h.start for h in interested))
        follow_up, when = _follow_up(
            lowered, sent, codes, fiscal_year_start, sure, bool(not_now), cues
        )
    if follow_up is not None and sent is not None and (not_now or follow_up - sent > _SOON):
        return IntentReading(Intent.NOT_NOW, follow_up, (), (*evidence, *when))
    if named and not interested:
        return IntentReading(Intent.REFERRAL, None, named, tuple(evidence))
    if refer and not interested:
        return IntentReading(Intent.REFERRAL, None, people, tuple(evidence))
    if not_now and not explicit_no:
        return IntentReading(Intent.NOT_NOW, None, (), tuple(evidence))
    if interested and decline:
        last_yes = max(h.end for h in interested)
        last_no = max(h.end for h in decline)
        intent = Intent.INTERESTED if last_yes > last_no else Intent.DECLINE
        return IntentReading(intent, None, (), (*evidence, f"{intent}:last"))
    if interested:
        return IntentReading(Intent.INTERESTED, None, (), tuple(evidence))
    if decline:
        return IntentReading(Intent.DECLINE, None, (), tuple(evidence))
    return IntentReading(Intent.UNCLEAR, None, (), tuple(evidence))


# ---------------------------------------------------------------------------------------------
# Text: the language, the signature, clauses and negation.


def _blank(match: re.Match[str]) -> str:
    return " " * len(match.group(0))


def _clearly_written_in(lowered: str, codes: tuple[str, ...]) -> bool:
    """Whether the guess rests on at least three function words of its best language; a
    shorter text is read with every language's phrases."""
    if not codes:
        return False
    words = phrases(COMMON_WORDS, codes[0])
    return sum(1 for _ in zip(words.finditer(lowered[:4000]), range(3), strict=False)) >= 3


def _without_signature(text: str) -> str:
    """The text above a trailing signature: a "-- " line, or the last sign-off line ("Best,")
    that follows some content and has at most 8 short lines after it (a name, a title)."""
    lines = text.split("\n")
    signoff = phrases(SIGNOFF).pattern
    cut = len(lines)
    content_seen = False
    for i, line in enumerate(lines):
        bare = line.strip()
        if bare in ("--", "__"):
            return "\n".join(lines[:i])
        words = bare.strip(" ,.!-").lower()
        if content_seen and signoff is not None and words and signoff.fullmatch(words):
            tail = [ln for ln in lines[i + 1 :] if ln.strip()]
            if len(tail) <= 8 and all(len(ln) < 100 for ln in tail):
                cut = i
        if bare:
            content_seen = True
    return "\n".join(lines[:cut])


@functools.cache
def _header_label() -> re.Pattern[str]:
    """A line that is a label of a quoted header block ("Gesendet: Dienstag, 24. November",
    "Sent: ...", "Von: ..."), in any language."""
    labels = lexicon.phrases(quotes.HEADER_FROM).every + lexicon.phrases(quotes.HEADER_NEXT).every
    return re.compile(rf"^\s*\*?{lexicon.alternation(labels)}\s*\*?\s*[:：]", re.I)


def _without_header_tail(text: str) -> str:
    """The text without header lines left at its end when a quoted block was cut at its
    "From:" line but began with another label (GMX writes "Gesendet:" first): the time in
    "Gesendet: ... 09:16 Uhr" is not the person proposing a meeting."""
    lines = text.rstrip().split("\n")
    label = _header_label()
    while len(lines) > 1 and label.match(lines[-1]):
        lines.pop()
        while lines and not lines[-1].strip():
            lines.pop()
    return "\n".join(lines)


def _forwarded_to(written: str, named: tuple[Referral, ...], codes: tuple[str, ...]) -> str:
    """Why the addresses named make the reply a referral ("referral:forward" when a
    forwarding instruction precedes one in its sentence, "referral:role_address" when one is
    a department's), or "" when they do not."""
    if not named:
        return ""
    roles = phrases(ROLE_ADDRESS, *codes)
    for person in named:
        local = re.sub(r"[._+\d-]+", " ", person.address.partition("@")[0]).strip()
        if roles.search(local) or roles.search(local.replace(" ", "")):
            return "referral:role_address"
    cues = phrases(FORWARD, *codes)
    for person in named:
        at = written.find(person.address)
        if at < 0:
            continue
        window = _LINK.sub(_blank, written[max(0, at - 100) : at]).replace("’", "'")
        begin = max((b.end() for b in _SENTENCE_END.finditer(window)), default=0)
        if cues.search(window[begin:]):
            return "referral:forward"
    return ""


def _mark_short_lines(lowered: str) -> str:
    """The text with each line break after a short line written as "|" (same length), so that
    "No\\nI'd love a demo" is two clauses while a wrapped long line stays one."""
    out = []
    for line in lowered.split("\n"):
        out.append(line)
        out.append("|" if len(line.strip()) < 40 else "\n")
    return "".join(out)[: len(lowered)]


def _hits(name: str, lowered: str, marked: str, codes: tuple[str, ...]) -> list[_Hit]:
    return [
        _Hit(m.start(), m.end(), _negated(marked, m.start(), m.end(), codes))
        for m in phrases(name, *codes).finditer(lowered)
    ]


def _clause_bounds(marked: str, start: int, end: int, codes: tuple[str, ...]) -> tuple[int, int]:
    """Where the clause around text[start:end] begins and ends (punctuation, a blank line, a
    short line's end, or a contrast word such as "but")."""
    lo = max(0, start - 160)
    before = marked[lo:start]
    begin = lo
    for m in _CLAUSE_END.finditer(before):
        begin = lo + m.end()
    for m in phrases(CONTRAST, *codes).finditer(before):
        begin = max(begin, lo + m.end())
    after = marked[end : end + 80]
    stop = end + len(after)
    first = _CLAUSE_END.search(after)
    if first:
        stop = end + first.start()
    contrast = phrases(CONTRAST, *codes).search(after)
    if contrast:
        stop = min(stop, end + contrast.start())
    return begin, stop


def _negated(marked: str, start: int, end: int, codes: tuple[str, ...]) -> bool:
    """Whether a negation governs the phrase: among the five words before it in its clause
    ("I don't think we need a demo"), or among the three after it in languages that negate
    after the verb ("das interessiert uns nicht")."""
    begin, stop = _clause_bounds(marked, start, end, codes)
    idioms = phrases(NOT_NEGATION).pattern
    clause = marked[begin:start]
    if idioms is not None:
        clause = idioms.sub(" ", clause)
    before = " ".join(clause.split()[-5:])
    if before and phrases(NEGATION, *codes).search(before):
        return True
    after = " ".join(marked[end:stop].split()[:3])
    return bool(after and phrases(NEGATION_AFTER, *codes).search(after))


# ---------------------------------------------------------------------------------------------
# When: the first day of the period a "later" names.


def _sentences(lowered: str) -> Iterable[tuple[int, str]]:
    start = 0
    for m in _SENTENCE_END.finditer(lowered):
        if m.start() > start:
            yield start, lowered[start : m.start()]
        start = m.end()
    if start < len(lowered):
        yield start, lowered[start:]


@dataclass(frozen=True)
class _When:
    """A date read from one sentence, where it was written, and how it was read."""

    day: date
    how: str
    at: int  # position in the lowered text
    sentence: tuple[int, int]  # the sentence's bounds in the lowered text


def _follow_up(
    lowered: str,
    sent: date,
    codes: tuple[str, ...],
    fiscal_year_start: tuple[int, int],
    sure: bool,
    later: bool,
    cues: tuple[tuple[int, ...], ...] = (),
) -> tuple[date | None, list[str]]:
    """The period the reply asks to be contacted in, read sentence by sentence (see
    `_sentence_dates`); the caller decides whether it matters.

    Which date wins: one in a sentence that carries a cue of the first tier of `cues` (the
    not-now phrases' positions, then the interested ones'), nearest that cue; else the
    earliest anywhere. "We're locked in until the end of February. Write again in early
    March": the first sentence says why, the one that asks says when."""
    found: list[_When] = []
    for start, sentence in _sentences(lowered):
        bounds = (start, start + len(sentence))
        for day, how, at in _sentence_dates(sentence, sent, codes, fiscal_year_start, sure, later):
            found.append(_When(day, how, start + at, bounds))
    if not found:
        return None, []
    for tier in cues:
        near = [
            (min(abs(w.at - c) for c in inside), w.day, w.how)
            for w in found
            if (inside := [c for c in tier if w.sentence[0] <= c < w.sentence[1]])
        ]
        if near:
            _, when, how = min(near)
            return when, [how]
    best = min(found, key=lambda w: w.day)
    return best.day, [best.how]


def _sentence_dates(
    sentence: str,
    sent: date,
    codes: tuple[str, ...],
    fiscal_year_start: tuple[int, int],
    sure: bool,
    later: bool,
) -> list[tuple[date, str, int]]:
    """The dates one sentence names, with their positions in it. The most precise reading
    wins: a month named outright ("in early March", "Anfang März", "starts in April") or a
    day and month, then a span or a table period ("in 3 months", "next quarter", "the new
    fiscal year"), then whatever dateparser reads in a sentence with a date word (a month
    name, a time unit), or a digit when the reply asked for `later` ("Thursday at 2pm" or
    "40 seats" in a yes is not worth parsing)."""
    langs = (*codes, *(() if "en" in codes else ("en",))) if sure else ()
    masked = _masked(sentence, codes)
    spans = _span_periods(sentence, sent, langs)
    taken = [(start, end) for _, _, start, end in spans]
    periodic = [(day, how, at) for day, how, at, _ in spans]
    periodic += _table_periods(sentence, sent, codes, fiscal_year_start, taken)
    months = _named_months(masked, sent, langs)
    if months:
        # "next year, in March": March of the year the period begins in.
        year_starts = [day for day, how, _ in periodic if how.startswith("period:year")]
        if year_starts:
            floor = max(year_starts) - timedelta(days=1)
            months = [
                (periods.next_on(floor, day.month, day.day) if day <= floor else day, how, at)
                for day, how, at in months
            ]
        return months
    cue = phrases(LATER_CUE)
    dated = _month_with_day(masked, langs)
    if periodic and dated is None:
        return periodic
    hits = list(cue.finditer(sentence))
    digit = _DIGIT.search(sentence) if later else None
    if not (hits or digit):
        return periodic
    words = {" ".join(m.group(0).split()) for m in hits}
    parse_in = _date_languages(words, codes, sure, cue)
    anchor = (
        dated if dated is not None else hits[0].start() if hits else digit.start() if digit else 0
    )
    parsed = _parsed_date(_around(sentence, anchor), sent, codes, parse_in, cue)
    if parsed is not None:
        return [(parsed[0], parsed[1], anchor)]
    return periodic


def _masked(sentence: str, codes: tuple[str, ...]) -> str:
    """The sentence with the words that only look like dates ("we may", "march on") blanked,
    positions kept."""
    noise = phrases(DATE_NOISE, *codes).pattern
    return noise.sub(_blank, sentence) if noise is not None else sentence


@dataclass(frozen=True)
class _Spans:
    pattern: re.Pattern[str] | None
    counts: dict[str, int]
    units: dict[str, str]


@functools.cache
def _span_words(langs: tuple[str, ...]) -> _Spans:
    """ "in 3 months", "dans quelques semaines", "tra un mese", "over twee weken", "3 months
    from now": a word before (or after), a count (digits or a counting word) and a unit,
    from the languages' tables (every language's when `langs` is empty)."""
    chosen = langs or tuple(lexicon.languages())
    counts: dict[str, int] = {}
    units: dict[str, str] = {}
    for code in chosen:
        for word, value in lexicon.table(SPAN_COUNT, code).items():
            if not value.isdigit() or not 0 < int(value) <= 400:
                raise lexicon.LexiconError(
                    f"{_where(code, word)}: {SPAN_COUNT}: {word!r}: {value!r} is not a count; "
                    "write a whole number from 1 to 400"
                )
            counts.setdefault(word, int(value))
        for word, rule in lexicon.table(SPAN_UNIT, code).items():
            if not re.fullmatch(r"(?:days|months):[1-9]\d{0,2}", rule):
                raise lexicon.LexiconError(
                    f"{_where(code, word)}: {SPAN_UNIT}: {word!r}: {rule!r} is not a unit; "
                    'write "days:N" or "months:N" (a week is days:7)'
                )
            units.setdefault(word, rule)
    before = phrases(SPAN_BEFORE, *langs).pattern
    after = phrases(SPAN_AFTER, *langs).pattern
    if not units or (before is None and after is None):
        return _Spans(None, counts, units)
    count = "|".join([r"\d{1,3}", *(_phrase_pattern(w) for w in sorted(counts, key=len)[::-1])])
    unit = "|".join(_phrase_pattern(w) for w in sorted(units, key=len, reverse=True))
    core = rf"(?P<count>{count})\s+(?P<unit>{unit})"
    forms = []
    if before is not None:
        forms.append(rf"(?:{before.pattern})\s+{core}")
    if after is not None:
        forms.append(rf"\b{core}\s+(?:{after.pattern})".replace("?P<", "?P<a_"))
    return _Spans(re.compile("|".join(forms)), counts, units)


def _span_periods(
    sentence: str, sent: date, langs: tuple[str, ...]
) -> list[tuple[date, str, int, int]]:
    """Each "in N <unit>" of the sentence: the reply's date plus that span (months on the
    calendar: "dans 3 mois" written on 23 November is 23 February), with its bounds."""
    spans = _span_words(langs)
    if spans.pattern is None:
        return []
    found = []
    for m in spans.pattern.finditer(sentence):
        raw_count = m.group("count") or m.group("a_count")
        raw_unit = m.group("unit") or m.group("a_unit")
        count = (
            int(raw_count)
            if raw_count.isdigit()
            else spans.counts.get(" ".join(raw_count.split()), 0)
        )
        kind, _, length = spans.units[" ".join(raw_unit.split())].partition(":")
        rule = f"{kind}:{count * int(length)}"
        if count <= 0 or not periods.valid_rule(rule):
            continue  # "in 0 days", "in 30 years": no date rather than a wrong one
        found.append((periods.resolve(rule, sent), "period:span", m.start(), m.end()))
    return found


@dataclass(frozen=True)
class _Months:
    names: dict[str, int]  # full names only ("march", "märz", "mai")
    full: re.Pattern[str] | None
    every: re.Pattern[str] | None  # abbreviations too ("mar", "sept"), for a day and month
    parts: tuple[tuple[re.Pattern[str], int], ...]


_DAY_BEFORE = re.compile(r"\b\d{1,2}(?:st|nd|rd|th|er|º|ª|°|e|\.)?\s*(?:(?:of|de|del|di)\s+)?$")
_DAY_AFTER = re.compile(r"\.?\s*\d{1,2}(?!\d)(?!\s*[:h]\s*\d)")
_PART_LINK = r"(?:\s+(?:of|de|del|della|di|van|do|da|des|du|d'))?"


@functools.cache
def _month_words(langs: tuple[str, ...]) -> _Months:
    """The month names of the languages' `months` tables (every language when `langs` is
    empty) and their month-part phrases. A name that begins a longer name of the same month
    in its language ("jan", "sept") is an abbreviation: too often a word or a name alone."""
    chosen = langs or tuple(lexicon.languages())
    names: dict[str, int] = {}
    every: dict[str, int] = {}
    parts: list[tuple[re.Pattern[str], int]] = []
    for code in chosen:
        table = {k: int(v) for k, v in lexicon.table("months", code).items()}
        for name, month in table.items():
            every.setdefault(name, month)
            shorter = any(o != name and o.startswith(name) and m == month for o, m in table.items())
            if not shorter:
                names.setdefault(name, month)
        for phrase, day in lexicon.table(MONTH_PART, code).items():
            first = min(28, int(day)) if day.isdigit() else 1
            parts.append(
                (re.compile(rf"(?:^|\s)({re.escape(phrase)}){_PART_LINK}\s*$"), max(first, 1))
            )

    def pattern(words: dict[str, int]) -> re.Pattern[str] | None:
        if not words:
            return None
        return re.compile("|".join(_phrase_pattern(w) for w in sorted(words, key=len)[::-1]))

    return _Months(names, pattern(names), pattern(every), tuple(parts))


def _named_months(sentence: str, sent: date, langs: tuple[str, ...]) -> list[tuple[date, str, int]]:
    """Each month named without a day ("in March", "early March", "Anfang März", "a
    principios de marzo", "mid-April 2027"): its first day, or the first day of the part
    named before it (the `intent_month_part` table), the next one after the reply (this
    year's when still ahead); "after March" is 1 April. A month written with a day is left
    to dateparser."""
    months = _month_words(langs)
    if months.full is None:
        return []
    found = []
    for m in months.full.finditer(sentence):
        before = sentence[: m.start()]
        if _DAY_BEFORE.search(before) or _DAY_AFTER.match(sentence, m.end()):
            continue
        month = months.names[" ".join(m.group(0).split())]
        hyphenless = before.replace("-", " ")
        part, part_at, parted = 1, m.start(), False
        for regex, day in months.parts:
            hit = regex.search(hyphenless)
            if hit and day >= part:
                part, part_at, parted = day, hit.start(1), True
        year = _YEAR_AFTER.match(sentence, m.end())
        if year:
            day_named = periods.on_day(int(year.group(1)), month, part)
            if not sent < day_named <= sent + _FARTHEST:
                continue
        else:
            day_named = periods.next_on(sent, month, part)
        how = "date:month_part" if parted else "date:month"
        if not parted and _modifiers(sentence, m.start(), m.end(), langs)[1]:
            if year:
                day_named = periods.add_months(day_named, 1)  # after March 2027: 1 April 2027
            else:  # after March, written in March: this 1 April
                day_named = periods.after(f"month:{month:02d}", sent)
            how += "+after"
        found.append((day_named, how, part_at))
    return found


def _month_with_day(sentence: str, langs: tuple[str, ...]) -> int | None:
    """Where a month written with a day begins ("15 March", "April 20th", "3. Februar"),
    for dateparser; None when there is none."""
    months = _month_words(langs)
    if months.every is None:
        return None
    for m in months.every.finditer(sentence):
        day = _DAY_BEFORE.search(sentence[: m.start()])
        if day:
            return day.start()
        if _DAY_AFTER.match(sentence, m.end()):
            return m.start()
    return None


def _around(sentence: str, at: int) -> str:
    """Four words before and four after position `at`: the date and the words that qualify
    it ("after the", "early"), and little else for dateparser to misread or spend time on."""
    before = sentence[:at].split()[-4:]
    after = sentence[at:].split()[:5]
    return " ".join(before + after)


def _date_languages(
    words: set[str], codes: tuple[str, ...], sure: bool, cue: Phrases
) -> tuple[str, ...]:
    """The languages to give dateparser for one sentence: the message's, when its date words
    are theirs; else the languages whose month names and units the sentence uses ("januari"
    is Dutch even in a three-word reply). dateparser picks one language per call, so a wrong
    list loses the date rather than costing time."""
    owners = [c for c, items in cue.by_language.items() if words & set(items)]
    if not owners:
        return codes or ("en",)
    mine = tuple(c for c in codes if c in owners)
    if sure and mine:
        return mine
    return (*mine, *(c for c in owners if c not in mine))[:3]


@dataclass(frozen=True)
class _Table:
    pattern: re.Pattern[str] | None
    rules: dict[str, str]


def _phrase_pattern(phrase: str) -> str:
    if phrase.startswith("/") and phrase.endswith("/") and len(phrase) > 2:
        return f"(?:{phrase[1:-1]})"
    body = r"\s+".join(re.escape(word) for word in phrase.split())
    start = r"\b" if phrase[0].isalnum() or phrase[0] == "_" else ""
    end = r"\b" if phrase[-1].isalnum() or phrase[-1] == "_" else ""
    return start + body + end


@functools.cache
def _period_table(codes: tuple[str, ...]) -> _Table:
    """The periods tables of `codes` first (their rules win a clash), then every other
    language's, as one pattern; each rule is checked against the vocabulary once."""
    rules: dict[str, str] = {}
    ordered = list(codes) + [c for c in lexicon.languages() if c not in codes]
    for code in ordered:
        for phrase, rule in lexicon.table(PERIODS, code).items():
            if not periods.valid_rule(rule):
                raise lexicon.LexiconError(
                    f"{_where(code, phrase)}: {PERIODS}: {phrase!r}: {rule!r} is not a period "
                    f"rule; write one of {', '.join(periods.RULES)}"
                )
            rules.setdefault(phrase, rule)
    every = sorted(rules, key=len, reverse=True)
    pattern = re.compile("|".join(_phrase_pattern(p) for p in every)) if every else None
    return _Table(pattern, rules)


def _where(code: str, phrase: str) -> str:
    """`file:line` of a table entry, for an error a translator can act on."""
    path = Path(lexicon.LANG_DIR) / f"{code}.yaml"
    try:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip().lower().startswith((phrase, f'"{phrase}"', f"'{phrase}'")):
                return f"{path}:{number}"
    except OSError:
        pass
    return str(path)


def _table_periods(
    sentence: str,
    sent: date,
    codes: tuple[str, ...],
    fiscal_year_start: tuple[int, int],
    taken: list[tuple[int, int]] | None = None,
) -> list[tuple[date, str, int]]:
    """The `intent_periods` phrases of a sentence, resolved; a phrase inside a span already
    read (`taken`: "in a few weeks" read as a count of weeks) is skipped. The words before a
    period may ask for its end ("end of Q2", "Ende des Jahres") or for what follows it ("after
    the first quarter", "once Q1 is over"), or, for a feast, for what precedes it ("before
    Easter"): see `_modifiers` and the +end/+after/+before rules of periods.py."""
    table = _period_table(codes)
    if table.pattern is None:
        return []
    found = []
    for m in table.pattern.finditer(sentence):
        if any(start < m.end() and m.start() < end for start, end in taken or ()):
            continue
        phrase = " ".join(m.group(0).split())
        rule = table.rules.get(phrase) or _regex_rule(table, phrase)
        if rule is None:
            continue
        base, modifier = periods.split_rule(rule)
        kind = base.partition(":")[0]
        at_end, after, before = _modifiers(sentence, m.start(), m.end(), codes)
        if at_end and kind in ("month", "quarter", "half", "year", "fiscal_year"):
            modifier = "end" if modifier in ("", "end") else modifier
        if after:
            modifier = "after"
        elif before and kind in periods.FEASTS:
            modifier = "before"
        if modifier and not periods.valid_rule(f"{base}+{modifier}"):
            modifier = ""  # "the end of next week": the period as written
        if not modifier and base.endswith(":this"):
            continue  # "this year" alone names no date: "not this year" says why, not when
        full = f"{base}+{modifier}" if modifier else base
        if not modifier and kind in ("quarter", "half", "month") and _named_period(base):
            when = periods.resolve(base, sent, fiscal_year_start)
            year = _YEAR_AFTER.match(sentence, m.end())
            if year and fiscal_year_start == (1, 1):
                in_year = date(int(year.group(1)), when.month, when.day)
                if sent < in_year <= sent + _FARTHEST:
                    when = in_year
        else:
            when = periods.resolve(full, sent, fiscal_year_start)
        how = f"period:{kind}" + (f"+{modifier}" if modifier else "")
        found.append((when, how, m.start()))
    return found


def _named_period(base: str) -> bool:
    return base.partition(":")[2] not in ("next", "this")


@dataclass(frozen=True)
class _Modifier:
    """The phrases that qualify a period, as word tuples of the chosen languages."""

    ends: frozenset[tuple[str, ...]]
    afters: frozenset[tuple[str, ...]]
    befores: frozenset[tuple[str, ...]]
    determiners: frozenset[tuple[str, ...]]
    tails: re.Pattern[str] | None


def _word_tuples(name: str, codes: tuple[str, ...]) -> frozenset[tuple[str, ...]]:
    every = lexicon.phrases(name, *codes).every
    return frozenset(tuple(p.split()) for p in every if not p.startswith("/"))


@functools.cache
def _modifier_words(codes: tuple[str, ...]) -> _Modifier:
    """The end words are the month-part phrases for the last part of a month ("end of",
    "late", "Ende", "fin", "finales", "fine", "eind", "final"): one list says "end" for a
    month and for any other period."""
    chosen = codes or tuple(lexicon.languages())
    ends = {
        tuple(phrase.split())
        for code in chosen
        for phrase, day in lexicon.table(MONTH_PART, code).items()
        if day.isdigit() and int(day) >= 21
    }
    tails = phrases(AFTER_TAIL, *codes).pattern
    return _Modifier(
        frozenset(ends),
        _word_tuples(AFTER, codes),
        _word_tuples(BEFORE, codes),
        _word_tuples(DETERMINER, codes),
        tails,
    )


def _ends_with(words: list[str], phrases_: frozenset[tuple[str, ...]]) -> int:
    """How many of the last `words` form one of `phrases_` (the longest), 0 if none."""
    for n in range(min(4, len(words)), 0, -1):
        if tuple(words[-n:]) in phrases_:
            return n
    return 0


def _modifiers(
    sentence: str, start: int, end: int, codes: tuple[str, ...]
) -> tuple[bool, bool, bool]:
    """(end, after, before): what the words before a period ask of it, skipping articles
    and possessives: "towards the END OF the year", "AFTER the end of Q1", "NACH DEM ersten
    Quartal", "BEFORE Easter"; or the words after it: "once Q1 IS OVER" (after)."""
    words = _modifier_words(codes)
    before_text = sentence[max(0, start - 80) : start].replace("-", " ")
    tokens = re.findall(r"[\w']+", before_text)[-8:]
    at_end = after = before = False
    for _ in range(8):
        if not tokens:
            break
        if not at_end and (n := _ends_with(tokens, words.ends)):
            at_end, tokens = True, tokens[:-n]
            continue
        if n := _ends_with(tokens, words.afters):
            after = True
            break
        if n := _ends_with(tokens, words.befores):
            # "not before Easter", "nicht vor Ostern", "we can't do anything before Q3": after
            negation = phrases(NEGATION, *codes)
            before = not negation.search(" ".join(tokens[:-n][-3:]))
            after = not before
            break
        if (tokens[-1],) in words.determiners:  # one word at a time: "end OF the"
            tokens = tokens[:-1]
            continue
        break
    if not (after or before) and words.tails is not None:
        following = " ".join(sentence[end : end + 40].split()[:3])
        after = words.tails.search(following) is not None
    return at_end, after, before


def _regex_rule(table: _Table, phrase: str) -> str | None:
    """The rule of a `/regex/` table key that matched `phrase`."""
    for key, rule in table.rules.items():
        if key.startswith("/") and re.fullmatch(key[1:-1], phrase):
            return rule
    return None


def _preceded_by(words: Phrases, text: str, start: int) -> bool:
    """Whether one of `words` ends within the two words before `start`."""
    before = " ".join(text[max(0, start - 40) : start].split()[-2:])
    return any(m.end() == len(before) for m in words.finditer(before)) or bool(
        before and words.search(before.split()[-1])
    )


def _parsed_date(
    sentence: str,
    sent: date,
    codes: tuple[str, ...],
    parse_in: tuple[str, ...],
    cue: Phrases,
) -> tuple[date, str] | None:
    """An explicit date in a cue sentence, by dateparser with the message's languages only;
    the first one after the reply's date and within two years, or None."""
    masked = sentence
    for m in phrases(DATE_NOISE, *codes).finditer(sentence):
        masked = masked[: m.start()] + " " * (m.end() - m.start()) + masked[m.end() :]
    if not _worth_parsing(masked):
        return None
    # A numeric date's order comes from the message's language; unsure, only a date whose
    # order cannot matter (31/03, 03/03) is read.
    order = numeric_date_order(parse_in) if set(parse_in) <= set(codes) else "any"
    found = _search_dates(" ".join(masked.split()), parse_in or ("en",), order, sent)
    after_words = phrases(AFTER, *codes)
    collapsed = " ".join(masked.split())
    for text, moment in found:
        if not (_DIGIT.search(text) or cue.search(text)):
            continue  # a stray word dateparser took for a date ("me", "sat")
        day = moment.date()
        year_only = _YEAR_ONLY.fullmatch(text)
        if year_only and not cue.search(text):
            day = date(int(year_only.group(1)), 1, 1)  # "maybe 2027": its first day
        numeric = _NUMERIC_DATE.search(text)
        if numeric and order == "any":
            first, second = int(numeric.group(1)), int(numeric.group(2))
            if first <= 12 and second <= 12 and first != second:
                continue  # 02/01: January or February? No date beats a guessed one.
        where = collapsed.find(text)
        if not _DIGIT.search(text) and day.day == 1:
            if day <= sent:
                day = periods.next_on(sent, day.month)  # "in January", written on 1 January
            part = _month_part(collapsed[: max(where, 0)] + text, codes)
            if part > 1:
                day = day.replace(day=part)
        if not sent < day <= sent + _FARTHEST:
            continue
        how = "date:dateparser"
        if where >= 0 and (_preceded_by(after_words, collapsed, where) or after_words.search(text)):
            if _DIGIT.search(text):
                day += timedelta(days=1)  # after 15 March: the 16th
            else:
                day = periods.next_on(sent, day.month % 12 + 1)  # after March: 1 April
            how += "+after"
        return day, how
    return None


def _month_part(before: str, codes: tuple[str, ...]) -> int:
    """The day a part-of-month phrase ending just before (or inside) the month name points to:
    "mid-April" is the 11th, "end of April" the 21st; 1 when none is written."""
    words = " ".join(before.replace("-", " ").split()[-4:])
    best = 1
    for code in codes or tuple(lexicon.languages()):
        for phrase, day in lexicon.table(MONTH_PART, code).items():
            if re.search(
                rf"(?:^|\s){re.escape(phrase)}(?:\s+(?:of|de|del|di|van|do|da))?\s+\S+$", words
            ):
                best = max(best, min(28, int(day)) if day.isdigit() else 1)
    return best


def _worth_parsing(masked: str) -> bool:
    """A digit or a word of three letters or more is left once the noise is hidden."""
    return any(len(word) >= 3 or _DIGIT.search(word) for word in masked.split())


@functools.lru_cache(maxsize=512)
def _search_dates(
    text: str, codes: tuple[str, ...], order: str, sent: date
) -> tuple[tuple[str, datetime], ...]:
    """dateparser's search on one cue sentence, relative to the reply's date. Cached: the
    same sentence on the same day ("try me next quarter") is read once."""
    from dateparser.search import search_dates  # imported on first need: ~0.1 s, ~30 MB

    settings: dict[str, Any] = {
        "RELATIVE_BASE": datetime(sent.year, sent.month, sent.day),
        "PREFER_DATES_FROM": "future",
        "PREFER_DAY_OF_MONTH": "first",
        "RETURN_AS_TIMEZONE_AWARE": False,
    }
    if order in _DATEPARSER_ORDER:
        settings["DATE_ORDER"] = _DATEPARSER_ORDER[order]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dateparser's own deprecation noise
        result = search_dates(text, languages=list(codes), settings=settings)
    return tuple(result or ())


# ---------------------------------------------------------------------------------------------
# Who: the people a referral points to.


def _named_people(text: str, lowered: str, sender: str) -> tuple[Referral, ...]:
    """Addresses written in the text, with the display name written beside them ("Jane Doe
    <jane@x.test>", "Jane Doe (jane@x.test)", "contact Jane at jane@x.test", "jane@x.test
    (Jane Doe)"); the sender's own address and "reach me at ..." are not referrals."""
    people: list[Referral] = []
    seen = {sender} if sender else set()
    for m in _ADDRESS.finditer(text):
        address = m.group(0).strip(".'-").lower()
        if address in seen or _is_self(text, m.start()):
            continue
        seen.add(address)
        name = _name_near(text, m.start(), m.end())
        if name is None:
            name = _name_from_address(text, m.start(), address)
        elif len(name.split()) > 2:  # "Contactez Mme Claire Petit": the words that spell cp@
            name = _spelled(name.split(), address) or name
        people.append(Referral(address, name))
    return tuple(people)


_SELF = re.compile(
    r"(?:\bme|\bmy\b[\w\s]{0,20}\b(?:e-?mail|address)(?:\s+is)?|\bmich|\bmoi|\bmí|\bme"
    r"|\bmij)\s*(?:at|on|via|unter|à|a|en|op|em|:)?\s*[<(\[]?\s*$"
)


def _is_self(text: str, start: int) -> bool:
    """ "reach me at jo@home.test", "my new address is jo@new.test": the sender's own."""
    return bool(_SELF.search(text[max(0, start - 40) : start].lower()))


def _name_near(text: str, start: int, end: int) -> str | None:
    before = text[max(0, start - 80) : start]
    line_before = before.split("\n")[-1]
    m = _NAME_BEFORE.search(line_before)
    name = _clean_name(m.group(1)) if m else None
    if name is None:
        after = _NAME_AFTER.match(text[end : end + 80])
        name = _clean_name(after.group(1)) if after else None
    return name


@functools.cache
def _cue_words() -> frozenset[str]:
    """Lower-case words of the intent phrases: "Contact Jane" at a sentence start is Jane."""
    words: set[str] = set()
    for name in (INTERESTED, NOT_NOW, DECLINE, REFERRAL, COMMON_WORDS):
        for items in phrases(name).by_language.values():
            for phrase in items:
                if not phrase.startswith("/"):
                    words.update(phrase.split())
    return frozenset(words)


def _clean_name(raw: str) -> str | None:
    words = raw.replace("’", "'").split()
    cue = _cue_words()
    while words:  # "our CFO Herr Dr. Markus Brandt": Markus Brandt
        if words[0].lower().strip(".,:") in cue or _acronym(words[0]):
            words.pop(0)
        elif n := _honorific_at(words):
            words = words[n:]
        else:
            break
    while words and (words[-1].lower().strip(".,:") in cue or _acronym(words[-1])):
        words.pop()
    name = " ".join(words).strip(" .,:'\"")
    return name or None


@functools.cache
def _honorifics() -> tuple[tuple[str, ...], ...]:
    """Every language's titles and forms of address as word tuples, longest first."""
    every = lexicon.phrases(HONORIFIC).every
    return tuple(sorted({tuple(p.split()) for p in every}, key=len, reverse=True))


def _honorific_at(words: list[str]) -> int:
    """How many of the leading words are a title ("Herr", "Sig.ra", "De heer"), 0 if none.
    A one-letter title ("M.", "D.") could be an initial: only taken before two more words."""
    bare = [w.lower().rstrip(".,:") for w in words]
    for title in _honorifics():
        n = len(title)
        if tuple(bare[:n]) == title and len(words) > n:
            if len(title) == 1 and len(title[0]) == 1 and len(words) - n < 2:
                continue
            return n
    return 0


def _without_honorific(words: list[str]) -> list[str]:
    """`words` without the titles before the name ("Herr Dr. Markus Brandt": Markus Brandt)."""
    while n := _honorific_at(words):
        words = words[n:]
    return words


_CAPITALISED = re.compile(rf"{_NAME_WORD}(?:\s+(?:{_PARTICLE}\s+)*{_NAME_WORD})+")


def _name_from_address(text: str, at: int, address: str) -> str | None:
    """A name written elsewhere in the text whose words spell the address's local part
    ("contact Sophie Laurent, our logistics lead: sophie.laurent@x.test"; first.last, f.last,
    firstlast, last.first, first_last, initials), accents folded; the one nearest the
    address when several do. None when no 2-4 word capitalised name fits."""
    best: tuple[int, str] | None = None
    for m in _CAPITALISED.finditer(text[: at + 2000]):
        name = _spelled(m.group(0).split(), address)
        distance = abs(at - m.start())
        if name and (best is None or distance < best[0]):
            best = (distance, name)
    return best[1] if best else None


def _spelled(words: list[str], address: str) -> str | None:
    """The first run of 2-4 of `words` (titles left out) that spells the address's local
    part, or None."""
    flat = re.sub(r"[^a-z]", "", _fold(address.partition("@")[0]))
    if len(flat) < 2:
        return None
    for i in range(len(words)):
        for j in range(min(len(words), i + 4), i + 1, -1):
            name = _without_honorific(words[i:j])
            if len(name) >= 2 and flat in _spellings(name):
                return " ".join(name).strip(" .,:'\"")
    return None


def _fold(text: str) -> str:
    """Lower case without accents: "Müller" is "muller" (the caller adds "mueller")."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


_UMLAUT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})


def _spellings(words: list[str]) -> set[str]:
    """How a mailbox can spell a name, separators removed: first+last, f+last, last+first,
    first+l, initials, initials+last ("mjperez"), with the middle words (particles, second
    first names) kept or dropped and umlauts folded or written out ("mueller")."""
    found: set[str] = set()
    for variant in {" ".join(words).lower(), " ".join(words).lower().translate(_UMLAUT)}:
        parts = [re.sub(r"[^a-z]", "", _fold(w)) for w in variant.split()]
        parts = [p for p in parts if p]
        if len(parts) < 2:
            continue
        first, last = parts[0], parts[-1]
        initials = "".join(p[0] for p in parts)
        found |= {initials, initials[:-1] + last, "".join(parts[:-1]) + last}
        for lastname in (last, "".join(parts[1:])):
            found |= {first + lastname, first[0] + lastname, lastname + first, first + lastname[0]}
    return found


def _acronym(word: str) -> bool:
    """CFO, CTO, VP, HR: a role, not a name."""
    letters = word.strip(".,:")
    return len(letters) >= 2 and letters.isupper()


def _copied_people(
    cc: tuple[tuple[str | None, str], ...], sender: str, named: set[str]
) -> tuple[Referral, ...]:
    """The reply's Cc, minus the sender and anyone already named in the text."""
    people: list[Referral] = []
    seen = set(named) | ({sender} if sender else set())
    for display, raw in cc:
        address = parseaddr(raw)[1].strip().lower() or raw.strip().lower()
        if "@" not in address or address in seen:
            continue
        seen.add(address)
        name = " ".join(_without_honorific((display or "").split())).strip("'\"") or None
        if name and (name.lower() == address or "@" in name):
            name = None
        people.append(Referral(address, name))
    return tuple(people)
