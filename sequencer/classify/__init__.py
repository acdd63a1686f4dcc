"""Pure inbound-mail classification: raw RFC 5322 bytes in, a Classification out.

Owns: deciding whether a message in the salesperson's inbox is a human reply, an automatic
reply, a bounce, a removal request or something else, with the evidence (named rules).
Must not import asyncio, tortoise or any network library: it is tested without an event loop.

Shape (after GNU Mailman's rule chains): the message is parsed once into `_Mail`, then an
ordered table of small named rules is tried; the first rule that fires decides the verdict, and
the refinements it ran (reason of a bounce, kind of an auto-reply, return date) add their names.
Exact evidence (RFC 3464/8098/5965 reports, RFC 3834 headers) comes before text heuristics, and
heuristics about people read only the new text of a reply, never what it quotes.
"""

from __future__ import annotations

import enum
import functools
import html
import importlib
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from typing import Any

from flufl.bounce import all_failures

from sequencer.mime import charset, message_from_bytes, message_from_string, param

# The stdlib's regex parser and compiler (re._parser, re._compiler), read by _guarded,
# _lower_twin and _split to rewrite patterns into faster equivalents; any failure there
# leaves a pattern as written.
_sre_parser: Any = importlib.import_module("re._parser")
_sre_compiler: Any = importlib.import_module("re._compiler")


class Verdict(enum.StrEnum):
    HUMAN_REPLY = "human_reply"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    UNSUBSCRIBE_REQUEST = "unsubscribe_request"
    OTHER = "other"


class Intent(enum.StrEnum):
    """What a person's reply asks of the salesperson (human replies only)."""

    INTERESTED = "interested"  # agrees to or proposes a meeting, asks for a demo/pricing, yes
    NOT_NOW = "not_now"  # asks to be contacted later (follow_up_on: the period's first day)
    REFERRAL = "referral"  # points to someone else (referral: who)
    DECLINE = "decline"  # not interested, without asking to be removed
    UNCLEAR = "unclear"  # none of these with confidence


@dataclass(frozen=True)
class Referral:
    """A person a reply points to: named in the text or added in Cc."""

    address: str  # lower-cased bare address
    name: str | None = None  # display name when the reply gives one

    def to_json(self) -> dict[str, str | None]:
        return {"address": self.address, "name": self.name}


class BounceKind(enum.StrEnum):
    """Why a message was refused, read from the server's words (a bounce report, or an SMTP
    reply at RCPT or DATA): the same rules either way."""

    USER_UNKNOWN = "user_unknown"  # the address is bad: suppress it
    MAILBOX_FULL = "mailbox_full"  # may pass with time
    REPUTATION = "reputation"  # our reputation or authentication: pause the mailbox
    POLICY = "policy"  # the recipient's policy, or the message (too big, content)
    DELAY = "delay"  # a delivery delay warning: nothing failed yet
    OTHER = "other"


@dataclass(frozen=True)
class Classification:
    verdict: Verdict
    # auto_reply: out_of_office | left_company | challenge | other
    # bounce: user_unknown | mailbox_full | delay | policy | other ; else None
    kind: str | None = None
    hard: bool | None = None  # bounces only: True means the address is bad
    recipients: tuple[str, ...] = ()  # bounces: failed addresses, lower-cased
    return_date: date | None = None
    # left_company: other addresses the notice names ("please contact jane@..."), lower-cased
    alternatives: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()  # names of the rules that decided, in order
    # policy bounces only: refused for the SENDER's reputation or authentication (blocklist,
    # IP/domain reputation, SPF/DKIM/DMARC, PTR, sender address), not for this recipient. Proves
    # nothing about the address; the caller pauses the sending mailbox instead.
    reputation: bool = False
    # Header facts the matcher needs, so callers never re-parse the message.
    message_id: str | None = None  # "<id@host>" of this message
    from_address: str | None = None  # lower-cased bare address
    subject: str = ""
    # Message-IDs this message refers to: In-Reply-To + References, and for bounces the
    # Message-ID/References of the returned original message. Each "<id@host>".
    related_message_ids: tuple[str, ...] = field(default=())
    # Human replies (and removal requests, which are a person's words too): what they ask.
    intent: Intent | None = None
    follow_up_on: date | None = None  # not_now: the first day of the period they named
    referral: tuple[Referral, ...] = ()
    # Removal requests: the addresses to suppress (the sender's when they name nobody else).
    suppress: tuple[str, ...] = ()
    erasure: bool = False  # the request asks for the person's data to be erased (GDPR Art. 17)

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": str(self.verdict),
            "kind": self.kind,
            "hard": self.hard,
            "recipients": list(self.recipients),
            "return_date": self.return_date.isoformat() if self.return_date else None,
            "alternatives": list(self.alternatives),
            "reputation": self.reputation,
            "rules": list(self.rules),
            "intent": str(self.intent) if self.intent else None,
            "follow_up_on": self.follow_up_on.isoformat() if self.follow_up_on else None,
            "referral": [r.to_json() for r in self.referral],
            "suppress": list(self.suppress),
            "erasure": self.erasure,
        }


def classify(raw: bytes, *, fiscal_year_start: tuple[int, int] = (1, 1)) -> Classification:
    """Classify one raw message; never raises, since hostile mail must not stop the poller.

    `fiscal_year_start` (month, day) is where quarters begin when a reply names one ("try me
    in Q3"): calendar quarters by default, the config's `fiscal_year_start` when given.
    """
    try:
        return _classify(raw)
    except Exception:  # anything the stdlib parser or a detector trips on
        return Classification(Verdict.OTHER, rules=("unparseable",))


# ---------------------------------------------------------------------------------------------
# Patterns. Compiled once; each names a kind of evidence, not a particular message.

_I = re.IGNORECASE
_IM = re.IGNORECASE | re.MULTILINE


def _phrases(*alternatives: str) -> re.Pattern[str]:
    """Case-insensitive alternation in which a space also matches a line break."""
    return _guarded(
        "|".join(a.replace(" ?", r"\s*").replace(" ", r"\s+") for a in alternatives), _I
    )


def _guarded(pattern: str, flags: int) -> re.Pattern[str]:
    """`pattern` behind a lookahead for the characters any match can start with.

    Same matches, found several times faster: the regex engine otherwise tries every
    alternative of a long case-insensitive alternation at every position of the text. The
    lookahead's class takes the same flags, so case folding stays exactly the regex's own.
    Patterns whose first character is not a fixed set (classes such as \\w, or a possibly
    empty match) are compiled as they are.
    """
    compiled = re.compile(pattern, flags)
    try:
        first = _first_chars(_sre_parser.parse(pattern, flags))
    except Exception:  # an internal we do not understand: no shortcut, same answers
        return compiled
    if not first:
        return compiled
    chars = "".join(sorted(re.escape(c) for c in first))
    guarded = re.compile(f"(?=[{chars}])(?:{pattern})", flags)
    _GUARDED.add(guarded.pattern)
    return guarded


_GUARDED: set[str] = set()  # patterns (as text) _guarded put a lookahead in front of


def _first_chars(items: Any) -> set[str] | None:
    """Characters a non-empty match of the parsed sequence can start with; None if unknown
    or if the sequence can match the empty string."""
    found, nullable = _first_of_sequence(items)
    return None if found is None or nullable else found


def _first_of_sequence(items: Any) -> tuple[set[str] | None, bool]:
    found: set[str] = set()
    for op, av in items:
        chars, nullable = _first_of_item(str(op), av)
        if chars is None:
            return None, False
        found |= chars
        if not nullable:
            return found, False
    return found, True


def _first_of_item(op: str, av: Any) -> tuple[set[str] | None, bool]:
    if op == "LITERAL":
        return {chr(av)}, False
    if op == "IN":
        chars: set[str] = set()
        for kind, value in av:
            if str(kind) == "LITERAL":
                chars.add(chr(value))
            elif str(kind) == "RANGE" and value[1] - value[0] < 256:
                chars |= {chr(c) for c in range(value[0], value[1] + 1)}
            else:  # NEGATE, CATEGORY (\\d, \\s, \\w), wide ranges
                return None, False
        return chars, False
    if op in {"AT", "ASSERT", "ASSERT_NOT"}:  # zero-width: look further
        return set(), True
    if op == "BRANCH":
        found: set[str] = set()
        nullable = False
        for alternative in av[1]:
            chars_, empty = _first_of_sequence(alternative)
            if chars_ is None:
                return None, False
            found |= chars_
            nullable = nullable or empty
        return found, nullable
    if op == "SUBPATTERN":
        return _first_of_sequence(av[3])
    if op == "ATOMIC_GROUP":
        return _first_of_sequence(av)
    if op in {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}:
        chars_, empty = _first_of_sequence(av[2])
        return chars_, empty or av[0] == 0
    return None, False  # ANY, NOT_LITERAL, GROUPREF, CATEGORY...


def _line_pattern(pattern: str, flags: int) -> re.Pattern[str]:
    """A pattern whose top-level alternatives all start with "^", rewritten to start with a
    literal newline; search it in "\n" + text with _line_start. Same matches, but the regex
    engine jumps from newline to newline instead of trying every alternative everywhere."""
    assert pattern.startswith("^")
    body = pattern[1:].replace("|^", "|")
    assert "^" not in body.replace("[^", "")
    return re.compile(r"\n(?:" + body + ")", flags)


def _folds_to_ascii(code: int) -> bool:
    """Whether case-insensitive matching lets the non-ASCII character `code` match an ASCII
    one (the Kelvin sign matches "k", the long s matches "s")."""
    return any(re.fullmatch(re.escape(chr(code)), chr(c), _I) for c in range(128))


def _lower_safe(items: Any) -> bool:
    """Whether a parsed case-insensitive pattern matches ASCII text exactly where its
    case-sensitive twin matches the same text lower-cased: no upper-case ASCII letter in a
    literal or class (a lower-cased text has none), no non-ASCII character that folds to an
    ASCII one, no inline flags. Anything not understood answers False."""
    for op, av in items:
        kind = str(op)
        if kind in {"LITERAL", "NOT_LITERAL"}:
            if not _char_safe(av):
                return False
        elif kind == "IN":
            for item, value in av:
                name = str(item)
                if name == "LITERAL" and not _char_safe(value):
                    return False
                if name == "RANGE":
                    low, high = value
                    if low <= ord("Z") and high >= ord("A"):
                        return False
                    if high >= 128 and (
                        high - low > 4096
                        or any(_folds_to_ascii(c) for c in range(max(low, 128), high + 1))
                    ):
                        return False
                elif name not in {"LITERAL", "RANGE", "NEGATE", "CATEGORY"}:
                    return False
        elif kind in {"ANY", "AT", "GROUPREF"}:
            continue
        elif kind == "BRANCH":
            if not all(_lower_safe(alternative) for alternative in av[1]):
                return False
        elif kind == "SUBPATTERN":
            if av[1] or av[2] or not _lower_safe(av[3]):
                return False
        elif kind in {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}:
            if not _lower_safe(av[2]):
                return False
        elif kind in {"ASSERT", "ASSERT_NOT"}:
            if not _lower_safe(av[1]):
                return False
        elif kind == "ATOMIC_GROUP":
            if not _lower_safe(av):
                return False
        else:
            return False
    return True


def _char_safe(code: int) -> bool:
    if ord("A") <= code <= ord("Z"):
        return False
    return code < 128 or not _folds_to_ascii(code)


def _lower_twin(pattern: re.Pattern[str]) -> re.Pattern[str] | None:
    """`pattern` without re.IGNORECASE, for ASCII text lower-cased first: same match
    positions, 2-3x faster (the engine no longer folds every character it compares). None
    when the pattern is not case-insensitive or _lower_safe cannot prove the equivalence."""
    if not pattern.flags & _I:
        return None
    try:
        safe = _lower_safe(_sre_parser.parse(pattern.pattern, pattern.flags))
    except Exception:  # an internal we do not understand: no twin, same answers
        return None
    return re.compile(pattern.pattern, pattern.flags & ~_I) if safe else None


class _Folded:
    """A text with its lower-cased copy when it is ASCII, for patterns' case-sensitive twins."""

    __slots__ = ("lower", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.lower = text.lower() if text.isascii() else None

    def search(self, pattern: re.Pattern[str]) -> bool:
        """Whether `pattern` matches anywhere, as bool(pattern.search(text))."""
        if self.lower is not None:
            twin = _TWINS.get(pattern)
            if twin is not None:
                alternatives = _ALTERNATIVES.get(twin)
                if alternatives is None:
                    return twin.search(self.lower) is not None
                return _any_alternative(alternatives, self.lower)
        return pattern.search(self.text) is not None


_TWINS: dict[re.Pattern[str], re.Pattern[str]] = {}
# A twin's top-level alternatives, each compiled alone, with literals one of which every
# match of it contains: see _split.
_Alternatives = tuple[tuple[tuple[str, ...], re.Pattern[str]], ...]
_ALTERNATIVES: dict[re.Pattern[str], _Alternatives] = {}


def _twin(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """Register `pattern`'s lower-case twin for _Folded.search; returns `pattern` itself."""
    twin = _lower_twin(pattern)
    if twin is not None:
        _TWINS[pattern] = twin
        alternatives = _split(twin)
        if alternatives is not None:
            _ALTERNATIVES[twin] = alternatives
    return pattern


def _any_alternative(alternatives: _Alternatives, text: str) -> bool:
    """Whether any alternative matches in `text`: bool(pattern.search(text)) for the pattern
    they were split from, as a pattern matches somewhere exactly when one of its top-level
    alternatives does. An alternative's regex runs only when one of its literals occurs."""
    for literals, regex in alternatives:
        for literal in literals:
            if literal in text:
                if regex.search(text) is not None:
                    return True
                break
    return False


def _split(pattern: re.Pattern[str]) -> _Alternatives | None:
    """`pattern`'s top-level alternatives for _any_alternative (the whole pattern as one
    when it is no alternation), _guarded's lookahead dropped as they imply it; None for a
    case-insensitive pattern.

    Why: a long alternation is tried at every position of the text, each alternative in
    turn, and _guarded's lookahead then also hides the literal prefix the regex engine
    would otherwise skip ahead to. Alone, each alternative gets that fast search back, and
    most are not even run: a substring test (`in`) rules them out first.
    """
    if pattern.flags & _I:
        return None
    try:
        body = _sre_parser.parse(pattern.pattern, pattern.flags)
        items = list(body)
        if items and str(items[0][0]) == "ASSERT" and pattern.pattern in _GUARDED:
            items = items[1:]  # _guarded's lookahead, implied by what follows it
            body = _sre_parser.SubPattern(body.state, items)
        branches = items[0][1][1] if len(items) == 1 and str(items[0][0]) == "BRANCH" else [body]
        alternatives = []
        for branch in branches:
            literals = _required(list(branch))
            if literals is None:  # it would run every time: the guarded whole is faster
                return None
            alternatives.append((literals, _sre_compiler.compile(branch, pattern.flags)))
        return tuple(alternatives)
    except Exception:  # an internal we do not understand: no split, same answers
        return None


def _required(items: list[Any]) -> tuple[str, ...] | None:
    """Literals, one of which every match of the parsed sequence contains; the choice whose
    shortest literal is longest, None when no choice has literals of 2 characters or more."""
    best: tuple[str, ...] | None = None

    def consider(choice: tuple[str, ...] | None) -> None:
        nonlocal best
        if choice and (best is None or min(map(len, choice)) > min(map(len, best))):
            best = choice

    run = ""
    for op, av in items:
        name = str(op)
        if name == "LITERAL":
            run += chr(av)
            continue
        consider((run,) if run else None)
        run = ""
        if name == "SUBPATTERN" and not av[1] and not av[2]:
            consider(_required(list(av[3])))
        elif name == "ATOMIC_GROUP":
            consider(_required(list(av)))
        elif name == "BRANCH":
            choices = [_required(list(branch)) for branch in av[1]]
            if all(choices):
                consider(tuple(sorted({lit for choice in choices if choice for lit in choice})))
        elif name in {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"} and av[0] >= 1:
            consider(_required(list(av[2])))
    consider((run,) if run else None)
    return best if best and min(map(len, best)) >= 2 else None


_MSGID = re.compile(r"<[^<>\s]+@[^<>\s]+>|<[^<>\s]+>")
_ADDR = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]+\b", _I)
_ADDR_ONLY = re.compile(r"^[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]+$", _I)
_ADDR_LOOSE = re.compile(r"^[^\s<>@]+@[^\s<>@]+$")
_DAEMON_LOCAL = re.compile(
    r"^(mailer-?daemon|mail-?daemon|postmaster|post_master|mdaemon|mailerdaemon|"
    r"mail\.?delivery)$",
    _I,
)
_MAILER_DAEMON = re.compile(r"^mail(er)?-?daemon$", _I)
_DAEMON_NAME = re.compile(
    r"mail delivery (sub)?system|mail ?delivery ?service|mailer[- ]daemon|postmaster|"
    r"mail administrator|internet mail delivery|system administrator",
    _I,
)
_BOUNCE_SUBJECT = _guarded(
    r"undeliver|undelivered|returned mail|returning message|delivery status notification|"
    r"delivery (failure|failed|has failed|problem|notification)|failure notice|"
    r"mail delivery failed|could not be delivered|not delivered|non[- ]?delivery|"
    r"delivery report|mail system error|mail (delivery )?error|delayed mail|"
    r"warning: message .* delayed|message delayed|delivery delay|returned to sender|"
    r"nondeliverable|unzustellbar|nicht zustellbar|non remis|non recapitabile|"
    r"onbestelbaar|olevererbar|no se puede entregar|no entregado|não entregue|"
    r"mail could not|message rejected|rejected:|mail failure|bounced",
    _I,
)
_BOUNCE_BODY = _guarded(
    r"could not be delivered|couldn'?t be delivered|was not delivered|delivery (has )?failed|"
    r"permanent (error|failure|fatal)|undeliverable|undelivered|unable to deliver|"
    r"wasn'?t able to deliver|delivery to the following recipient|"
    r"following address(es)? failed|following recipients? (failed|could not)|"
    r"message could not|delivery (status notification|problem)|returned mail|"
    r"user unknown|unknown user|no such user|mailbox (unavailable|not found|full)|"
    r"delivery to .* failed|not be delivered|failed permanently|hop count|"
    r"message was not accepted|rejected your message|did not reach|"
    r"has been delayed|delivery is delayed|will be retried|still trying|"
    r"delivery attempts? (will continue|failed)|message (has )?bounced|"
    r"this is the mail system at|i'?m sorry to (have to )?inform you",
    _I,
)
# Where the copy of the returned message begins in a plain-text bounce: reasons come before it.
# Line-start patterns begin with a literal "\n" and are searched in "\n" + text (see
# _line_start): the regex engine then skips to each newline instead of trying "^" at every
# character, which made this the costliest pattern of all.
_ORIGINAL_START = re.compile(
    # Possessive: the runs cannot give back (what follows starts with a letter), and
    # backtracking over "[ \t>-]*" against "\s*" was cubic on whitespace-heavy bounces.
    r"\n(?:[ \t>-]*+(?:-{2,}|={2,}|\*{2,})?+\s*+(?:a\s++)?("
    r"this is a copy of|below this line is a copy|original message (follows|headers)|"
    r"the original message (follows|is (included|attached)|headers)|returned message|"
    r"undelivered message|message text follows|"
    r"(start|begin) of (the )?(returned|original)|headers of the original|"
    r"copy of the message|unsent message below|forwarded message|"
    r"summary of the undelivered message"
    # Header names in lower case: the same pattern under re.IGNORECASE, and one _twin accepts.
    r")|[ \t>]*(received|return-path|dkim-signature|x-received|authentication-results|"
    r"received-spf|arc-seal):\s)",
    _I,
)
# A returned message's Message-ID/References lines, quoted or not, with continuation lines.
_RETURNED_ID_LINE = re.compile(
    r"^[ \t>]*(message-id|references)[ \t]*:[ \t]*((?:.*)(?:\n[ \t]+<.*)*)", _IM
)
# Disclaimers and antivirus stamps under a bounce: their words ("virus", "prohibited") are noise.
_DISCLAIMER = re.compile(r"^[ \t]*(_{5,}|~{5,}|-- )[ \t]*$", re.M)
# Exchange Online's directory-based edge blocking refuses addresses its directory lacks.
_EXCHANGE_DBEB = _phrases(r"5\.4\.1 .{0,80}recipient address rejected: access denied")
# Providers' own words for "no such account", as Sisimai's Rhost tables read them: they beat
# the after-DATA heuristic (Yahoo checks recipients at DATA) and vague codes. Yahoo: "This user
# doesn't have a yahoo.com account"; Symantec MessageLabs answers "542 <address> Rejected".
_PROVIDER_UNKNOWN = _phrases(
    r"(this user|recipient) (doesn'?t|does not) have an? [\w.-]+\.[a-z]+ account",
    r"^\W*(smtp;)? ?542 rejected\b",
)
# Quoted header lines of the returned message ("Subject: Virus alert") are not reasons.
_URL_FRAGMENT = re.compile(r"\b((?:https?|ftp)://[^\s#]+)#\S*", _I)
_HEADER_LINE = re.compile(r"^[ \t]*(subject|to|cc|from|sent|date)[ \t]*:.*$", _IM)
# "550 : User unknown" with the address left out: Japanese carriers' answer for a filtered
# sender (the mailbox exists); with the address filled in it is a real unknown user.
_BLANK_USER_UNKNOWN = re.compile(r"\b550:?\s+:\s*user unknown", _I)
_QUOTED_TO = re.compile(r"^[ \t>]*To[ \t]*:[ \t]*(.+)$", re.M)
# Postfix's own wording when its recipient lookup fails (local/virtual recipient table).
_RCPT_REJECTED_UNKNOWN = _phrases(r"recipient address rejected: user unknown\b")
_DATA_STAGE = re.compile(r"(>>>|in reply to|after)\s*(end of\s*)?data\b", _I)

# Reasons. Words win over codes: "552 5.2.2 mailbox full" is soft, "550 5.7.1 No such user" hard.
# A space in these phrases also matches a line break or several spaces: MTAs wrap their text.
_FULL = _phrases(
    r"quota|mailbox (is |was )?full|inbox (is )?full|full mailbox|mailbox size",
    r"mail ?folder is full",
    r"(disk|storage) (space|limit)|not enough (storage|space)|insufficient (storage|space|disk)",
    r"exceed(s|ed)? (the |its )?(storage|quota|disk|mailbox)|mailbox has exceeded|over ?quota",
    r"exdiskquota|space (limit|exhausted)|\b[45]\.2\.2\b|zu ?viele mails|buz[óo]n lleno",
    r"postfach (ist )?voll",
)
# Passing trouble: suspended, expired, too big, looping, held. Soft whatever else is said.
_TRANSIENT = _phrases(
    r"suspend|disabled|expired|loop(s|ing)?\b|hop count|too many hops",
    r"not (a )?member|locked|could not be delivered for|not delivered within|maximum[- ]time",
    r"queue too long|in the queue|moderator|held until|processing error|being processed",
    r"(delivery )?failed \d+ attempts|retry time|out of memory|command died|not collected",
    r"mail system problem",
)
# The recipient's size limit: the next, smaller message may pass. A recipient-side policy.
_SIZE = _phrases(
    r"too (large|big)|message size|size limit|message length|exceeds? (the )?(maximum )?"
    r"(message )?size",
)
# Vaguer trouble words: they make a failure soft only when no address-bad words stand beside.
_TRANSIENT_WEAK = _phrases(
    r"inactive|temporar(il)?y|time(d)? ?out|unreachable|deferr?ed|try (again )?later",
    r"(computer|host|server|destination) (was |is )?not (reachable|responding)",
    r"network (problem|error)|connection (refused|reset|dropped|timed|lost)",
    r"establish an smtp connection|(system|internal|local) error|resources",
    r"service (currently )?unavailable|\b4\.\d\.\d+\b",
)
_POLICY = _phrases(
    r"spam|\bblocked|block ?list|black ?list|blocklisted|dnsbl|\brbl\b|policy|reputation",
    r"relay(ing)? (denied|not permitted|access denied)|not permitted|denied|\bspf\b|dkim|dmarc",
    r"authenticat|\bptr\b",
    r"reverse (dns|lookup)|virus|malware|content (rejected|filter)|\bfilter|unsolicited",
    r"\bube\b|junk ?mail|rcpthosts|banned|accept attachments|\btls\b|starttls|encryption",
    r"attachments? (are |is )?not (allowed|accepted)|too many|rate limit|throttl|not allowed",
    r"prohibited|forbidden|sender (address )?(rejected|verify|verification)|domain of sender",
    r"refused due to|recipient preferences",
)
_HARD = _phrases(
    r"user(name)? (is )?unknown|unknown (user|recipient|local[- ]part|address|mailbox|alias|host)",
    r"no such (user|mailbox|recipient|person|address|account|local user|domain|host)",
    r"(mailbox|recipient|user|address|account|domain|host) (does not|doesn'?t|did not) exist",
    r"(mailbox|recipient|user|address|account|destination|host|domain|user name) (was )?not found",
    r"not (a )?(valid|known) (user|recipient|mailbox|address)|invalid (recipient|mailbox|user)",
    r"(user|recipient) not (listed|local|here|known)|(recipient|user|address)( name)? (is )?"
    r"not recognized|has moved|no longer (on|at|valid|available at)|wrong or no longer valid",
    r"mailbox (is )?unavailable|mailbox not available|not a valid mailbox|addressee unknown",
    r"host (or domain name )?unknown|domain (name )?not found|host \S+ not found|no such host",
    r"unroute?able|name or service not known|no mx|null mx|nxdomain|indicated no smtp service",
    r"domain is not reachable|bad destination|recipnotfound|not our customer|deactivated",
    r"doesn'?t have an? [\w.]+ account|does not have an account|no mailbox here|not listed in",
    r"unknown or illegal alias|no (account|user) by that name|invalid (final delivery )?userid",
    r"(user ?name|recipient)[^\n]{0,80}not unique|no matches to (the )?name ?server query",
    r"(does not|doesn't) have a (final )?(e-?mail )?delivery point|no valid recipients",
    r"account (has been )?(closed|removed|deleted)|address (is )?invalid|invalid address",
    r"did not (exactly )?match (an? )?[\w.]+ (e-?mail )?address",
    r"non-?existent (user|recipient|mailbox|address|account)",
    r"unbekannt|existiert nicht|inexistente|no existe|n'existe pas|inconnu",
)
# Refusals for the sender's standing: blocklists, IP/domain reputation, SPF/DKIM/DMARC, no PTR,
# a refused sender address. Recipient-side policy (groups for internal senders only, size or
# attachment limits, "recipient preferences") is not here.
_REPUTATION = _phrases(
    r"spamhaus|spamcop|\bsorbs\b|uceprotect|\bsurbl\b|\buribl\b|cdrbl|barracuda ?(central|rbl)",
    r"\bb\.barracudacentral|mailspike|abuseat|\bcbl\b|\bpsbl\b|sender ?score|invaluement",
    r"block ?list(ed)?|black ?list(ed)?|\bdnsbl\b|\brbl\b|blocked using",
    # Domino's "User ... not listed in Domino Directory" is an unknown user, not a blocklist.
    r"(?<=\s)(?<!not\s)listed\s(at|on|in|by)\b",
    r"\b(is|are|was|currently) (now )?listed\b|reputation|\bspf\b|\bdkim\b|\bdmarc\b",
    r"purported responsible address|\bsender ?id\b|banned sending ip|\bs3150\b",
    r"(sender|sending ip|your ip|ip address|client host|sending (mail )?server|host network|"
    r"mail from \S+) (is |has been |was )?(blocked|banned|rejected|not allowed|refused)",
    r"blocked (sender|ip)|unsolicited (mail|bulk|commercial)|\btss0[49]\b",
    r"\bptr\b|reverse (dns|lookup)|\brdns\b|not allowed to send (mail )?from",
    r"sender address rejected|domain of sender|\b5\.7\.(2[3-7])\b",
)
_REPUTATION_KIND = "reputation"  # internal: _reason's answer, reported as kind "policy"
_SENDER_SIDE = _phrases(r"sender address rejected", r"\b5\.1\.[78]\b", r"mail from .{0,40}rejected")
# A local delivery program (procmail, a pipe) failing says nothing about the address.
_LOCAL_AGENT = re.compile(r"^\s*x-unix\s*;|procmail|couldn'?t create|mailer error", _IM)
_HARD_CODE = re.compile(r"\b5\.1\.(0|1|2|3|6|10)\b|\b5\.4\.4\b|#5\.1\.1")
# Enhanced status codes (RFC 3463), not the middle of an IP address.
_STATUS = _guarded(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)", 0)

_DELAY_SUBJECT = re.compile(
    r"delay|still being retried|warning: message|not yet been delivered|"
    r"delivery (notification|status notification) \(delay\)|verzögert|retardé|retrasad",
    _I,
)
_DELAY_BODY = _guarded(
    r"no action is required|will (continue to|keep|automatically) (try|retry|attempt)|"
    r"still (being )?(re)?tr(y|ied|ying)|has not yet been delivered|not yet been delivered|"
    r"has been delayed|delivery is delayed|will be retried|delayed \d+ hours|"
    r"message (is )?delayed|this is a warning|warning message only|"
    r"will try again|retry (again )?(until|for)|attempts will continue|will continue to be made",
    _I,
)

_CHALLENGE = _guarded(
    r"boxbe|bluebottle|spam ?arrest|mailblocks|sender not pre-?approved|"
    r"server requires confirmation|verify (that )?you are (a )?(human|real person|person)|"
    r"prove (that )?you are (a )?human|confirm (that )?you are (a )?(human|real)|"
    r"please confirm your (message|e-?mail|address)|challenge[- ]response|"
    r"added to (the|my) (recipient'?s )?(allowed|approved|white) ?(list|senders)|"
    r"whitelist request|(add|added) (you|your address) to (my|the) (whitelist|white list|"
    r"approved senders)|"
    r"protected by [\w ]{0,30}(spam|anti-?spam|verification)|this account is protected by",
    _I,
)

_REPLY_PREFIX = re.compile(
    r"^\s*(re|aw|sv|vs|antw|antwort|odp|ref|rif|r|réf|res|ynt|vá|atb|tr|rv|"
    r"回复|答复|回覆|返信|答复)\s*(\[\d+\])?\s*[:：]",
    _I,
)
# "... wrote:" lines. Each of these alternatives needs one of the _WROTE words.
_ATTRIBUTION_WROTE = (
    r"^[ \t]*(-{2,}\s*)?(on|am|le|el|il|op|em|den|d\.|w dniu|dne|в|у|pada|el día|"
    r"the)\b[^\n]{0,250}?(\n[^\n]{0,250}?){0,2}"
    r"(wrote|schrieb|a écrit|escribió|ha scritto|schreef|escreveu|skrev|napisał|"
    r"написал|написала|пише|napsal|kirjoitti|írta)\s*:?[ \t]*$"
    r"|^[^\n]{0,200}(wrote|schrieb|a écrit|escribió|ha scritto|schreef|escreveu|skrev|"
    r"napisał|написал\(а\)|написал)\s*:[ \t]*$"
    r"|^[^\n]{0,200}(書きました|写道|寫道|のメッセージ)[:：]?[ \t]*$"
)
# Original-message separators and Outlook's From/Sent header blocks.
_ATTRIBUTION_OTHER = (
    r"^[ \t]*-{2,}[ \t]*(original message|ursprüngliche nachricht|originalnachricht|"
    r"message d'origine|mensaje original|messaggio originale|oorspronkelijk bericht|"
    r"mensagem original|forwarded message|ursprungligt meddelande|original meddelelse|"
    r"alkuperäinen viesti|wiadomość oryginalna|исходное сообщение|"
    r"weitergeleitete nachricht|message transféré)[ \t]*-*"
    r"|^[ \t]*_{10,}[ \t]*$"
    r"|^[ \t]*\d{4}[/.-]\d{1,2}[/.-]\d{1,2}\b[^\n]{0,120}<[^<>\s]+@[^<>\s]+>:?[ \t]*$"
    r"|^[ \t]*\*?(from|von|de|da|van|från|fra|od|от|lähettäjä|feladó)\s*:\*?[ \t]+\S[^\n]*"
    r"\n([^\n]*\n){0,3}?[ \t]*\*?(sent|gesendet|envoyé|enviado|inviato|verzonden|date|datum|"
    r"skickat|sendt|wysłano|отправлено|data|fecha|lähetetty|to|an|à|para|a|aan|til|till|"
    r"do|кому|subject|betreff|objet|asunto|oggetto|onderwerp|assunto)\s*:"
)
_ATTRIBUTION = _line_pattern(_ATTRIBUTION_WROTE + "|" + _ATTRIBUTION_OTHER, _IM)
# Without any of these words only _ATTRIBUTION_OTHER can match: searching it alone gives the
# same first match, without scanning 200-character windows from every line of a long bounce.
_WROTE_WORDS = (
    "wrote|schrieb|a écrit|escribió|ha scritto|schreef|escreveu|skrev|napisał|написал|пише|"
    "napsal|kirjoitti|írta|書きました|写道|寫道|のメッセージ"
)
_WROTE = _guarded(_WROTE_WORDS, _I)
# On ASCII text only the ASCII words can match (no other character folds to ASCII: _WROTE has
# a _twin), and plain lower-case words match exactly where the lower-cased text contains them.
_WROTE_ASCII = tuple(w for w in _WROTE_WORDS.split("|") if w.isascii())
assert all(re.fullmatch("[a-z ]+", w) for w in _WROTE_ASCII)
_ATTRIBUTION_NO_WROTE = _line_pattern(_ATTRIBUTION_OTHER, _IM)
_QUOTED_LINE = re.compile(r"^[ \t]*[>|]")

_OOO_SUBJECT_START = re.compile(
    r"^\s*(\[?(out of (the )?office|ooo|automatic reply|auto(matic)?[- ]?reply|autoreply|"
    r"auto(matic)?[- ]?response|autorespon\w*|auto:(?=\s)|away|vacation|on vacation|on holiday|"
    r"on leave|abwesen\w*|automatische antwort|nicht im büro|außer haus|ausser haus|urlaub|"
    r"réponse automatique|absence|absent\w*|message d'absence|en congés?|"
    r"respuesta automática|respuesta automatica|fuera de (la )?oficina|ausente|ausencia|"
    r"de vacaciones|risposta automatica|fuori (ufficio|sede)|assente|in ferie|"
    r"automatisch antwoord|afwezig\w*|niet aanwezig|buiten kantoor|"
    r"resposta automática|resposta automatica|fora do escritório|ausência|férias|"
    r"automatyczna odpowied\w*|automatiskt svar|automatisk svar|frånvaro|fravær|"
    r"automaattinen vastaus|automatická odpověď|automatiska atbilde|"
    r"[\w ]{0,40}automatiska atbilde|atvaļinājums|atvalinajums|自動応答|自动回复|不在)"
    r"(?:\b|(?<=:))\]?)",
    _I,
)
_OOO_SUBJECT_ANY = _guarded(
    r"\(automatic (response|reply)\)|\bout of (the )?office\b|\bautomatic reply\b|"
    r"\bauto[- ]?reply\b|\bautoreply\b|\bautorespons\w*|abwesenheitsnotiz|"
    r"automatische antwort|réponse automatique|respuesta automática|risposta automatica|"
    r"automatisch antwoord|resposta automática|automatyczna odpowied|"
    r"is out of the office|\bOOO\b|fuori ufficio|au(ß|ss)er haus|hors du bureau|"
    r"fuera de la oficina|buiten kantoor|fora do escritório",
    _I,
)
# Return announcements: enough for the kind once other evidence proved a robot sent it.
_OOO_RETURN = _guarded(
    r"\b(i will be back|i'll be back|back in the office|returning (to the office )?on)\b"
    r"|\b(wieder im büro|wieder erreichbar|zurück im büro)\b"
    r"|\b(serai de retour|de retour (le|au bureau))\b"
    r"|\b(volveré|regresaré|estaré de vuelta)\b"
    r"|\b(rientrerò|tornerò|sarò di nuovo in ufficio)"
    r"|\b(weer op kantoor|weer aanwezig|ben (weer )?terug op)\b"
    r"|\b(retorno em|voltarei|estarei de volta|regresso a)\b",
    _I,
)
_OOO_TEXT = _guarded(
    r"\b(i am|i'm|i will be|i'll be|i shall be|currently)\s+(currently\s+)?"
    r"(out of (the )?office|away|on (annual |parental |maternity |sick )?(leave|vacation|"
    r"holiday|holidays|business travel|a business trip)|traveling|travelling|"
    r"out of the country|on pto|off work)\b"
    r"|\b(out of (the )?office|away from (the |my )?(office|desk|e-?mail))\b[^.\n]{0,80}"
    r"\b(until|till|through|returning|return|back)\b"
    r"|\b(with|have) (limited|no|restricted) (access to (my )?e-?mail|e-?mail access)"
    r"|this is an? (automatic(ally generated)?|automated|auto(-)?generated) "
    r"(reply|response|message|notification|e-?mail)"
    r"|\bautomatic (reply|response)\b|\bauto[- ]?reply\b"
    r"|\b(ich bin|bin ich)\b[^.\n]{0,60}\b(nicht im büro|abwesend|im urlaub|außer haus|"
    r"ausser haus|nicht erreichbar|nicht im haus)"
    r"|\b(abwesenheitsnotiz|automatische antwort)\b"
    r"|\bje (suis|serai) (actuellement )?(absente?|en congés?|en vacances|hors du bureau)"
    r"|\bréponse automatique\b"
    r"|\b(estoy|estaré) (fuera de (la )?oficina|ausente|de vacaciones)"
    r"|\brespuesta automática\b"
    r"|\bsono (attualmente )?(fuori (ufficio|sede)|assente|in ferie)|\brisposta automatica\b"
    r"|\bik ben (momenteel |tot )?[^.\n]{0,30}(afwezig|niet aanwezig|op vakantie|"
    r"niet op kantoor)|\bautomatisch antwoord\b"
    r"|\b(estou|estarei) (ausente|fora do escritório|de férias)|\bresposta automática\b"
    r"|\bout of (the )?office\b",
    _I,
)
# Autoresponder subjects that are not absences ("Thank you for your e-mail").
_AUTO_SUBJECT = re.compile(
    r"^\s*((thank you|thanks) for (your|contacting)|we (have )?received your|"
    r"(your )?(request|ticket|message) (has been )?received|merci pour votre|"
    r"vielen dank für ihre|gracias por su)",
    _I,
)
_LEFT_COMPANY = _guarded(
    r"\bno longer (with|at|employed|working|works|part of|in use|monitored|active|valid|"
    r"being monitored|available|in service)\b"
    r"|\b(has|have) left (the|our) (company|organi[sz]ation|firm|business|team)"
    r"|\b(has|have) left\b[^.\n]{0,40}\b(company|organi[sz]ation|firm)"
    r"|\bis no longer\b[^.\n]{0,40}\b(employed|with|at|part of|working)"
    r"|\b(mailbox|address|inbox|account) (is|has been) (closed|deactivated|retired|"
    r"discontinued|no longer)"
    r"|nicht mehr (im unternehmen|bei|für|in unserem unternehmen|tätig|erreichbar|aktiv)"
    r"|hat das unternehmen verlassen|ist aus dem unternehmen ausgeschieden"
    r"|ne fait plus partie|a quitté (la société|l'entreprise)|n'est plus (en poste|chez)"
    r"|ya no (trabaja|forma parte|está en)|ha dejado la empresa"
    r"|non (fa più parte|lavora più)|ha lasciato (la società|l'azienda)"
    r"|niet meer (werkzaam|in dienst|actief)|heeft .{0,20}verlaten"
    r"|não (faz mais parte|trabalha mais)|deixou a empresa",
    _I,
)
_ADDRESS_IN_TEXT = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_UNSUBSCRIBE = _guarded(
    r"\bunsubscribe\b|\bremove me\b|\bremove (my|this) (e-?mail|address|name|contact)"
    r"|\btake me off\b|\bstop (e-?mailing|emailing|sending|contacting|writing to) me"
    r"|\bplease,? stop\b(?!\s+by)|\bdo not (e-?mail|contact|write to) me\b"
    r"|\bdon'?t (e-?mail|contact|write to) me\b|\bnot interested\b[^\n]{0,60}\bremove"
    r"|\bopt(-| )?out\b|\bno more (e-?mails|messages)\b"
    r"|\babmelden\b|\babbestellen\b|\btragen sie mich\b[^\n]{0,40}\baus\b"
    r"|\bkeine (weiteren )?(e-?mails|mails|nachrichten|werbung) mehr"
    r"|\b(löschen|entfernen) sie (mich|meine)|\baus (ihrem|dem) verteiler"
    r"|d[ée]sabonner|d[ée]sinscri|d[ée]sabonnement|ne (plus|pas) recevoir|"
    r"\bretirez[- ]moi|\bsupprimez[- ]moi|ne m'envoyez plus|arr[êe]tez de m'envoyer"
    r"|darme de baja|dar(me)? de baja|no me (envíe|envie|envíen|envien|mande|manden)\w* más"
    r"|no quiero recibir más|elim[ií]n(en|e)me|quit(en|e)me de|b[óo]rr(en|e)me"
    r"|\bcancellami\b|\bcancellatemi\b|disiscriv|non (inviatemi|mandatemi) più"
    r"|\brimuovetemi\b|\brimuovimi\b"
    r"|\bafmelden\b|\buitschrijven\b|\bverwijder (mij|me)\b|geen e-?mails? meer"
    r"|descadastr|não quero receber mais|cancelar (minha )?inscrição|\bremova[- ]me\b"
    # Second phrasings per language (tests/mail/unsub-*-*.eml).
    r"|\bretir(er|ez) (mon adresse|mon e-?mail|mes coordonnées)|ne m'(é|e)crivez plus"
    r"|ne me (contactez|sollicitez|(é|e)crivez) plus"
    r"|\bdej(en|e|ad) de (escribirme|enviarme|contactarme|mandarme)"
    r"|\bnon (scrivetemi|contattatemi|inviatemi|mandatemi|scrivermi) più"
    r"|\brimuover\w* (il mio indirizzo|la mia (e-?)?mail|il mio contatto)"
    r"|\b(mij|me) niet meer (te )?(mailen|e-?mailen|benaderen|contacteren)\b|\bhaal (mij|me) van\b"
    r"|\bremov(am|a|er|erem) (o )?meu (e-?mail|endereço|contato|contacto)"
    r"|\bdeix(em|e|ar) de me (enviar|mandar|contactar|contatar|escrever)"
    r"|\bkontaktieren sie mich nicht mehr|\b(tragen sie mich|mich) aus (ihrer|der) liste",
    _I,
)
# A removal phrase that is negated close before it ("don't stop emailing me", "no need to
# remove me", "ne me désabonnez pas") or asked and answered no ("Unsubscribe me? No, ...").
_NEGATION = re.compile(
    r"\b(don'?t|do not|does not|doesn'?t|no need to|never|not|nicht|nie|kein\w*|ne|non|niet|"
    r"geen|não|nao|no)\b",
    _I,
)
_CLAUSE_END = re.compile(r"[,.;:!?\n()\u2013\u2014]| - ")
_ANSWER_NO = re.compile(r"\s*(no|nope|nein|non|nee|não|nao)\b", _I)

_FEEDBACK_SUBJECT = re.compile(r"complaint|feedback loop|abuse report", _I)
_UNSUBSCRIBE_SUBJECT = re.compile(
    r"\s*((re|aw|sv|antw|r)\s*:\s*)?(unsubscribe|remove( me)?|stop|abmelden|désabonner|"
    r"desabonner|baja|cancellami|afmelden|descadastrar)[\s.!]*",
    _I,
)
_FOOTER_LINE = re.compile(
    r"https?://|www\.|click|klicken|cliquez|haga clic|\blink\b|preferences", _I
)
_CAL_METHOD = re.compile(r"^METHOD:\s*REPLY\s*$", _IM)
_CAL_PARTSTAT = re.compile(r"PARTSTAT=\"?([A-Z-]+)", _I)

# Return dates.
_MONTHS: dict[str, int] = {}
for _num, _names in enumerate(
    (
        "january jan januar jänner janvier enero gennaio januari janeiro",
        "february feb februar février fevrier febrero febbraio februari fevereiro",
        "march mar märz maerz mars marzo maart março marco",
        "april apr avril abril aprile",
        "may mai mayo maggio mei maio",
        "june jun juni juin junio giugno junho",
        "july jul juli juillet julio luglio julho",
        "august aug août aout agosto augustus",
        "september sep sept septembre septiembre settembre setembro",
        "october oct oktober octobre octubre ottobre oktober outubro okt",
        "november nov novembre noviembre novembro",
        "december dec dezember décembre decembre diciembre dicembre dezembro dez",
    ),
    start=1,
):
    for _name in _names.split():
        _MONTHS[_name] = _num
_MONTH_RE = "|".join(sorted(_MONTHS, key=len, reverse=True))
_WEEKDAYS: dict[str, int] = {}
for _num, _names in enumerate(
    (
        "monday mon montag lundi lunes lunedì lunedi maandag segunda",
        "tuesday tue tues dienstag mardi martes martedì martedi dinsdag terça terca",
        "wednesday wed mittwoch mercredi miércoles miercoles mercoledì mercoledi woensdag quarta",
        "thursday thu thurs donnerstag jeudi jueves giovedì giovedi donderdag quinta",
        "friday fri freitag vendredi viernes venerdì venerdi vrijdag sexta",
        "saturday sat samstag samedi sábado sabado sabato zaterdag",
        "sunday sun sonntag dimanche domingo domenica zondag",
    )
):
    for _name in _names.split():
        _WEEKDAYS[_name] = _num
_WEEKDAY_RE = "|".join(sorted(_WEEKDAYS, key=len, reverse=True))
_RETURN_KEY = re.compile(
    r"\b(back|return|returning|returns|until|till|through|ab dem|ab|zurück|wieder|bis|"
    r"retour|jusqu'au|jusqu’au|hasta el|hasta|regreso|regresaré|vuelvo|volveré|rientro|"
    r"rientrerò|fino al|tornerò|terug|tot en met|tot|vanaf|até|retorno|regresso|voltarei|"
    r"de volta)\b",
    _I,
)
_DATE_ISO = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_DATE_NUM = re.compile(r"\b(\d{1,2})([./-])(\d{1,2})(?:\2(\d{4}|\d{2}))?(?!\d)")
_DATE_DMY = re.compile(
    rf"\b(\d{{1,2}})(?:st|nd|rd|th|er|º|\.)?\s+(?:de\s+)?({_MONTH_RE})\b\.?"
    rf"(?:,?\s+(?:de\s+)?(\d{{4}}))?",
    _I,
)
_DATE_MDY = re.compile(
    rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(\d{{4}}))?", _I
)
_DATE_WEEKDAY = re.compile(rf"\b({_WEEKDAY_RE})\b", _I)
_SOON = timedelta(days=42)

_HTML_DROP = re.compile(r"<(style|script|head)\b.*?</\1\s*>", _I | re.S)
_HTML_QUOTE = re.compile(
    r"<blockquote\b|<div[^>]+(gmail_quote|divRplyFwdMsg|OutlookMessageHeader|"
    r"yahoo_quoted|moz-cite-prefix)|<hr\b[^>]*>\s*(<[^>]+>\s*)*(<b>)?\s*(from|von|de)\s*:",
    _I,
)
_HTML_BREAK = re.compile(r"<\s*(br|/p|/div|/tr|/li|/h\d|p|div|tr|li)\b[^>]*>", _I)
_HTML_TAG = re.compile(r"<[^>]*>")

_SES_TYPE = re.compile(r'^\s*\{\s*"notificationType"\s*:\s*"(Bounce|Complaint|Delivery)"')
_SES_RECIPIENT = re.compile(r'\{[^{}]*"emailAddress"\s*:\s*"[^"]+"[^{}]*\}')
_SES_COMPLAINED = re.compile(r'"complainedRecipients"\s*:\s*\[(.*?)\]', re.S)

# Budgets against hostile mail: parts walked, characters read per part.
_MAX_PARTS = 200
_MAX_TEXT = 256_000
# message/* parts whose payload compat32 splits into header blocks: leaves, not attachments.
_REPORT_PARTS = frozenset(
    {
        "message/delivery-status",
        "message/global-delivery-status",
        "message/feedback-report",
        "message/disposition-notification",
    }
)

# Case-sensitive twins of the patterns searched in bounce text (see _Folded): each answers the
# same on lower-cased ASCII text, about 2-3x faster.
for _pattern in (
    _ADDR,
    _URL_FRAGMENT,
    _HEADER_LINE,
    _EXCHANGE_DBEB,
    _PROVIDER_UNKNOWN,
    _RCPT_REJECTED_UNKNOWN,
    _BLANK_USER_UNKNOWN,
    _DATA_STAGE,
    _FULL,
    _TRANSIENT,
    _SIZE,
    _TRANSIENT_WEAK,
    _POLICY,
    _HARD,
    _REPUTATION,
    _SENDER_SIDE,
    _LOCAL_AGENT,
    _BOUNCE_BODY,
    _DELAY_BODY,
    _CHALLENGE,
    _WROTE,
    _ATTRIBUTION,
    _ATTRIBUTION_NO_WROTE,
    _ORIGINAL_START,
    _RETURNED_ID_LINE,
):
    _twin(_pattern)


# ---------------------------------------------------------------------------------------------
# Parsing: everything the rules look at, computed once and defensively.


@dataclass
class _Rcpt:
    """One per-recipient block of a delivery-status report."""

    address: str
    action: str
    status: str
    diagnostic: str


@dataclass
class _Mail:
    msg: Message
    subject: str
    from_address: str | None
    from_display: str
    sent: date | None
    text: str  # the readable body of this message (quoted parts kept)
    new_text: str  # `text` without quoted replies: what the sender wrote now
    report_text: str  # bounce explanation: text parts before the returned copy
    all_text: str  # every text part, returned copies included
    report_type: str
    dsn: list[_Rcpt]
    original_headers: list[Message]
    calendar: str
    reply_relation: bool
    feedback_reports: list[Message]  # message/feedback-report leaves, in walk order
    headers: dict[str, str] = field(default_factory=dict)  # decoded once per name

    def header(self, name: str) -> str:
        key = name.lower()
        if key not in self.headers:
            self.headers[key] = _header(self.msg, name)
        return self.headers[key]


@dataclass(frozen=True)
class _Hit:
    """What a rule decided; `also` names the refinements that shaped kind/hard/date."""

    verdict: Verdict
    kind: str | None = None
    hard: bool | None = None
    recipients: tuple[str, ...] = ()
    return_date: date | None = None
    alternatives: tuple[str, ...] = ()
    reputation: bool = False
    also: tuple[str, ...] = ()
    name: str | None = None  # overrides the rule's name when one rule has two outcomes


def _classify(raw: bytes) -> Classification:
    raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").lstrip(b" \t\n")
    msg = message_from_bytes(raw)
    if not msg.keys():  # no header at all: not a message
        return Classification(Verdict.OTHER, rules=("unparseable",))
    mail = _parse(msg)
    own = _first_msgid(mail.header("Message-ID"))
    for name, rule in _RULES:
        hit = rule(mail)
        if hit is None:
            continue
        related = _msgids(mail.header("In-Reply-To")) + _msgids(mail.header("References"))
        name = hit.name or name
        if hit.verdict is Verdict.BOUNCE or name in {"dsn_success", "arf_complaint"}:
            related += _returned_ids(mail)
        return Classification(
            verdict=hit.verdict,
            kind=hit.kind,
            hard=hit.hard,
            recipients=hit.recipients,
            return_date=hit.return_date,
            alternatives=hit.alternatives,
            reputation=hit.reputation,
            rules=(name, *hit.also),
            message_id=own,
            from_address=mail.from_address,
            subject=mail.subject,
            related_message_ids=tuple(i for i in dict.fromkeys(related) if i != own),
        )
    raise AssertionError("the rule table ends with a catch-all")  # pragma: no cover


def _header(msg: Message, name: str) -> str:
    """Decoded, unfolded header value, or "" (RFC 2047 words and raw 8-bit both tolerated)."""
    try:
        value = msg.get(name)
    except Exception:
        return ""
    if value is None:
        return ""
    if isinstance(value, str) and value.isascii() and "=?" not in value:
        # No encoded word: decode_header returns the value as one us-ascii chunk and
        # make_header gives it back unchanged; skip both (most headers, several per message).
        return " ".join(value.split())
    try:
        text = str(make_header(decode_header(value)))
    except Exception:
        text = str(value)
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return " ".join(text.split())


# A From value parseaddr reads as written: plain words, then an address of plain characters
# in angle brackets, or that address alone. Most mail; _from_address skips parseaddr for it.
_PLAIN_ADDR = r"[A-Za-z0-9._%+=-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
_PLAIN_FROM = re.compile(
    rf"(?:([^\s()<>@,:;\"\[\]\\]+(?: [^\s()<>@,:;\"\[\]\\]+)*) ?)?<({_PLAIN_ADDR})>|({_PLAIN_ADDR})"
)


def _from_address(raw: str) -> tuple[str | None, str]:
    """(lower-cased bare address or None, display name) of a decoded From value."""
    if not raw:
        return None, ""
    plain = _PLAIN_FROM.fullmatch(raw)
    if plain:
        return (plain[2] or plain[3]).lower(), plain[1] or ""
    try:
        name, addr = parseaddr(raw)
    except Exception:
        return None, raw
    addr = addr.strip().strip("<>").lower()
    return (addr if "@" in addr else None), name


def _first_msgid(value: str) -> str | None:
    ids = _MSGID.findall(value)
    return ids[0] if ids else None


def _msgids(value: str) -> tuple[str, ...]:
    return tuple(_MSGID.findall(value))


def _payload_text(part: Message) -> str:
    """Decoded text of a leaf part; unknown charsets and broken encodings degrade, not fail."""
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if not isinstance(data, bytes):
        payload = part.get_payload()
        return payload[:_MAX_TEXT] if isinstance(payload, str) else ""
    data = data[:_MAX_TEXT]
    try:
        return data.decode(charset(part) or "utf-8", "replace")
    except (LookupError, ValueError):
        return data.decode("utf-8", "replace")


def _html_to_text(markup: str, *, cut_quotes: bool) -> str:
    """Readable text of HTML-only mail; `cut_quotes` drops everything from the quoted reply on."""
    markup = _HTML_DROP.sub("", markup)
    if cut_quotes:
        quote = _HTML_QUOTE.search(markup)
        if quote:
            markup = markup[: quote.start()]
    text = _HTML_TAG.sub("", _HTML_BREAK.sub("\n", markup))
    return html.unescape(text).replace("\xa0", " ")


def _walk(msg: Message) -> Iterator[tuple[Message, bool, str]]:
    """Leaf parts with a flag telling whether they sit inside an attached message, and their
    content type (read once: the stdlib searches the headers on every call).

    Iterative with a part budget, so hostile nesting cannot exhaust the stack or the clock.
    """
    stack: list[tuple[Message, bool]] = [(msg, False)]
    seen = 0
    while stack and seen < _MAX_PARTS:
        part, nested = stack.pop()
        seen += 1
        ctype = part.get_content_type()
        # is_multipart() first: get_payload() of a leaf looks up its transfer encoding.
        if part.is_multipart() and ctype not in _REPORT_PARTS:
            inner = nested or ctype.split("/")[0] == "message"
            payload = part.get_payload()  # a list, as is_multipart() said
            stack.extend((p, inner) for p in reversed(list(payload)) if isinstance(p, Message))
        else:
            yield part, nested, ctype


def _parse(msg: Message) -> _Mail:
    headers: dict[str, str] = {}  # decoded once per name, shared with _Mail.header

    def header(name: str) -> str:
        key = name.lower()
        if key not in headers:
            headers[key] = _header(msg, name)
        return headers[key]

    from_address, from_display = _from_address(header("From"))
    sent: date | None = None
    try:
        sent = parsedate_to_datetime(header("Date")).date()
    except Exception:
        sent = None
    plain: list[str] = []
    html_parts: list[str] = []
    report: list[str] = []
    every: list[str] = []
    calendar = ""
    dsn: list[_Rcpt] = []
    originals: list[Message] = []
    feedback: list[Message] = []
    for part, nested, ctype in _walk(msg):
        if ctype == "message/feedback-report":
            feedback.append(part)
        maintype = ctype.split("/")[0]
        if ctype in {"message/delivery-status", "message/global-delivery-status"}:
            dsn.extend(_dsn_blocks(part))
            continue
        if ctype in {"text/rfc822-headers", "message/rfc822-headers"}:
            originals.append(_header_block(_payload_text(part)))
            every.append(_payload_text(part))
            continue
        if maintype == "multipart":
            ctype = "text/plain"  # a multipart without a usable boundary: read it as text
        elif maintype != "text" and ctype != "message/rfc822":
            if ctype in {"application/ics"}:
                calendar += _payload_text(part)
            continue
        body = _payload_text(part)
        every.append(body)
        if ctype == "text/calendar":
            calendar += body
            continue
        if nested:
            continue
        if ctype == "text/html":
            html_parts.append(body)
        elif ctype == "text/plain" or ctype.startswith("text/"):
            plain.append(body)
    for part in _attached_messages(msg):
        originals.append(part)
    text = "\n".join(plain) if plain else _html_to_text("\n".join(html_parts), cut_quotes=False)
    if plain:
        new_text = _strip_quotes("\n".join(plain))
    else:
        new_text = _strip_quotes(_html_to_text("\n".join(html_parts), cut_quotes=True))
    for body in plain or [text]:
        body = body[: _line_start(_ORIGINAL_START, body)]
        cut = _DISCLAIMER.search(body)
        report.append(body[: cut.start()] if cut else body)
    subject = header("Subject")
    reply_relation = bool(
        header("In-Reply-To")
        or header("References")
        or _REPLY_PREFIX.match(subject)
        or new_text.strip() != text.strip()
    )
    return _Mail(
        msg=msg,
        subject=subject,
        from_address=from_address,
        from_display=from_display,
        sent=sent,
        text=text,
        new_text=new_text,
        report_text="\n".join(report),
        all_text="\n".join(every),
        report_type=(_safe_param(msg, "report-type") or "").lower(),
        dsn=dsn,
        original_headers=originals,
        calendar=calendar,
        reply_relation=reply_relation,
        feedback_reports=feedback,
        headers=headers,
    )


def _line_start(pattern: re.Pattern[str], text: str) -> int:
    """Where `pattern` (starting with a literal newline) first matches at a line start of
    `text`, as "^" with re.MULTILINE would; len(text) when it does not."""
    twin = _TWINS.get(pattern)
    if twin is not None and text.isascii():  # see _Folded
        found = twin.search("\n" + text.lower())
    else:
        found = pattern.search("\n" + text)
    return found.start() if found else len(text)


def _safe_param(msg: Message, name: str) -> str | None:
    try:
        value = param(msg, name)
    except Exception:
        return None
    return value if isinstance(value, str) else None


def _attached_messages(msg: Message) -> Iterator[Message]:
    """The messages attached as message/rfc822, for their Message-ID and recipients."""
    stack = [msg]
    seen = 0
    while stack and seen < _MAX_PARTS:
        part = stack.pop()
        seen += 1
        if not part.is_multipart():
            continue
        payload = part.get_payload()
        if part.get_content_type() == "message/rfc822":
            yield from (p for p in payload if isinstance(p, Message))
            continue
        stack.extend(p for p in payload if isinstance(p, Message))


def _header_block(text: str) -> Message:
    """A text/rfc822-headers part as a Message, for its Message-ID and To."""
    try:
        return message_from_string(text.lstrip(), headersonly=True)
    except Exception:
        return Message()


def _dsn_fields(block: str) -> dict[str, str]:
    """One DSN field block parsed by hand, for reports compat32 did not split into parts."""
    fields: dict[str, str] = {}
    last = ""
    for line in block.splitlines():
        if line[:1] in {" ", "\t"} and last:
            fields[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if sep and name.strip() and " " not in name.strip():
            last = name.strip().lower()
            fields.setdefault(last, value.strip())
    return fields


def _dsn_blocks(part: Message) -> list[_Rcpt]:
    """Per-recipient fields of a message/delivery-status part (RFC 3464 section 2.3)."""
    payload = part.get_payload()
    blocks: list[dict[str, str]] = []
    if isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                blocks.append({k.lower(): " ".join(str(v).split()) for k, v in sub.items()})
                # A body under a block means blank lines split it oddly: parse that too.
                inner = sub.get_payload()
                if isinstance(inner, str) and inner.strip():
                    blocks.extend(_dsn_fields(b) for b in re.split(r"\n\s*\n", inner))
    else:
        text = _payload_text(part)
        blocks = [_dsn_fields(b) for b in re.split(r"\n\s*\n", text)]
    rcpts: list[_Rcpt] = []
    for fields in blocks:
        if not ({"final-recipient", "original-recipient", "action"} & fields.keys()):
            continue
        address = ""
        for key in ("original-recipient", "final-recipient", "x-actual-recipient"):
            candidate = _bare_address(fields.get(key, "").rpartition(";")[2], loose=True)
            if candidate:
                address = candidate
                break
        rcpts.append(
            _Rcpt(
                address=address,
                action=fields.get("action", "").lower().split(" ")[0]
                if fields.get("action")
                else "",
                status=fields.get("status", ""),
                diagnostic=fields.get("diagnostic-code", ""),
            )
        )
    return rcpts


def _bare_address(value: str, *, loose: bool = False) -> str:
    """Lower-cased addr-spec from a field or phrase; "" when there is none.

    `loose` keeps odd but exact addresses from DSN fields ("recipient@#example.net"): they
    are what we sent to, so the caller can still match them.
    """
    value = value.strip().strip("<>").strip().strip('"').lower()
    if _ADDR_ONLY.match(value) or (loose and _ADDR_LOOSE.match(value)):
        return value
    found = _ADDR.findall(value)
    return found[-1].lower() if found else ""


def _strip_quotes(text: str) -> str:
    """The new text of a reply: what precedes the first attribution or original-message
    marker, without quoted lines ("> ", or "| " as some clients quote)."""
    if text.isascii() and _WROTE in _TWINS:  # see _WROTE_ASCII
        lowered = text.lower()
        wrote = any(word in lowered for word in _WROTE_ASCII)
    else:
        wrote = bool(_WROTE.search(text))
    attribution = _ATTRIBUTION if wrote else _ATTRIBUTION_NO_WROTE
    text = text[: _line_start(attribution, text)]
    if ">" not in text and "|" not in text:  # no line can be quoted: skip the per-line test
        return "\n".join(text.splitlines())
    return "\n".join(ln for ln in text.splitlines() if not _QUOTED_LINE.match(ln))


def _returned_ids(mail: _Mail) -> tuple[str, ...]:
    """Message-ID and References of the message a report returns or complains about."""
    ids: list[str] = []
    for original in mail.original_headers:
        ids += _msgids(_header(original, "Message-ID"))
        ids += _msgids(_header(original, "References"))
    text = mail.all_text
    twin = _TWINS.get(_RETURNED_ID_LINE)
    if twin is not None and text.isascii():  # same spans in the lower-cased copy (_Folded)
        matches = twin.finditer(text.lower())
    else:
        matches = _RETURNED_ID_LINE.finditer(text)
    for match in matches:
        start, end = match.span(2)
        ids += _msgids(text[start:end])  # Message-IDs keep their case: the original text
    own = _first_msgid(mail.header("Message-ID"))
    return tuple(i for i in dict.fromkeys(ids) if i != own)


# ---------------------------------------------------------------------------------------------
# Bounce reasons and recipients.


@functools.lru_cache(maxsize=64)  # pure; bounces repeat one explanation per recipient
def _reason(diagnostic: str, explanation: str, status: str) -> tuple[str, bool]:
    """(kind, hard) for one failure: words decide, status codes only when words are silent.

    The remote server's own words (Diagnostic-Code) are the reason when present; the
    human-readable explanation stands in when they are missing. Anything that could pass with
    time or a different message (full, blocked, too big, suspended, expired, refused after
    DATA) is soft even beside an "unknown user": a false hard bounce burns a good address for
    ever, a false soft one costs one more attempt.
    """
    if diagnostic.isascii() and explanation.isascii() and status.isascii():
        # Case-insensitive patterns answer the same on lower-cased ASCII text, and _Folded
        # then runs their faster case-sensitive twins.
        diagnostic, explanation, status = diagnostic.lower(), explanation.lower(), status.lower()
    diagnostic, explanation = _words_only(diagnostic), _words_only(explanation)
    text = (diagnostic if diagnostic.strip() else explanation) + " " + status
    found = _Folded(text).search
    codes = [m.group(0) for m in _STATUS.finditer(status + " " + text)]
    hard_code = bool(_HARD_CODE.search(" ".join(codes)))
    if _Folded(diagnostic + "\n" + explanation).search(_FULL) or any(c[2:] == "2.2" for c in codes):
        return "mailbox_full", False
    if found(_REPUTATION) and not found(_EXCHANGE_DBEB):
        return _REPUTATION_KIND, False  # reported as kind "policy" with reputation=True
    if found(_SIZE) and not found(_TRANSIENT):
        return "policy", False
    if found(_TRANSIENT) or found(_LOCAL_AGENT) or status.strip().startswith("4"):
        return "other", False
    hard_words = found(_HARD)
    if not (hard_words or hard_code) and found(_TRANSIENT_WEAK):
        return "other", False
    if found(_EXCHANGE_DBEB) or _Folded(diagnostic).search(_PROVIDER_UNKNOWN):
        return "user_unknown", True
    # Policy words in free text beside an explicit 5.1.x status are usually a disclaimer.
    policy = (diagnostic.strip() or not hard_code) and found(_POLICY)
    if policy or found(_SENDER_SIDE) or found(_BLANK_USER_UNKNOWN):
        return "policy", False
    everything = f"{status} {diagnostic}\n{explanation}"
    if _Folded(everything).search(_DATA_STAGE) and not _HARD_CODE.search(everything):
        return "policy", False  # accepted at RCPT, refused after DATA: a filter, not the address
    # "Recipient address rejected: User unknown" is Postfix's recipient-table lookup failing at
    # RCPT TO: the address is bad whatever code a site configured ("550 5.2.1", Sisimai's
    # userunknown for lhost-dragonfly-09.eml). Sendmail-style "5.2.1 <a>... User Unknown"
    # stays soft: Sisimai calls that one filtered (lhost-postfix-02.eml, lhost-exim-02.eml).
    if found(_RCPT_REJECTED_UNKNOWN):
        return "user_unknown", True
    # Mailbox disabled (X.2.x) or content (X.6.x) codes contradict "unknown user"; a policy
    # code (X.7.x) only counts when the words are silent ("550 5.7.1 No such user" is hard).
    if any(c[2] in "26" or (c[2] == "7" and not hard_words) for c in codes):
        return ("other" if any(c[2] == "2" for c in codes) else "policy"), False
    if hard_words or hard_code:
        return "user_unknown", True
    return "other", False


_STATUS_CODE = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


def smtp_refusal(code: int, text: str) -> BounceKind:
    """What a permanent SMTP refusal (`550 5.1.1 ... User unknown`) means, by the rules
    `classify` applies to the same words in a bounce report."""
    status = _STATUS_CODE.search(text)
    kind, hard = _reason(f"{code} {text}", "", status.group(1) if status else str(code))
    if hard:
        return BounceKind.USER_UNKNOWN
    return BounceKind(kind) if kind in BounceKind.__members__.values() else BounceKind.OTHER


def _words_only(text: str) -> str:
    """Reason text without links, addresses and quoted header lines: names, not words.

    A link's #fragment is not a reason: DragonFly's "User unknown. See https://.../#filtered"
    (lhost-dragonfly-09.eml) must not read as a content filter. The rest of a link may be
    one: GoDaddy's whole reason is "553 http://www.spamhaus.org/query/bl?ip=..."
    (rhost-godaddy-02.eml), so it stays.
    """
    fragment, header = _URL_FRAGMENT, _HEADER_LINE
    lowered = text.isascii() and text == text.lower()  # by _reason: the twins agree
    if lowered:
        fragment, header = (_TWINS.get(p, p) for p in (fragment, header))
    # Each pattern needs a literal "#", "@" or ":": without one, its sub changes nothing.
    if "#" in text:
        text = fragment.sub(r"\1 ", text)
    if "@" in text:
        text = _drop_addresses(text) if lowered else _ADDR.sub(" ", text)
    return header.sub("", text) if ":" in text else text


_ADDR_LOCAL = string.ascii_lowercase + string.digits + "_.!#$%&'*+/=?^`{|}~-"
_ADDR_DOMAIN = re.compile(r"[\w-]+(?:\.[\w-]+)*\.[a-z]+\b")  # _ADDR after its "@"


def _drop_addresses(text: str) -> str:
    """`_ADDR.sub(" ", text)` for lower-cased ASCII text, found from each "@" outwards.

    The regex tries every position of every word for a local part that ends in "@"; here
    a match starts where the run of local-part characters before an "@" does (no earlier
    than the previous match's end), and ends where _ADDR_DOMAIN's match after it does.
    """
    pieces: list[str] = []
    done = floor = 0  # end of the last match; first position after the last "@" seen
    at = text.find("@")
    while at >= 0:
        start = max(done, floor)
        local = start + len(text[start:at].rstrip(_ADDR_LOCAL))
        domain = _ADDR_DOMAIN.match(text, at + 1) if local < at else None
        if domain is not None:
            pieces += (text[done:local], " ")
            done = domain.end()
        floor = at + 1  # a local part never reaches back past an "@": scan each stretch once
        at = text.find("@", floor)
    pieces.append(text[done:])
    return "".join(pieces)


def _flufl(msg: Message) -> tuple[set[str], set[str]]:
    """(temporary, permanent) failed addresses per flufl.bounce; its detectors can raise."""
    try:
        temporary, permanent = all_failures(msg)
    except Exception:
        return set(), set()

    def clean(found: frozenset[bytes]) -> set[str]:
        out: set[str] = set()
        for item in found:
            address = _bare_address(item.decode("utf-8", "replace")) if len(item) < 320 else ""
            if address:
                out.add(address)
        return out

    return clean(temporary), clean(permanent)


_A = r"([^<>\s@()\[\],;:\"'|]+@[\w-]+(?:\.[\w-]+)+)"
_TEXT_RCPT = (
    # "<addr>:" (Postfix, qmail), ">>> addr" (sendmail), "addr (reason)", "addr on <date>"
    re.compile(rf"^[ \t>]*<{_A}>", re.M),
    re.compile(rf"^[ \t]*(?:>>>|\*)?[ \t]*{_A}[ \t]*(?:[:(\[<]|\.\.\.|\bon\b|$)", re.M),
    re.compile(
        # Lower case: the same under re.IGNORECASE, and _twin accepts it.
        r"(?:rcpt to|recipient|original-recipient|final-recipient|addressed to|error-for|"
        r"delivering your mail to|undeliverable\s+to|could not be delivered to|"
        r"your message to|following address(?:es)?|failed for|attempts|sent mail to|"
        r"generated from)"
        rf"\s*(?:\(s\))?\s*:?\s*(?:rfc822;\s*)?[<'\"]?{_A}",
        _I,
    ),
    re.compile(rf"(?:\bto|\bfor)\s*:?\s*<{_A}>", _I),
    re.compile(rf"^[ \t<]*[45]\d\d(?:[ -][245]\.\d{{1,3}}\.\d{{1,3}})?[ \t]+<{_A}>", re.M),
    # Zoho's "addr Invalid Address, ERROR_CODE :550, ..." lines (lhost-zoho-02.eml), and the
    # alias we sent to behind a sendmail expansion: "(expanded from: <addr>)".
    re.compile(rf"^{_A}[ \t]+invalid address\b", _IM),
    re.compile(rf"\(expanded from:?[ \t]*<?{_A}>?\)", _I),
)
for _pattern in _TEXT_RCPT:  # the case-insensitive ones get a twin (see _Folded)
    _twin(_pattern)


def _text_recipients(mail: _Mail) -> list[str]:
    """Failed addresses stated in a non-standard bounce's explanation."""
    found: list[str] = []
    lowered = mail.report_text.lower() if mail.report_text.isascii() else None
    for pattern in _TEXT_RCPT:
        # _bare_address lower-cases, so a twin's lower-cased group gives the same address.
        twin = _TWINS.get(pattern) if lowered is not None else None
        matches = twin.finditer(lowered) if twin and lowered else pattern.finditer(mail.report_text)
        for match in matches:
            address = _bare_address(match.group(1))
            if address:
                found.append(address)
    return found


def _original_to(mail: _Mail) -> tuple[str, ...]:
    """The returned message's single To address, when the bounce names no recipient itself.

    Verizon's MMS gateway says only "No valid recipients for this MM" and quotes the original
    "To: 0000000000@vzwpix.com" (lhost-verizon-01.eml). Several addresses would be a guess.
    """
    found: list[str] = []
    for original in mail.original_headers:
        found += _addresses(_header(original, "To"))
    for match in _QUOTED_TO.finditer(mail.all_text):
        found += _addresses(match.group(1))
    candidates = _not_ours(mail, found)
    return candidates if len(candidates) == 1 else ()


def _not_ours(mail: _Mail, addresses: list[str]) -> tuple[str, ...]:
    """Drop the bounce's own From/To and daemon addresses: they never are the failed recipient."""
    skip = {mail.from_address or "", *_addresses(mail.header("To")), *_addresses(mail.header("Cc"))}
    out: list[str] = []
    for address in addresses:
        local = address.partition("@")[0]
        if address in skip or _MAILER_DAEMON.match(local):
            continue
        out.append(address)
    return tuple(dict.fromkeys(out))


def _addresses(value: str) -> list[str]:
    """Lower-cased addresses of an address-list header; [] when the stdlib parser gives up."""
    try:
        pairs = getaddresses([value])
    except Exception:  # hostile input: the address list is simply unknown
        return []
    return [address.lower() for _, address in pairs if "@" in address]


def _from_daemon(mail: _Mail) -> bool:
    """Bounce senders: no From at all, MAILER-DAEMON/postmaster, "Mail Delivery System"."""
    local = (mail.from_address or "").partition("@")[0]
    return (
        not mail.from_address
        or bool(_DAEMON_LOCAL.match(local))
        or bool(_DAEMON_NAME.search(mail.from_display))
        or mail.header("Return-Path").strip() == "<>"
    )


def _action(rcpt: _Rcpt) -> str:
    """failed / delayed / delivered / "" from a DSN Action, or from Status when it is odd."""
    action = rcpt.action
    if action.startswith(("fail", "expire", "bounce", "reject", "undeliver")):
        return "failed"
    if action.startswith(("delay", "defer")):
        return "delayed"
    if action.startswith(("deliver", "relay", "expand")):
        return "delivered"
    return {"5": "failed", "4": "failed", "2": "delivered"}.get(rcpt.status.strip()[:1], "")


def _bounce(failures: list[tuple[str, str, bool]]) -> _Hit:
    """One verdict from per-recipient (address, kind, hard) failures.

    Hard when any recipient's reason proves its address bad; `recipients` are then exactly
    those addresses, so a soft failure beside them is never marked bad by association.
    """
    hard = [address for address, _, is_hard in failures if is_hard]
    if hard:
        recipients = tuple(dict.fromkeys(a for a in hard if a))
        return _Hit(
            Verdict.BOUNCE,
            kind="user_unknown",
            hard=True,
            recipients=recipients,
            also=("reason_user_unknown",),
        )
    kinds = [kind for _, kind, _ in failures]
    kind = next((k for k in kinds if k != "other"), "other")
    recipients = tuple(dict.fromkeys(a for a, _, _ in failures if a))
    if kind == _REPUTATION_KIND:  # the sender's standing, not the recipient's: kind policy
        return _Hit(
            Verdict.BOUNCE,
            kind="policy",
            hard=False,
            recipients=recipients,
            reputation=True,
            also=("reason_policy", "reputation"),
        )
    return _Hit(
        Verdict.BOUNCE, kind=kind, hard=False, recipients=recipients, also=(f"reason_{kind}",)
    )


def _segments(text: str, recipients: tuple[str, ...]) -> list[tuple[str, str]]:
    """Each recipient with the stretch of explanation that follows its first mention."""
    lowered = text.lower()
    found = sorted((lowered.find(r), r) for r in recipients if r in lowered)
    if len(found) < 2 or len(found) != len(recipients):
        return [(r, text) for r in recipients] or [("", text)]
    ends = [pos for pos, _ in found[1:]] + [len(text)]
    return [(r, text[pos:end]) for (pos, r), end in zip(found, ends, strict=True)]


def _status_from_text(text: str) -> str:
    found = _STATUS.search(text)
    return found.group(0) if found else ""


# ---------------------------------------------------------------------------------------------
# Rules. Each takes the parsed mail and returns a _Hit when it decides, None to pass.


def _rule_arf(mail: _Mail) -> _Hit | None:
    """RFC 5965 abuse report (or an older feedback loop forwarding the message): the
    complained-about address must be suppressed. Not a bounce and not a reply, so `other`."""
    reports = mail.feedback_reports
    if mail.report_type != "feedback-report" and not reports:
        loop = _FEEDBACK_SUBJECT.search(mail.subject) and not _REPLY_PREFIX.match(mail.subject)
        if not (loop and mail.original_headers):
            return None
    recipients: list[str] = []
    for part in reports:
        body = part.get_payload()
        if isinstance(body, list):  # compat32 splits the report into header blocks
            blocks = [b for b in body if isinstance(b, Message)]
            recipients += [str(v) for b in blocks for v in b.get_all("Original-Rcpt-To") or ()]
        else:
            text = _payload_text(part)
            recipients += re.findall(r"^original-rcpt-to:\s*(.+)$", text, _IM)
    if not any(recipients):  # no Original-Rcpt-To: whom the reported message was sent to
        for original in mail.original_headers:
            recipients += _addresses(_header(original, "To"))
    found = (_bare_address(r) for r in recipients)
    return _Hit(Verdict.OTHER, recipients=tuple(dict.fromkeys(r for r in found if r)))


def _rule_mdn(mail: _Mail) -> _Hit | None:
    """RFC 8098 read receipt: says nothing about interest, so it is not a reply."""
    if mail.report_type == "disposition-notification":
        return _Hit(Verdict.OTHER)
    return None


def _rule_challenge(mail: _Mail) -> _Hit | None:
    """Challenge-response filters ask us to prove we are human; some dress up as DSNs."""
    # No _CHALLENGE match spans a line break or looks outside itself (no \b, ^, lookbehind),
    # so a piece contained in another one cannot add a match: read the new text and the report
    # text once when one holds the other, as it does in most messages.
    new, report = mail.new_text, mail.report_text
    if new in report:
        body = [report]
    elif report in new:
        body = [new]
    else:
        body = [new, report]
    text = "\n".join([mail.subject, *body, " ".join(r.diagnostic for r in mail.dsn)])
    if _Folded(text).search(_CHALLENGE):
        return _Hit(Verdict.AUTO_REPLY, kind="challenge")
    return None


def _rule_dsn(mail: _Mail) -> _Hit | None:
    """RFC 3464 report: per-recipient Action/Status/Diagnostic-Code are exact evidence."""
    if not mail.dsn:
        return None
    actions = [(_action(r), r) for r in mail.dsn]
    failed = [r for action, r in actions if action == "failed"]
    delayed = [r for action, r in actions if action == "delayed"]
    if not failed and not delayed:
        if any(action == "delivered" for action, _ in actions):
            return _Hit(Verdict.OTHER, name="dsn_success")  # delivered / relayed / expanded
        return None
    if not failed:
        recipients = tuple(dict.fromkeys(r.address for r in delayed if r.address))
        return _Hit(
            Verdict.BOUNCE, kind="delay", hard=False, recipients=recipients, also=("delayed",)
        )
    failures = [(r.address, *_reason(r.diagnostic, mail.report_text, r.status)) for r in failed]
    if not any(address for address, _, _ in failures):
        temporary, permanent = _flufl(mail.msg)
        found = _not_ours(mail, sorted(permanent | temporary) + _text_recipients(mail))
        failures = [(a, kind, hard) for a in found or ("",) for _, kind, hard in failures]
    return _bounce(failures)


def _rule_ses(mail: _Mail) -> _Hit | None:
    """Amazon SES notifications forwarded by SNS e-mail: JSON, not MIME, but exact evidence."""
    kind = _SES_TYPE.search(mail.text)
    if not kind:
        return None
    body = mail.text.replace("!\n ", "")
    if kind.group(1) == "Delivery":
        return _Hit(Verdict.OTHER, name="dsn_success")
    if kind.group(1) == "Complaint":
        found = _SES_COMPLAINED.search(body)
        addresses = _ADDR.findall(found.group(1)) if found else []
        return _Hit(
            Verdict.OTHER,
            recipients=tuple(dict.fromkeys(a.lower() for a in addresses)),
            name="arf_complaint",
        )
    transient = bool(re.search(r'"bounceType"\s*:\s*"Transient"', body))
    failures: list[tuple[str, str, bool]] = []
    for item in _SES_RECIPIENT.finditer(body):
        fields = dict(re.findall(r'"(\w+)"\s*:\s*"([^"]*)"', item.group(0)))
        kind_, hard = _reason(fields.get("diagnosticCode", ""), "", fields.get("status", ""))
        address = _bare_address(fields.get("emailAddress", ""))
        failures.append((address, kind_, hard and not transient))
    return _bounce(failures or [("", "other", False)])


def _rule_bounce_text(mail: _Mail) -> _Hit | None:
    """Non-standard bounces: a daemon sender or bounce subject, and failure text or addresses."""
    daemon = _from_daemon(mail)
    subject = bool(_BOUNCE_SUBJECT.search(mail.subject))
    if not (daemon or subject):
        return None
    report = _Folded(mail.report_text)
    body = report.search(_BOUNCE_BODY) or report.search(_HARD)
    # flufl.bounce (about 0.65 ms a message) only where its answer decides something: the
    # verdict below, or the recipients when the explanation names none we can read.
    flufl: tuple[set[str], set[str]] | None = None
    if subject and _REPLY_PREFIX.match(mail.subject):
        # "Re: Undeliverable" is usually a person talking about a bounce; believe the
        # subject only when the text and flufl.bounce both find a failure too.
        if body:
            flufl = _flufl(mail.msg)
        subject = body and bool(flufl and (flufl[0] or flufl[1]))
    if not (daemon or subject):
        return None
    if not (daemon and subject) and not body:
        if flufl is None:
            flufl = _flufl(mail.msg)
        if not (flufl[0] or flufl[1]):
            return None
    recipients = _not_ours(mail, _text_recipients(mail))
    if flufl is not None or not recipients:
        temporary, permanent = flufl if flufl is not None else _flufl(mail.msg)
        recipients = _not_ours(
            mail, sorted(permanent) + sorted(temporary - permanent) + _text_recipients(mail)
        )
    recipients = recipients or _original_to(mail)
    delay = report.search(_DELAY_BODY) or (
        bool(_DELAY_SUBJECT.search(mail.subject))
        and not re.search(r"fail|undeliver|returned", mail.subject, _I)
    )
    if delay:
        return _Hit(
            Verdict.BOUNCE, kind="delay", hard=False, recipients=recipients, also=("delayed",)
        )
    failures = [
        (address, *_reason("", part, _status_from_text(part)))
        for address, part in _segments(mail.report_text, recipients)
    ]
    return _bounce(failures)


def _rule_calendar(mail: _Mail) -> _Hit | None:
    """An iTIP REPLY is a person answering an invitation, even with no text at all."""
    if not mail.calendar or not _CAL_METHOD.search(mail.calendar):
        return None
    status = _CAL_PARTSTAT.search(mail.calendar)
    if status and status.group(1).upper() == "ACCEPTED":
        return _Hit(Verdict.HUMAN_REPLY)
    return None


def _rule_calendar_reply(mail: _Mail) -> _Hit | None:
    """Declined or tentative answers to an invitation are a person's answer too."""
    if mail.calendar and _CAL_METHOD.search(mail.calendar):
        return _Hit(Verdict.HUMAN_REPLY)
    return None


def _auto_reply(mail: _Mail) -> _Hit:
    """Refine an auto-reply already proven by other evidence: kind and return date."""
    text = mail.subject + "\n" + mail.new_text
    if _LEFT_COMPANY.search(text):
        others = tuple(
            a
            for a in dict.fromkeys(m.lower().rstrip(".") for m in _ADDRESS_IN_TEXT.findall(text))
            if a != mail.from_address and a not in _addresses(mail.header("To"))
        )
        return _Hit(
            Verdict.AUTO_REPLY,
            kind="left_company",
            alternatives=others,
            also=("left_company",) + (("alternatives",) if others else ()),
        )
    if (
        _OOO_TEXT.search(text)
        or _OOO_RETURN.search(text)
        or _OOO_SUBJECT_ANY.search(mail.subject)
        or _OOO_SUBJECT_START.match(mail.subject)
    ):
        back = _return_date(text, mail.sent)
        return _Hit(
            Verdict.AUTO_REPLY,
            kind="out_of_office",
            return_date=back,
            also=("out_of_office",) + (("return_date",) if back else ()),
        )
    return _Hit(Verdict.AUTO_REPLY, kind="other")


def _rule_auto_submitted(mail: _Mail) -> _Hit | None:
    """RFC 3834: any Auto-Submitted value but "no" means no person sent it."""
    value = mail.header("Auto-Submitted").lower()
    if not value or value.startswith("no"):
        return None
    if value.startswith("auto-replied") or mail.reply_relation:
        return _auto_reply(mail)
    # Lotus Notes sends its out-of-office as "auto-generated (out-of-office)" with no
    # In-Reply-To (tests/mail/ooo-it-notes.eml).
    if re.search(r"out-of-office|vacation|auto-?repl", value):
        return _auto_reply(mail)
    # auto-generated and answering nothing: a notification
    return _Hit(Verdict.OTHER, name="auto_generated")


def _rule_autoreply_headers(mail: _Mail) -> _Hit | None:
    """Vendor auto-reply headers (Gmail X-Autoreply, X-Autorespond, Exchange suppress flags)."""
    if mail.header("X-Autoreply").lower() not in {"", "no", "false"}:
        return _auto_reply(mail)
    if mail.header("X-Autorespond") or mail.header("X-Autoresponse"):
        return _auto_reply(mail)
    # Exchange stamps its own OOF replies with X-Auto-Response-Suppress; a person's "RE:"
    # carrying it needs the text to agree before we call it a robot.
    suppress = mail.header("X-Auto-Response-Suppress").lower()
    if re.search(r"\b(oof|autoreply|all)\b", suppress) and (
        not _REPLY_PREFIX.match(mail.subject) or _OOO_TEXT.search(mail.new_text)
    ):
        return _auto_reply(mail)
    return None


def _rule_precedence(mail: _Mail) -> _Hit | None:
    """Precedence auto_reply/junk/bulk from a single sender (not a list) marks a robot."""
    value = (mail.header("Precedence") or mail.header("X-Precedence")).lower()
    if value not in {"auto_reply", "auto-reply", "junk", "bulk"}:
        return None
    if value == "bulk":
        # Bulk is also every newsletter's mark: believe it for an answer to us, or for a
        # message that reads like an auto-reply, and leave lists to the list rule.
        if mail.header("List-Id") or mail.header("List-Unsubscribe"):
            return None
        robotic = _AUTO_SUBJECT.match(mail.subject) or _OOO_SUBJECT_ANY.search(mail.subject)
        if not (mail.reply_relation or robotic or _OOO_TEXT.search(mail.new_text)):
            return None
    return _auto_reply(mail)


def _rule_unsubscribe(mail: _Mail) -> _Hit | None:
    """A person asking to be removed, in the new text only (quoted footers do not count).

    Lines that read like a sender's footer (a link, "click", "preferences") are skipped, and
    a message that answers nothing is only read at its top, where a person would write it.
    """
    if _UNSUBSCRIBE_SUBJECT.fullmatch(mail.subject):
        return _Hit(Verdict.UNSUBSCRIBE_REQUEST, also=("subject",))
    text = mail.new_text if mail.reply_relation else mail.new_text.strip()[:500]
    text = "\n".join(ln for ln in text.splitlines() if not _FOOTER_LINE.search(ln))
    for match in _UNSUBSCRIBE.finditer(text):
        if not _negated(text, match.start(), match.end()):
            return _Hit(Verdict.UNSUBSCRIBE_REQUEST)
    return None


def _negated(text: str, start: int, end: int) -> bool:
    """Whether the phrase at text[start:end] is negated or asked and answered "no".

    Only the last three words of its own clause count, so "No, please remove me" and
    "Not interested - remove me" stay requests (tests/mail/human-trap-*.eml).
    """
    before = text[max(0, start - 80) : start]
    clause = _CLAUSE_END.split(before)[-1]
    if _NEGATION.search(" ".join(clause.split()[-3:])):
        return True
    after = text[end : end + 200]
    question = re.match(r"[^.!?\n]*\?", after)
    return bool(question and _ANSWER_NO.match(after[question.end() :]))


def _rule_ooo_subject(mail: _Mail) -> _Hit | None:
    """Auto-reply subjects start with the marker; a person's "Re: Automatic reply" does not."""
    if _OOO_SUBJECT_START.match(mail.subject) or re.search(
        r"\(automatic (response|reply)\)\s*$", mail.subject, _I
    ):
        return _auto_reply(mail)
    return None


def _rule_ooo_text(mail: _Mail) -> _Hit | None:
    """Absence or retirement notices in the new text, when nothing else marks the sender.

    Only for subjects that are not a person's "Re:": people write "I'm out until Monday,
    but yes" in real replies, and missing a robot costs less than ignoring a person.
    """
    if _REPLY_PREFIX.match(mail.subject):
        return None
    if _OOO_TEXT.search(mail.new_text) or _LEFT_COMPANY.search(mail.new_text):
        return _auto_reply(mail)
    return None


def _rule_list(mail: _Mail) -> _Hit | None:
    """List and bulk mail that answers nothing: newsletters, notifications."""
    precedence = (mail.header("Precedence") or mail.header("X-Precedence")).lower()
    listed = bool(mail.header("List-Id") or mail.header("List-Unsubscribe"))
    if precedence == "list" or (listed and not mail.reply_relation):
        return _Hit(Verdict.OTHER)
    return None


def _rule_not_a_reply(mail: _Mail) -> _Hit | None:
    """No In-Reply-To, no "Re:", no quote: whatever it is, it does not answer our mail."""
    if not mail.reply_relation:
        return _Hit(Verdict.OTHER)
    return None


def _rule_human(mail: _Mail) -> _Hit | None:
    """What is left answers our mail and shows no robot: a person wrote it."""
    return _Hit(Verdict.HUMAN_REPLY)


# ---------------------------------------------------------------------------------------------
# Return dates.


def _return_date(text: str, sent: date | None) -> date | None:
    """The first date stated after a "back/until/bis/retour..." keyword; None when unsure."""
    for key in _RETURN_KEY.finditer(text):
        window = text[key.end() : key.end() + 60]
        found = _date_in(window, sent)
        if found:
            return found
    return None


def _date_in(window: str, sent: date | None) -> date | None:
    """The earliest date written in `window`; a bare weekday means the next such day."""
    base_year = sent.year if sent else None
    iso = _DATE_ISO.search(window)
    candidates: list[tuple[int, date | None]] = []
    if iso:
        candidates.append((iso.start(), _mkdate(int(iso[1]), int(iso[2]), int(iso[3]))))
    for match in _DATE_DMY.finditer(window):
        year = int(match[3]) if match[3] else None
        candidates.append(
            (match.start(), _year_fill(year, _MONTHS[match[2].lower()], int(match[1]), sent))
        )
        break
    for match in _DATE_MDY.finditer(window):
        year = int(match[3]) if match[3] else None
        candidates.append(
            (match.start(), _year_fill(year, _MONTHS[match[1].lower()], int(match[2]), sent))
        )
        break
    for match in _DATE_NUM.finditer(window):
        if iso and iso.start() <= match.start() < iso.end():
            continue
        candidates.append((match.start(), _numeric(match, window, sent)))
        break
    dated = sorted((pos, d) for pos, d in candidates if d is not None)
    if dated:
        return dated[0][1]
    weekday = _DATE_WEEKDAY.search(window)
    if weekday and sent and base_year:
        target = _WEEKDAYS[weekday[1].lower()]
        ahead = (target - sent.weekday()) % 7 or 7
        return sent + timedelta(days=ahead)
    return None


def _mkdate(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _year_fill(year: int | None, month: int, day: int, sent: date | None) -> date | None:
    """A day and month without a year belong to the Date's year, or the next one if past."""
    if year is not None:
        return _mkdate(year, month, day)
    if sent is None:
        return None
    found = _mkdate(sent.year, month, day)
    if found and found < sent - timedelta(days=7):
        found = _mkdate(sent.year + 1, month, day)
    return found


def _numeric(match: re.Match[str], window: str, sent: date | None) -> date | None:
    """d.m.(y), or d/m/y against m/d/y: the weekday named decides, else a reading soon after
    Date when the other one is far off (absences are short); both plausible means unsure."""
    a, sep, b = int(match[1]), match[2], int(match[3])
    if match[4] is None and sep != ".":
        return None  # "9/11" or "10-12" without a year is more often not a date
    year = int(match[4]) if match[4] else None
    if year is not None and year < 100:
        year += 2000
    readings = [(a, b)] if sep == "." else [(a, b), (b, a)]
    options = list(
        dict.fromkeys(d for d in (_year_fill(year, m, dd, sent) for dd, m in readings) if d)
    )
    weekday = _DATE_WEEKDAY.search(window[: match.start()][-20:])
    if weekday and len(options) > 1:
        named = _WEEKDAYS[weekday[1].lower()]
        options = [d for d in options if d.weekday() == named] or options
    if len(options) > 1 and sent:
        soon = [d for d in options if timedelta(0) <= d - sent <= _SOON]
        options = soon if len(soon) == 1 else []
    return options[0] if len(options) == 1 else None


# ---------------------------------------------------------------------------------------------
# The rule table: order is policy. Reports first, then robots, then what people write.

_RULES: tuple[tuple[str, Callable[[_Mail], _Hit | None]], ...] = (
    ("arf_complaint", _rule_arf),
    ("read_receipt", _rule_mdn),
    ("challenge_response", _rule_challenge),
    ("dsn_report", _rule_dsn),
    ("ses_notification", _rule_ses),
    ("bounce_text", _rule_bounce_text),
    ("calendar_accept", _rule_calendar),
    ("calendar_reply", _rule_calendar_reply),
    ("auto_submitted", _rule_auto_submitted),
    ("autoreply_header", _rule_autoreply_headers),
    ("precedence", _rule_precedence),
    ("list_mail", _rule_list),
    ("unsubscribe_text", _rule_unsubscribe),
    ("ooo_subject", _rule_ooo_subject),
    ("ooo_text", _rule_ooo_text),
    ("not_a_reply", _rule_not_a_reply),
    ("human_text", _rule_human),
)
