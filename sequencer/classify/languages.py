"""Which of the phrase files' languages a text is written in, cheaply.

Owns: `guess_languages`, a count of each language's function words (the `common_words`
section of `lang/<code>.yaml`). It exists so that the few costly readers (dateparser, numeric
date order) are told the message's languages instead of detecting them, which costs tens of
milliseconds and tens of megabytes per call. A reply is short and function words are frequent,
so a handful of hits is enough; ties keep the files' order. Pure: no I/O beyond the phrase
files loaded once by lexicon.
"""

from __future__ import annotations

from sequencer.classify import lexicon
from sequencer.classify.lexicon import phrases

COMMON_WORDS = lexicon.section(
    "common_words",
    "phrases",
    "frequent function words of the language (articles, pronouns, 'and', 'thanks'), used only "
    "to tell which language a message is written in",
)

_SAMPLE = 4_000  # characters read: the language of a reply shows in its first lines


def guess_languages(lowered: str) -> tuple[str, ...]:
    """The phrase files' languages the lowered text uses, best first; () when none shows.

    A language is kept when it has at least a third of the best language's hits (a German
    reply quoting an English product name stays German; a bilingual reply keeps both).
    """
    sample = lowered[:_SAMPLE]
    counts: list[tuple[int, int, str]] = []
    for position, code in enumerate(lexicon.languages()):
        words = phrases(COMMON_WORDS, code)
        hits = sum(1 for _ in words.finditer(sample))
        if hits:
            counts.append((-hits, position, code))
    if not counts:
        return ()
    counts.sort()
    best = -counts[0][0]
    return tuple(code for hits, _, code in counts if -hits * 3 >= best)


def numeric_date_order(codes: tuple[str, ...]) -> str:
    """How the given languages write 02/01/2027 (dmy, mdy, ymd), or "any" when they disagree
    or one of them uses both orders: then only a date whose order cannot matter is read."""
    langs = lexicon.languages()
    orders = {langs[c].numeric_dates for c in codes if c in langs}
    return orders.pop() if len(orders) == 1 else "any"
