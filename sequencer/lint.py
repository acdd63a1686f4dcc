"""Pure etiquette lint for `sequencer check`: a loaded sequence (and optionally the contact
CSV meant for it) in, findings out. No I/O.

Owns the judgement calls a valid file can still get wrong: a break-up that keeps selling,
follow-ups that say nothing ("just checking in"), too many or too hasty emails, a step that
repeats the last one, and template fields the contact list often lacks. Structural rules (the
break-up is last and only last) belong to sequences.py and are not repeated here.

Errors are what a recipient would see as rude; warnings are what the literature on follow-ups
advises against. Each rule is a small function over the sequence; `lint` runs them all.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from difflib import SequenceMatcher
from pathlib import Path
from typing import Literal

from sequencer import render
from sequencer.csvfile import Row
from sequencer.sequences import Sequence, Step

Severity = Literal["error", "warning"]

#: Follow-ups allowed before the break-up: persistence pays, up to a point.
MAX_FOLLOW_UPS = 6
MIN_WAIT = timedelta(days=2)
MIN_BUSINESS_DAYS = 2
MIN_SPAN = timedelta(days=7)
#: SequenceMatcher ratio from which a step reads as the previous one again.
REPEAT_RATIO = 0.8
#: Share of CSV rows lacking a field from which a template needs a fallback for it.
MISSING_SHARE = 0.2


@dataclass(frozen=True)
class Finding:
    """One problem, located as precisely as the sequence allows (line None: the whole file
    or an unknown line; step None: the whole sequence)."""

    severity: Severity
    path: Path
    line: int | None
    step: int | None
    code: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        step = f" step {self.step}:" if self.step is not None else ""
        return f"{where}:{step} {self.severity}: {self.message} [{self.code}]"


# ---------------------------------------------------------------------------------------------
# Reading a body: Jinja markup blanked out, lines kept, so a match maps back to a file line.

_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


def _plain(text: str) -> str:
    """The text a reader sees around the placeholders; markup becomes a space (or the line
    breaks it spanned), so offsets still count lines."""
    return _JINJA.sub(lambda m: " " + "\n" * m.group().count("\n"), text)


def _body_line(step: Step, before: str) -> int | None:
    """The file line where body text continues after `before` (the body, or its `_plain`
    form, up to a match). Exact for a block scalar (`body: |`); a folded or quoted body loses
    line breaks, so a match there may point a few lines early."""
    if step.body_line is None:
        return step.line
    return step.body_line + before.count("\n")


def _quote(text: str, limit: int = 60) -> str:
    words = " ".join(text.split())
    return words if len(words) <= limit else words[: limit - 1].rstrip() + "…"


def _first_hits(step: Step, pattern: re.Pattern[str]) -> Iterator[tuple[int | None, str]]:
    """(file line, matched text) of the pattern in the readable body, one per line."""
    text = _plain(step.body)
    seen: set[int | None] = set()
    for m in pattern.finditer(text):
        line = _body_line(step, text[: m.start()])
        if line not in seen:
            seen.add(line)
            yield line, m.group()


def _rx(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{a})" for a in alternatives), re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# The break-up asks for nothing but a reply.

_NUMBER = (
    r"\d{1,3}|five|ten|fifteen|twenty|thirty|forty-five|fünf|zehn|fünfzehn|zwanzig|dreißig"
    r"|cinq|dix|quinze|vingt|trente|cinco|diez|quince|veinte|treinta"
)
_MEETING = r"call|chat|meeting|demo|session|walk-?through|conversation|catch-up|coffee|zoom"
#: What each kind of ask costs the contact, named in the message.
_ASKS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "a click on a link",
        _rx(
            r"\bhttps?://\S+",
            r"\bwww\.[a-z0-9-]+\.\S+",
            r"\b(?:calendly\.com|cal\.com|savvycal\.com|zcal\.co|tidycal\.com|youcanbook\.me"
            r"|meetings\.hubspot\.com|calendar\.app\.google|calendar\.google\.com|doodle\.com)\S*",
        ),
    ),
    (
        "their time",
        # "15 minutes", "a 20-minute call"; "thanks for the 30 minutes" is not an ask.
        _rx(rf"(?<!\bthe\s)(?<!\byour\s)\b(?:{_NUMBER})[\s-]*(?:min(?:ute)?s?|minuten|minutos)\b"),
    ),
    (
        "a meeting",
        _rx(
            r"\b(?:hop|jump|get)\s+on\s+(?:a\s+)?(?:quick\s+|short\s+|brief\s+)?"
            r"(?:call|zoom|phone|teams|video)\b",
            r"\bbook(?:ing)?\s+(?:a|an|some|in|time|your|yourself|me|it|now|here|via|through"
            r"|using|one)\b",
            r"\bbooking\s+(?:link|page)\b",
            r"\b(?:re)?schedul(?:e|ing)\s+(?:a|an|some|in|time|it|your|yourself|me|one|another"
            r"|that|this|now|here|via|through|using)\b",
            rf"\b(?:set\s+up|arrange|organi[sz]e|grab|pick|choose|select)\s+(?:a|an|some|another)"
            rf"\s+(?:quick\s+|short\s+|brief\s+|new\s+)?(?:{_MEETING}|time|slot)\b",
            rf"\b(?:open|free|available|time)\s+(?:to|for)\s+(?:a|an|another|some)\s+"
            rf"(?:quick\s+|short\s+|brief\s+|\S+-minute\s+)?(?:{_MEETING})\b",
            r"\bwhen\s+(?:are|would|will)\s+you\s+(?:be\s+)?(?:free|available)\b",
            r"\bwhat\s+(?:day|time|date)s?\s+(?:works?|suits?|would\s+work)\b",
            r"\blet[’']?s\s+(?:talk|chat|meet|connect|speak|hop|jump|get\s+on|set\s+up|book"
            r"|schedule|find\s+a\s+time|grab)\b",
            r"\b(?:call|ring|phone)\s+me\b",
            r"\b(?:my|our)\s+calendar\b|\bcalendar\s+invit",
            r"\b(?:see|watch|try|get|request)\s+(?:a|the|our)\s+(?:quick\s+|short\s+|live\s+)?"
            r"demo\b",
            # German
            r"\btermin\w*\s+(?:zu\s+)?(?:vereinbaren|buchen|ausmachen|finden|machen)\b",
            r"\b(?:buchen|vereinbaren)\s+sie\b",
            r"\bzeit\s+für\s+(?:ein(?:en)?\s+)?(?:kurze[sn]?\s+)?"
            r"(?:telefonat|gespräch|call|meeting|austausch|demo)\b",
            r"\brufen\s+sie\s+mich\s+(?:gerne\s+|doch\s+)?an\b",
            # French
            r"\b(?:prendre|fixer|caler|planifier|organiser|réserver|programmer)\s+(?:un|une)\s+"
            r"(?:petit\s+|court\s+|bref\s+)?(?:rendez-vous|rdv|créneau|appel|démo|démonstration"
            r"|réunion|échange|call|visio)\b",
            r"\b(?:réservez|planifiez|choisissez|prenez)\s+(?:un|une|votre)\s+"
            r"(?:créneau|rendez-vous|rdv|appel|démo)\b",
            r"\b(?:auriez|avez)[\s-]+vous\s+(?:quelques\s+minutes|un\s+moment|un\s+créneau"
            r"|du\s+temps)\b",
            r"\bappelez[\s-]moi\b",
            # Spanish
            r"\b(?:agendar|agende|agenda|agendemos|reservar|reserve|reserva|programar|programe"
            r"|programemos|coordinar|coordinemos)\s+(?:una|un|tu|su)\s+(?:breve\s+|corta\s+"
            r"|rápida\s+)?(?:llamada|reunión|demo|demostración|cita|videollamada|hora|espacio)\b",
            r"\b(?:tienes|tiene|tendrías|tendría)\s+(?:unos\s+)?(?:minutos|un\s+momento|tiempo)\b",
            r"\bll[aá]m[ae]me\b",
        ),
    ),
    (
        "a purchase or a sign-up",
        _rx(
            r"\bsign[\s-]*up\b",
            r"\b(?:buy|purchase)\s+(?:now|today|it|one|the|a|an|our|this|before)\b",
            r"\border\s+(?:now|today)\b",
            r"\b(?:start|begin|activate)\s+(?:your|a|the)\s+(?:free\s+)?trial\b",
            r"\bregister\s+(?:now|today|here|for)\b",
            r"\bsubscribe\b",
            r"\b(?:melden\s+sie\s+sich\s+(?:jetzt\s+)?an|registrieren\s+sie\s+sich)\b",
            r"\bjetzt\s+(?:kaufen|bestellen|buchen|anmelden|registrieren)\b",
            r"\b(?:inscrivez-vous|abonnez-vous|achetez|commandez)\b",
            r"\b(?:regístrate|regístrese|suscríbete|suscríbase|compra\s+ahora|compre\s+ahora)",
        ),
    ),
)
#: "I'll set up a call if you say yes" offers something on a reply; that is not an ask.
_OFFER = re.compile(
    r"\b(?:I|we)(?:['’]ll|['’]d|\s+will|\s+would|\s+can|\s+could)\s+(?:\w+\s+){0,3}$",
    re.IGNORECASE,
)
_CALENDAR = "a click on a calendar link"
#: A template variable that is a calendar or booking link whatever its value.
_BOOKING_FIELD = re.compile(r"calend|booking|book_|schedul|meeting_(?:link|url)", re.IGNORECASE)


def _breakup_asks(seq: Sequence) -> Iterator[Finding]:
    """The break-up's one job is to let them go and make a reply easy; any other ask turns
    the goodbye into one more pitch."""
    step = seq.steps[-1]
    if not step.breakup:
        return
    text = _plain(step.body)
    hits: list[tuple[int, int | None, str, str]] = []
    for what, pattern in _ASKS:
        for m in pattern.finditer(text):
            before = text[: m.start()]
            if what == "a meeting" and _OFFER.search(re.split(r"[.!?\n]", before)[-1]):
                continue
            hits.append((m.start(), _body_line(step, before), m.group(), what))
    for field in sorted(render.analyse(step.body).contact_fields):
        if _BOOKING_FIELD.search(field):
            at = re.search(_read_of(field), step.body)
            before = step.body[: at.start()] if at else ""
            link = (len(before), _body_line(step, before), f"contact.{field}", _CALENDAR)
            hits.append(link)
    seen: set[int | None] = set()
    for _, line, found, what in sorted(hits, key=lambda h: (h[1] or 0, h[0])):
        if line in seen:
            continue
        seen.add(line)
        yield Finding(
            "error",
            seq.path,
            line,
            step.number,
            "breakup-asks",
            f'the break-up asks for {what} ("{_quote(found)}"): a last email that still asks '
            "for something reads as one more pitch, not a polite goodbye. Remove it and leave "
            'only a reply as the way back, e.g. "if the timing changes, just reply".',
        )


# ---------------------------------------------------------------------------------------------
# Empty-calorie follow-ups.

_EMPTY = _rx(
    # English
    r"\bjust\s+(?:wanted\s+to\s+|writing\s+to\s+)?check(?:ing)?[\s-]+in\b",
    r"\bjust\s+(?:wanted\s+to\s+|writing\s+to\s+)?follow(?:ing)?[\s-]+up\b",
    r"\bjust\s+a\s+(?:quick\s+|friendly\s+)?(?:follow[\s-]*up|check[\s-]*in|reminder)\b",
    r"\btouch(?:ing)?\s+base\b",
    r"\bcircl(?:e|ing)\s+back\b",
    r"\bany\s+updates?(?:\s+(?:on|about|regarding|yet|so\s+far)\b[^.?!]{0,40})?\s*\?",
    r"\bhave\s+you\s+decided\s+yet\b",
    r"\b(?:have\s+you\s+had|did\s+you\s+(?:get|have))\s+a\s+chance\s+to\s+(?:look|read|review"
    r"|consider|go\s+through|think)\b",
    r"\bdid\s+you\s+(?:get|receive|see)\s+my\s+(?:last|previous|earlier)\s+"
    r"(?:e-?mail|message|note)\b",
    r"\bbump(?:ing)?\s+this\b",
    r"\bfollowing\s+up\s+on\s+my\s+(?:last|previous|earlier)\s+(?:e-?mail|message|note)\b",
    # German
    r"\b(?:wollte|möchte)\s+(?:(?:nur|mal|kurz|noch\s+einmal|noch\s+mal)\s+)+nach(?:haken|fassen)\b",
    r"\bkurz\s+nach(?:haken|fassen)\b",
    r"\bmelde\s+mich\s+nur\s+(?:kurz|mal|noch\s+einmal)\b",
    r"\bhake\s+(?:(?:nur|mal|kurz|noch|einmal)\s+)+nach\b",
    r"\bgibt\s+es\s+(?:(?:schon|bereits|etwas|irgendwelche)\s+)*neuigkeiten\b",
    r"\b(?:haben\s+sie|hast\s+du)\s+meine\s+(?:letzte|vorherige)\s+(?:e-?mail|mail|nachricht)"
    r"\s+(?:erhalten|bekommen|gesehen|gelesen)\b",
    # French
    r"\bje\s+me\s+permets\s+de\s+(?:vous\s+)?relancer\b",
    # "je reviens vers vous avec les chiffres" brings something; the bare phrase does not.
    r"\bje\s+(?:reviens|me\s+permets\s+de\s+revenir)\s+vers\s+vous\b(?!\s+avec\b)",
    r"\bavez[\s-]+vous\s+eu\s+(?:le\s+temps|l['’]occasion)\b",
    r"\b(?:avez[\s-]+vous|as[\s-]+tu)\s+(?:bien\s+)?reçu\s+mon\s+(?:dernier|précédent)\s+"
    r"(?:e-?mail|mail|courriel|message)\b",
    # Spanish
    r"\bs[oó]lo\s+(?:quer[ií]a|quiero|para|escribo\s+para)\s+(?:hacer(?:le|te)?|dar(?:le|te)?)"
    r"\s+(?:un\s+)?seguimiento\b",
    r"\balguna\s+novedad(?:\s+(?:sobre|con|de|respecto|hasta)\b[^.?!]{0,40})?\s*\?",
    r"\b(?:recibiste|recibi[oó]|ha\s+recibido|has\s+recibido)\s+mi\s+(?:[uú]ltimo|anterior)\s+"
    r"(?:correo|e-?mail|mensaje)\b",
)


def _empty_openers(seq: Sequence) -> Iterator[Finding]:
    """A follow-up that only asks whether they read the last one gives nothing and teaches the
    contact that these emails can be ignored."""
    for step in seq.steps:
        for line, found in _first_hits(step, _EMPTY):
            yield Finding(
                "warning",
                seq.path,
                line,
                step.number,
                "empty-opener",
                f'"{_quote(found)}" brings the contact nothing new and trains them to ignore '
                "your emails. Lead with something useful instead: a resource, an answer to a "
                "likely question, or a concrete next step.",
            )


# ---------------------------------------------------------------------------------------------
# Cadence.


def _too_many_steps(seq: Sequence) -> Iterator[Finding]:
    """Past about six unanswered emails, more of them read as pressure, not persistence."""
    before = [s for s in seq.steps if not s.breakup]
    if len(before) > MAX_FOLLOW_UPS:
        first_extra = before[MAX_FOLLOW_UPS]
        yield Finding(
            "warning",
            seq.path,
            first_extra.line,
            first_extra.number,
            "too-many-steps",
            f"{len(before)} emails before the break-up: persistence pays only up to a point, "
            "and past six unanswered emails more of them read as pressure. Cut to "
            f"{MAX_FOLLOW_UPS} or fewer, keeping the ones that bring something new.",
        )


def _short_waits(seq: Sequence) -> Iterator[Finding]:
    """A follow-up that lands a day after the last email gives no time to answer."""
    for step in seq.steps[1:]:
        wait = step.wait
        hasty = (
            wait.business_days < MIN_BUSINESS_DAYS if wait.business_days else wait.delta < MIN_WAIT
        )
        if hasty:
            yield Finding(
                "warning",
                seq.path,
                step.line,
                step.number,
                "short-wait",
                f'this step comes only "{wait.text}" after the previous email: that '
                "gives no time to answer and reads as pressure. Wait at least two business "
                'days ("2bd" or "3d").',
            )


def _short_sequence(seq: Sequence) -> Iterator[Finding]:
    """Squeezed into a few days, the whole sequence misses anyone away for a week."""
    if len(seq.steps) < 2:
        return
    span = sum((s.wait.minimum for s in seq.steps[1:]), timedelta(0))
    if span < MIN_SPAN:
        yield Finding(
            "warning",
            seq.path,
            None,
            None,
            "short-sequence",
            f"the emails span only {_duration(span)} from the first to the break-up: anyone "
            "away for a week misses the whole sequence, and the pace reads as pressure. "
            "Lengthen the waits so it spans at least 7 days.",
        )


def _duration(span: timedelta) -> str:
    seconds = span.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            amount = round(seconds / size, 1)
            return f"{amount:g} {unit}{'' if amount == 1 else 's'}"
    return f"{seconds:g} second{'' if seconds == 1 else 's'}"


def _repeated_text(seq: Sequence) -> Iterator[Finding]:
    """A step that says the last one again is a reminder with nothing new: no reason to
    reply now rather than ignore both."""
    for prev, step in itertools.pairwise(seq.steps):
        a, b = _normal(prev.body), _normal(step.body)
        ratio = SequenceMatcher(None, a, b, autojunk=False).ratio() if a and b else 0.0
        if ratio >= REPEAT_RATIO:
            yield Finding(
                "warning",
                seq.path,
                step.body_line or step.line,
                step.number,
                "repeated-text",
                f"this step repeats step {prev.number} ({ratio:.0%} the same text): "
                "saying it again gives them no reason to reply now. Rewrite it around "
                "something new, such as an answer to a likely question or a useful example.",
            )


def _normal(body: str) -> str:
    return " ".join(_plain(body).lower().split())


_RULES: tuple[Callable[[Sequence], Iterable[Finding]], ...] = (
    _breakup_asks,
    _empty_openers,
    _too_many_steps,
    _short_waits,
    _short_sequence,
    _repeated_text,
)


def _ordered(findings: Iterable[Finding]) -> list[Finding]:
    """Whole-sequence findings first, then by step and line, as the file reads."""
    return sorted(
        findings,
        key=lambda f: (f.step is not None, f.step or 0, f.line or 0, f.code),
    )


def lint(seq: Sequence) -> list[Finding]:
    """Every etiquette finding for a sequence that has already loaded (sequences.py has
    checked its structure), sorted by step and line."""
    return _ordered(f for rule in _RULES for f in rule(seq))


# ---------------------------------------------------------------------------------------------
# Fields the contact list lacks.


def lint_contacts(seq: Sequence, rows: Iterable[Mapping[str, str]], source: str) -> list[Finding]:
    """`no-fallback`: a field the templates read without a fallback, blank or missing in at
    least a fifth of the CSV rows (`source` names the CSV). Those contacts would be refused at
    enrolment, so the list and the templates disagree before anything is sent."""
    tally = ContactTally(seq)
    for row in rows:
        tally.add(row)
    return tally.findings(source)


class ContactTally:
    """`lint_contacts` a row at a time, for a list of any length (`check --csv` of a million
    rows): it keeps a count per field the templates read without a fallback, never the rows,
    so its memory is the same for ten rows as for ten million."""

    def __init__(self, seq: Sequence) -> None:
        self._seq = seq
        self._uses = {
            field: step
            for field, step in sorted(_unguarded_uses(seq).items())
            if field != "email" and not (seq.variables.get(field) or "").strip()
        }
        self._missing = dict.fromkeys(self._uses, 0)
        self._columns: set[str] = set()  # the used fields some row has a column for
        self.rows = 0  # rows not blank (read_csv skips blank lines too)

    def add(self, row: Mapping[str, str | None]) -> None:
        """Count one row (keys as in its header, `None` for a cell past the header's end)."""
        filled = {
            k.strip().lower(): (v or "").strip() for k, v in row.items() if isinstance(k, str)
        }
        if not any(filled.values()):
            return
        self.rows += 1
        for field in self._uses:
            value = filled.get(field)
            if not value:
                self._missing[field] += 1
            if value is not None:
                self._columns.add(field)

    def counted(self, rows: Iterable[Row]) -> Iterator[Row]:
        """`rows` as they are read, each counted on its way (one pass for the lint and the
        row checks)."""
        for row in rows:
            self.add(row.fields)
            yield row

    def findings(self, source: str) -> list[Finding]:
        """The `no-fallback` findings for the rows counted so far."""
        if not self.rows:
            return []
        findings = []
        for field, step in self._uses.items():
            missing = self._missing[field]
            share = missing / self.rows
            if share < MISSING_SHARE:
                continue
            lack = (
                f"{source} has no '{field}' column (all {self.rows} rows lack it)"
                if field not in self._columns
                else f"contact.{field} is blank in {missing} of {self.rows} rows ({share:.0%}) "
                f"of {source}"
            )
            findings.append(
                Finding(
                    "warning",
                    self._seq.path,
                    _field_line(step, field),
                    step.number,
                    "no-fallback",
                    f"{lack}, and this step uses it without a fallback, so those contacts "
                    "would be refused at enrolment. Fill the column, or write "
                    f'{{{{ contact.{field} | default("...") }}}} or give {field} a default '
                    "under variables:.",
                )
            )
        return _ordered(findings)


def _unguarded_uses(seq: Sequence) -> dict[str, Step]:
    """Each contact field some template reads without a fallback, with the first step that
    does."""
    first: dict[str, Step] = {}
    for step in seq.steps:
        for source in (step.subject, step.body):
            if source is None:
                continue
            use = render.analyse(source)
            for field in use.contact_fields - use.defaulted_fields:
                first.setdefault(field, step)
    return first


def _field_line(step: Step, field: str) -> int | None:
    """The body line of the first read of `field` with no `default` filter; the step's own
    line when the read is in the subject."""
    found = re.search(_read_of(field) + r"(?!\s*\|\s*d(?:efault)?\b)", step.body)
    return step.line if found is None else _body_line(step, step.body[: found.start()])


def _read_of(field: str) -> str:
    """A regex for `contact.field` or `contact["field"]` in template source."""
    name = re.escape(field)
    return rf"contact\s*(?:\.\s*{name}\b|\[\s*['\"]{name}['\"]\s*\])"
