"""Pure inbound-mail classification: raw RFC 5322 bytes in, a Classification out.

Owns: the public API. Deciding whether a message in the salesperson's inbox is a human reply,
an automatic reply, a bounce, a removal request or something else, with the evidence (named
rules). Must not import asyncio, tortoise or any network library: it is tested without an
event loop.

Shape (after GNU Mailman's rule chains): the message is parsed once by the standard library
(`parse.py`) into `Mail`, then an ordered table of small named rules is tried (`rules.py`); the
first rule that fires decides the verdict, and the refinements it ran (reason of a bounce,
kind of an auto-reply, return date) add their names. Exact evidence (RFC 3464/8098/5965
reports, RFC 3834 headers) comes before text heuristics, and heuristics about people read only
the new text of a reply, never what it quotes (`quotes.py`). The package's modules:

    verdict.py    Verdict, Classification and the other answer types; a rule's Hit
    parse.py      the stdlib parser, header decoding, text extraction, lowered copies
    quotes.py     new text versus quoted text and signatures; a bounce's own explanation
    bounces.py    DSN/ARF/SES/plain-text bounces, reasons, recipients, returned ids
    autoreply.py  auto-replies: out of office, left the company, challenge-response
    dates.py      return dates in absence notices
    removal.py    a person asking to be removed
    rules.py      the ordered rule table and the rules that belong nowhere else
    lexicon.py    the per-language phrase files in lang/ (the words every rule reads)
"""

from __future__ import annotations

from email.message import Message

from sequencer.classify import lexicon, rules
from sequencer.classify.bounces import smtp_refusal
from sequencer.classify.verdict import BounceKind, Classification, Intent, Referral, Verdict

__all__ = [
    "BounceKind",
    "Classification",
    "Intent",
    "Referral",
    "Verdict",
    "classify",
    "classify_parsed",
    "smtp_refusal",
]


def classify(raw: bytes, *, fiscal_year_start: tuple[int, int] = (1, 1)) -> Classification:
    """Classify one raw message; never raises, since hostile mail must not stop the poller.

    `fiscal_year_start` (month, day) is where quarters begin when a reply names one ("try me
    in Q3"): calendar quarters by default, the config's `fiscal_year_start` when given.
    """
    return classify_parsed(raw, fiscal_year_start=fiscal_year_start)[0]


def classify_parsed(
    raw: bytes, *, fiscal_year_start: tuple[int, int] = (1, 1)
) -> tuple[Classification, Message | None]:
    """`classify`, and the message as the classifier parsed it (the standard library's
    `compat32` policy, on the bytes with line ends made LF), for a caller that reads more of it
    (the agenda's excerpt) without parsing it again; None when it could not be parsed."""
    try:
        return rules.run_parsed(raw, fiscal_year_start)
    except lexicon.LexiconError:  # a broken phrase file is the operator's to fix: say so
        raise
    except Exception:  # anything the stdlib parser or a detector trips on
        return Classification(Verdict.OTHER, rules=("unparseable",)), None
