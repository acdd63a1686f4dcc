"""Removal requests: whether what a person wrote asks us to stop writing, and to whom.

Owns: reading a removal request out of a person's new words in every language with a phrase
file (short ones such as "Stop", polite, angry, combined with a decline, and legal ones: GDPR
Art. 21 objections and Art. 17 erasure requests, CAN-SPAM and CASL opt-outs), and deciding
which addresses it asks us to remove. Pure: no I/O, no parsing of mail; the caller passes the
new text (quotes already removed), the subject, the sender, whether the message answers ours
and its To/Cc addresses. Must not import asyncio, tortoise or any network library.

Fail closed: a human reply already stops the sequence, so what is at stake here is
suppression. When a sentence could be a request or an ordinary remark, it is read as a
request; only a phrase negated just before it ("don't remove me"), asked and answered no
("Unsubscribe me? No, ..."), or standing in a sender's footer or privacy notice is not one.

The phrases live in `lang/<code>.yaml` under the sections declared below.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from sequencer.classify import lexicon

REMOVAL = lexicon.section(
    "removal", "phrases", "a person asking to stop receiving mail (remove me, stop emailing me)"
)
REMOVAL_WORD = lexicon.section(
    "removal_word",
    "phrases",
    "a bare removal keyword (unsubscribe, opt out): a request anywhere in a reply, and within "
    "the first 500 characters of a message that answers nothing",
)
REMOVAL_SHORT = lexicon.section(
    "removal_short", "phrases", "a sentence that is a removal request on its own (Remove. Stop.)"
)
REMOVAL_COURTESY = lexicon.section(
    "removal_courtesy",
    "phrases",
    "words around a short request that do not change it (please, thanks, from your list)",
)
REMOVAL_LEGAL = lexicon.section(
    "removal_legal",
    "phrases",
    "a formal objection or opt-out (GDPR Art. 21, withdrawn consent, CAN-SPAM, CASL)",
)
ERASURE = lexicon.section(
    "erasure", "phrases", "a request to erase the person's data (GDPR Art. 17, delete my data)"
)
REMOVAL_NEGATION = lexicon.section(
    "removal_negation",
    "phrases",
    "words among the three before a removal phrase that undo it (don't, no need to, nicht)",
)
REMOVAL_NEGATION_AFTER = lexicon.section(
    "removal_negation_after",
    "phrases",
    "words right after a removal phrase that undo it (German: tragen Sie mich nicht aus)",
)
REMOVAL_TRIED = lexicon.section(
    "removal_tried",
    "phrases",
    "words before a removal phrase that keep it despite a negation (couldn't, not interested)",
)
REMOVAL_VERB = lexicon.section(
    "removal_verb",
    "phrases",
    "verbs that remove whoever the sentence names (remove, austragen), read only when it "
    "names an address or someone else",
)
REMOVAL_SELF = lexicon.section(
    "removal_self",
    "phrases",
    "words inside a removal phrase that make it about the writer (me, mich, moi)",
)
SOMEONE_ELSE = lexicon.section(
    "removal_someone_else",
    "phrases",
    "a person other than the writer, in a removal request (my colleague, he has left)",
)
REMOVAL_KEEP = lexicon.section(
    "removal_keep",
    "phrases",
    "words just before an address that keep it off the removal (contact, add, instead)",
)
REMOVAL_FOOTER = lexicon.section(
    "removal_footer",
    "phrases",
    "a sender's footer line (click here, manage preferences, to unsubscribe): never a request",
)
REMOVAL_LIST_PLACE = lexicon.section(
    "removal_list_place",
    "phrases",
    "a mailing list as the place to delete from (from your mailing list, aus Ihrem Verteiler): "
    "deleting my details there is unsubscribing, not erasure",
)
REMOVAL_NOTICE = lexicon.section(
    "removal_notice",
    "phrases",
    "a sentence of a privacy or confidentiality notice (you have the right to): never a request",
)

# Evidence names, in the order a reader would want them.
SUBJECT = "removal_subject"  # the subject alone is a short request ("Re: Unsubscribe")
SHORT = "removal_short"  # a sentence that is only a request ("Stop." "Baja, gracias.")
PHRASE = "removal_phrase"  # a removal phrase in the text ("please take me off your list")
LEGAL = "removal_legal"  # an objection or opt-out in legal wording (Art. 21, CAN-SPAM, CASL)
ERASE = "erasure"  # a request to erase the person's data (Art. 17)
OTHERS = "names_someone_else"  # suppress holds the addresses it names, not the sender's
OTHERS_NO_ADDRESS = "names_someone_else_without_address"  # who it names has no address here
NO_SENDER = "no_sender"  # it is about the writer, but the sender's address is unknown

MAX_TEXT = 20_000  # a removal request, even a formal one, is read within this many characters
_TOP = 500  # a message that answers nothing: bare keywords count only where a person writes

_URL = re.compile(r"https?://|www\.|mailto:|<[a-z][a-z0-9+.-]*:", re.IGNORECASE)
# The lookbehind starts an address only where a run of address characters starts, so a long
# word without "@" is read once, not once per character.
_ADDRESS = re.compile(r"(?<![a-z0-9._%+-])[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+")
# "Art. 21", "No. 5": the dot is not the end of a sentence.
_ABBREVIATION = re.compile(r"\b(art|arts|nr|no|abs|par|para|sec|s)\.\s*(?=\d)")
_SENTENCE_END = re.compile(r"[.!?;\u3002\uff01\uff1f]+(?=\s|$)|[\u3002\uff01\uff1f]|\n")
_CLAUSE_END = re.compile(r"[,.;:!?\n()\u2013\u2014\u3001\u3002]| - ")
_ANSWER_NO = re.compile(r"\s*(no|nope|nein|non|nee|não|nao|いいえ)\b")
_REPLY_PREFIX = re.compile(r"^\s*((re|aw|sv|antw|r|rif|res|fw|fwd|wg|tr|rv|enc)\s*:\s*)+")
_NOT_WORDS = re.compile(r"[^\w@'*-]+")
_SOFT_WRAP = re.compile(r"[ \t]*\n[ \t]*(?=\w)")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u00a0": " ", "\u202f": " "})


@dataclass(frozen=True)
class Removal:
    """A removal request: whom to suppress, whether to erase, and the rules that said so."""

    suppress: tuple[str, ...]  # lower-cased bare addresses; empty when none can be named
    erasure: bool  # asks for the person's data to be erased (GDPR Art. 17 and the like)
    legal: bool  # worded as a legal objection, opt-out or erasure request
    evidence: tuple[str, ...]  # names above, in the order they were found


def read_removal(
    new_text: str,
    *,
    subject: str,
    sender: str | None,
    reply_relation: bool,
    recipients: tuple[str, ...] = (),
) -> Removal | None:
    """The removal request in a message, or None when it is not one.

    `new_text` is what the person wrote now (the caller removed quoted text); `subject` is the
    decoded Subject; `sender` the From address (None when unknown); `reply_relation` whether
    the message answers one of ours (thread headers); `recipients` its To/Cc addresses, so
    that an address of ours written in the text ("stop emailing me from sales@...") is never
    taken for someone to remove.

    A message that answers nothing is read whole (a formal request is long), except that a
    bare keyword ("unsubscribe", "opt out") counts only in its first 500 characters, as
    newsletters and cold mail use those words in their body.
    """
    text, subject = new_text[:MAX_TEXT], subject[:1000]
    if not (_may_ask(text) or _may_ask(subject)):
        return None  # most replies: no removal, legal or erasure word at all
    sender_l = sender.strip().lower() if sender else None
    ours = _our_domains(sender_l, recipients)
    body = _clean(text)
    reading = _Reading(body, sender_l, ours, frozenset(r.strip().lower() for r in recipients))

    words = lexicon.phrases(REMOVAL_WORD)
    for match in lexicon.phrases(REMOVAL).finditer(body):
        reading.request(match, PHRASE)
    for match in words.finditer(body if reply_relation else body[:_TOP]):
        reading.request(match, PHRASE)
    for match in lexicon.phrases(REMOVAL_VERB).finditer(body):
        reading.request(match, PHRASE, needs_someone=True)
    for match in lexicon.phrases(REMOVAL_LEGAL).finditer(body):
        reading.request(match, LEGAL, legal=True)
    for match in lexicon.phrases(ERASURE).finditer(body):
        if _from_a_list(body, match):
            reading.request(match, PHRASE)  # "delete my details from your mailing list"
        else:
            reading.request(match, ERASE, legal=True)
    reading.short_sentences()
    reading.subject(_clean(subject), reply_relation)
    return reading.result()


_ASKING = (REMOVAL, REMOVAL_WORD, REMOVAL_SHORT, REMOVAL_VERB, REMOVAL_LEGAL, ERASURE)


def _may_ask(text: str) -> bool:
    """Whether any phrase that can make a request occurs in the text, footers and all: a
    cheap first look, as cleaning only takes text away."""
    lowered = _SOFT_WRAP.sub(" ", text.translate(_APOSTROPHES)).lower()
    lowered = _ABBREVIATION.sub(r"\1 ", lowered)
    return any(lexicon.phrases(name).search(lowered) for name in _ASKING)


def _our_domains(sender: str | None, recipients: tuple[str, ...]) -> frozenset[str]:
    """Domains of the To/Cc addresses other than the sender's: our side of the conversation."""
    own = sender.rpartition("@")[2] if sender else ""
    return frozenset(
        d for r in recipients if (d := r.strip().lower().rpartition("@")[2]) and d != own
    )


def _clean(text: str) -> str:
    """Lowered text without footer lines and notice sentences, soft line wraps joined."""
    text = text.translate(_APOSTROPHES)
    footer = lexicon.phrases(REMOVAL_FOOTER)
    removal = lexicon.phrases(REMOVAL)
    kept = []
    for line in text.splitlines():
        low = line.lower()
        if footer.search(low):
            continue
        # A link on a line is a footer's, unless the line asks for removal in the first person.
        if _URL.search(low) and not removal.search(low):
            continue
        kept.append(line)
    # A line continued in lower case is one sentence wrapped ("Stop\nby our booth").
    joined = _SOFT_WRAP.sub(_wrap, "\n".join(kept)).lower()
    joined = _ABBREVIATION.sub(r"\1 ", joined)
    notice = lexicon.phrases(REMOVAL_NOTICE)
    if notice.search(joined):
        bounds = _sentences(joined)
        joined = "\n".join(s for s in (joined[a:b] for a, b in bounds) if not notice.search(s))
    return joined


def _from_a_list(text: str, match: re.Match[str]) -> bool:
    """Whether a data-deletion phrase names a mailing list as where to delete from, inside it
    or in the words right after it in its clause ("mijn gegevens uit uw mailinglijst
    verwijderen", "delete my data from your mailing list"): that asks off the list, it does
    not ask to erase what is held. "Art. 17" or "right to erasure" are read on their own."""
    clause_after = _CLAUSE_END.split(text[match.end() : match.end() + 80], maxsplit=1)[0]
    place = lexicon.phrases(REMOVAL_LIST_PLACE)
    return bool(place.search(match.group()) or place.search(clause_after[:50]))


def _wrap(match: re.Match[str]) -> str:
    follows = match.string[match.end()]
    return " " if follows.islower() else "\n"


def _sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence: split at . ! ? ; and line ends."""
    bounds, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        if end.start() > start:
            bounds.append((start, end.start()))
        start = end.end()
    if start < len(text):
        bounds.append((start, len(text)))
    return bounds


def _core(sentence: str) -> str:
    """A sentence without courtesy words and punctuation: what a short request leaves."""
    courtesy = lexicon.phrases(REMOVAL_COURTESY)
    stripped = courtesy.pattern.sub(" ", sentence) if courtesy.pattern else sentence
    return " ".join(_NOT_WORDS.sub(" ", stripped).split())


class _Reading:
    """What the text asks so far: whom to suppress and why. One per call."""

    def __init__(
        self, body: str, sender: str | None, ours: frozenset[str], recipients: frozenset[str]
    ) -> None:
        self.body = body
        self.sender = sender
        self.ours = ours
        self.recipients = recipients  # To/Cc: never the one to remove (Cc'd successor, us)
        self.bounds = _sentences(body)
        self.starts = [a for a, _ in self.bounds]
        self.evidence: dict[str, None] = {}
        self.targets: dict[str, None] = {}
        self.about_sender = False
        self.legal = False
        self.erasure = False
        self.negated = False  # a removal phrase was found and undone
        self.spans: list[tuple[int, int]] = []  # removal phrases counted, for the verbs

    def _sentence(self, pos: int) -> tuple[int, int]:
        i = bisect.bisect_right(self.starts, pos) - 1
        if i >= 0 and self.bounds[i][0] <= pos < self.bounds[i][1]:
            return self.bounds[i]
        return pos, pos

    def request(
        self, match: re.Match[str], name: str, *, legal: bool = False, needs_someone: bool = False
    ) -> None:
        """Count one phrase found in the body, unless undone, and work out whom it names."""
        if needs_someone and any(a <= match.start() < b for a, b in self.spans):
            return  # the verb of a phrase already read ("remove" in "remove me")
        if _negated(self.body, match.start(), match.end()):
            self.negated = True
            return
        self.spans.append(match.span())
        a, b = self._sentence(match.start())
        sentence = self.body[a:b]
        named = self._named(sentence, match.end() - a)
        someone = lexicon.phrases(SOMEONE_ELSE)
        others = lexicon.phrases(SOMEONE_ELSE).search(sentence)
        # "entfernen Sie meinen Kollegen": the possessive belongs to the colleague, not a self.
        phrase = someone.pattern.sub(" ", match.group()) if someone.pattern else match.group()
        selfish = lexicon.phrases(REMOVAL_SELF).search(phrase)
        if needs_someone and not (named or others):
            return  # "remove the second paragraph": a verb with nobody to remove
        self.evidence[name] = None
        if legal:
            self.legal = True
            self.erasure = self.erasure or name == ERASE
        if named:
            self.evidence[OTHERS] = None
            self.targets.update(dict.fromkeys(named))
            if selfish:
                self.about_sender = True
        elif others and not selfish:
            nearby = self._named_nearby(a, b)
            if nearby:
                self.evidence[OTHERS] = None
                self.targets.update(dict.fromkeys(nearby))
            else:
                self.evidence[OTHERS_NO_ADDRESS] = None
        else:
            self.about_sender = True

    def _named(self, sentence: str, after: int) -> list[str]:
        """Addresses in the sentence that it asks to remove: not the sender's, not ours, and
        not introduced as the one to write to instead ("add jane@... instead")."""
        keep = lexicon.phrases(REMOVAL_KEEP)
        found: list[str] = []
        if "@" not in sentence:
            return found
        previous = 0
        for m in _ADDRESS.finditer(sentence):
            address = m.group().rstrip(".")
            lead = sentence[max(previous, m.start() - 40) : m.start()]
            previous = m.end()
            if self._ours_or_sender(address) or keep.search(lead):
                continue
            found.append(address)
        return found

    def _ours_or_sender(self, address: str) -> bool:
        return (
            address == self.sender
            or address in self.recipients
            or address.rpartition("@")[2] in self.ours
        )

    def _named_nearby(self, a: int, b: int) -> list[str]:
        """Addresses of the person a request names only as "him", "her" or "my colleague":
        written in an earlier sentence ("Bob Hansen (bob@...) has left. Please remove him.")
        or in the two sentences after it ("...remove my colleague. Her address is ...").
        Not the sender's or a recipient's, and not one introduced as the one to write to
        instead, before it ("contact carla@...") or just after it ("carla@... takes over")."""
        i = bisect.bisect_right(self.starts, a)
        end = self.bounds[min(i + 1, len(self.bounds) - 1)][1] if i < len(self.bounds) else b
        # A blank line after the request ends it: what follows is a signature.
        blank = self.body.find("\n\n", b, end)
        end = blank if blank != -1 else end
        keep = lexicon.phrases(REMOVAL_KEEP)
        found: list[str] = []
        for start, stop in ((0, a), (b, end)):
            region = self.body[start:stop]
            if "@" not in region:
                continue
            for m in _ADDRESS.finditer(region):
                address = m.group().rstrip(".")
                lead = region[max(0, m.start() - 40) : m.start()]
                follow = _CLAUSE_END.split(region[m.end() : m.end() + 80].lstrip(")>] "), 1)[0]
                if self._ours_or_sender(address) or keep.search(lead):
                    continue
                if keep.search(follow[:30]):
                    continue
                found.append(address)
        return list(dict.fromkeys(found))

    def short_sentences(self) -> None:
        """A sentence that is a request and nothing else: "Stop." "Remove me please.\""""
        short = lexicon.phrases(REMOVAL_SHORT)
        selfish = lexicon.phrases(REMOVAL_SELF)
        whole = (short, lexicon.phrases(REMOVAL), lexicon.phrases(REMOVAL_WORD))
        for a, b in self.bounds:
            if b - a > 120:
                continue
            core = _core(self.body[a:b])
            if not core or not any(p.pattern and p.pattern.fullmatch(core) for p in whole):
                continue
            if lexicon.phrases(SOMEONE_ELSE).search(core) and not selfish.search(core):
                continue  # "Take them off your list.": request() has read whom it names
            if _negated(self.body, a, b):
                self.negated = True
            else:
                self.evidence[SHORT] = None
                self.about_sender = True

    def subject(self, subject: str, reply_relation: bool) -> None:
        """A subject that is only a request counts; a subject of ours in a reply ("Re: How to
        stop emailing by hand") does not, so phrases are searched only in a new message's."""
        bare = _REPLY_PREFIX.sub("", subject)
        core = _core(bare)
        short = tuple(lexicon.phrases(n) for n in (REMOVAL_SHORT, REMOVAL, REMOVAL_WORD))
        if core and any(p.pattern and p.pattern.fullmatch(core) for p in short):
            if not (self.negated and not self.evidence):
                self.evidence[SUBJECT] = None
                self.about_sender = True
            return
        if reply_relation or _REPLY_PREFIX.match(subject):
            return
        for name, section, legal in (
            (SUBJECT, REMOVAL, False),
            (LEGAL, REMOVAL_LEGAL, True),
            (ERASE, ERASURE, True),
        ):
            match = lexicon.phrases(section).search(bare)
            if match and not _negated(bare, match.start(), match.end()):
                self.evidence[name] = None
                self.about_sender = True
                if legal:
                    self.legal = True
                    self.erasure = self.erasure or name == ERASE

    def result(self) -> Removal | None:
        if not self.evidence:
            return None
        suppress = dict(self.targets)
        if self.about_sender:
            if self.sender:
                suppress = {self.sender: None, **suppress}
            else:
                self.evidence[NO_SENDER] = None
        return Removal(tuple(suppress), self.erasure, self.legal, tuple(self.evidence))


def _negated(text: str, start: int, end: int) -> bool:
    """Whether the phrase at text[start:end] is undone: a negation among the three words
    before it in its clause ("no need to remove me", "ne me désabonnez pas"), unless they say
    it was tried and failed ("I couldn't unsubscribe"), or asked and answered no
    ("Unsubscribe me? No, the call is fine."), or followed at once by a negation where the
    language puts it after ("Tragen Sie mich nicht aus"). "No, please remove me" and
    "Not interested - remove me" stay requests: the negation is in an earlier clause."""
    before = text[max(0, start - 80) : start]
    clause = _CLAUSE_END.split(before)[-1]
    window = " ".join(clause.split()[-3:])
    if window and lexicon.phrases(REMOVAL_NEGATION).search(window):
        return not lexicon.phrases(REMOVAL_TRIED).search(" ".join(clause.split()[-5:]))
    after = text[end : end + 200]
    clause_after = _CLAUSE_END.split(after, maxsplit=1)[0]
    if lexicon.phrases(REMOVAL_NEGATION_AFTER).search(clause_after[:40]):
        return True
    question = re.match(r"[^.!?\n]*\?", after)
    return bool(question and _ANSWER_NO.match(after[question.end() :]))
