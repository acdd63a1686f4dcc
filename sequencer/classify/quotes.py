"""Separating what a sender wrote now from what they quote, and a bounce's explanation from
the copy of the message it returns.

Owns: the attribution lines ("On Tue, Jo wrote:", "Am ... schrieb", Outlook's From/Sent
block, "----- Original Message -----"), quoted lines ("> ", "| "), HTML quotes (Gmail's
gmail_quote, Outlook's divRplyFwdMsg, <blockquote>), and where a returned copy begins. The
words of attribution lines live in the language files; the shapes around them live here.
"""

from __future__ import annotations

import functools
import html
import re

from sequencer.classify import lexicon

WROTE = lexicon.section("quote_wrote", "phrases", 'the verb of an attribution line ("wrote")')
ATTRIBUTION_START = lexicon.section(
    "quote_attribution_start",
    "phrases",
    'words an attribution line opens with ("on" in "On Tue, Jo wrote:")',
)
ORIGINAL_MESSAGE = lexicon.section(
    "quote_original_message",
    "phrases",
    'separators before a quoted or forwarded message ("original message")',
)
HEADER_FROM = lexicon.section(
    "quote_header_from", "phrases", 'the "From:" label of a quoted header block'
)
HEADER_NEXT = lexicon.section(
    "quote_header_next",
    "phrases",
    'the labels after "From:" in a quoted header block ("sent", "to", "subject")',
)

_QUOTED_LINE = re.compile(r"^[ \t]*[>|]")

# Where the copy of the returned message begins in a plain-text bounce: reasons come before it.
# Server wording (not a person's), so it stays here. Possessive runs: backtracking over
# "[ \t>-]*" against "\s*" was cubic on whitespace-heavy bounces.
_ORIGINAL_START = re.compile(
    r"^(?:[ \t>-]*+(?:-{2,}|={2,}|\*{2,})?+\s*+(?:a\s++)?("
    r"this is a copy of|below this line is a copy|original message (follows|headers)|"
    r"the original message (follows|is (included|attached)|headers)|returned message|"
    r"undelivered message|message text follows|"
    r"(start|begin) of (the )?(returned|original)|headers of the original|"
    r"copy of the message|unsent message below|forwarded message|"
    r"summary of the undelivered message"
    r")|[ \t>]*(received|return-path|dkim-signature|x-received|authentication-results|"
    r"received-spf|arc-seal):\s)",
    re.M,
)
# Disclaimers and antivirus stamps under a bounce: their words ("virus", "prohibited") are noise.
_DISCLAIMER = re.compile(r"^[ \t]*(_{5,}|~{5,}|-- )[ \t]*$", re.M)

_HTML_DROP = re.compile(r"<(style|script|head)\b.*?</\1\s*>", re.I | re.S)
_HTML_BREAK = re.compile(r"<\s*(br|/p|/div|/tr|/li|/h\d|p|div|tr|li)\b[^>]*>", re.I)
_HTML_TAG = re.compile(r"<[^>]*>")


def _unspaced(word: str) -> bool:
    return any(0x3040 <= ord(c) <= 0x9FFF for c in word)


@functools.cache  # the phrase files are read once per process
def _attribution() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(every attribution shape, the shapes without a "wrote" verb): the second is searched
    when the text holds no such verb, sparing a 200-character look-ahead at every line."""
    wrote = lexicon.phrases(WROTE).every
    spaced = lexicon.alternation([w for w in wrote if not _unspaced(w)])
    unspaced = lexicon.alternation([w for w in wrote if _unspaced(w)])
    start = lexicon.alternation(lexicon.phrases(ATTRIBUTION_START).every)
    original = lexicon.alternation(lexicon.phrases(ORIGINAL_MESSAGE).every)
    sender = lexicon.alternation(lexicon.phrases(HEADER_FROM).every)
    following = lexicon.alternation(lexicon.phrases(HEADER_NEXT).every)
    with_verb = (
        # "On Tue, 24 Nov 2026, Jo <jo@...> wrote:" over up to three lines
        rf"^[ \t]*(?:-{{2,}}\s*)?{start}[^\n]{{0,250}}?(?:\n[^\n]{{0,250}}?){{0,2}}"
        rf"{spaced}\s*:?[ \t]*$"
        # "Jo Prospect wrote:" on one line
        rf"|^[^\n]{{0,200}}{spaced}\s*:[ \t]*$"
        # Japanese and Chinese put the verb last, with or without a colon
        rf"|^[^\n]{{0,200}}{unspaced}[:：]?[ \t]*$"
    )
    other = (
        rf"^[ \t]*-{{2,}}[ \t]*{original}[ \t]*-*"
        r"|^[ \t]*_{10,}[ \t]*$"
        r"|^[ \t]*\d{4}[/.-]\d{1,2}[/.-]\d{1,2}\b[^\n]{0,120}<[^<>\s]+@[^<>\s]+>:?[ \t]*$"
        # Outlook's block: "From: ..." then, within four lines, "Sent:"/"To:"/"Subject:"
        rf"|^[ \t]*\*?{sender}\s*:\*?[ \t]+\S[^\n]*"
        rf"\n(?:[^\n]*\n){{0,3}}?[ \t]*\*?{following}\s*:"
    )
    return re.compile(with_verb + "|" + other, re.M), re.compile(other, re.M)


@functools.cache
def _html_quote() -> re.Pattern[str]:
    sender = lexicon.alternation(lexicon.phrases(HEADER_FROM).every)
    return re.compile(
        r"<blockquote\b|<div[^>]+(gmail_quote|divrplyfwdmsg|outlookmessageheader|"
        r"yahoo_quoted|moz-cite-prefix)|<hr\b[^>]*>\s*(<[^>]+>\s*)*(<b>)?\s*" + sender + r"\s*:"
    )


def new_text(text: str) -> str:
    """What precedes the first attribution or original-message marker, without quoted lines
    ("> ", or "| " as some clients quote)."""
    lowered = lexicon.lower(text)
    full, without_verb = _attribution()
    has_verb = lexicon.phrases(WROTE).search(lowered) is not None
    found = (full if has_verb else without_verb).search(lowered)
    if found:
        text = text[: found.start()]
    if ">" not in text and "|" not in text:  # no line can be quoted: skip the per-line test
        return "\n".join(text.splitlines())
    return "\n".join(ln for ln in text.splitlines() if not _QUOTED_LINE.match(ln))


def html_to_text(markup: str, *, cut_quotes: bool) -> str:
    """Readable text of HTML-only mail; `cut_quotes` drops everything from the quoted reply on."""
    markup = _HTML_DROP.sub("", markup)
    if cut_quotes:
        quote = _html_quote().search(lexicon.lower(markup))
        if quote:
            markup = markup[: quote.start()]
    text = _HTML_TAG.sub("", _HTML_BREAK.sub("\n", markup))
    return html.unescape(text).replace("\xa0", " ")


def explanation(body: str) -> str:
    """A bounce's own words: the text before the returned copy and before any disclaimer."""
    start = _ORIGINAL_START.search(lexicon.lower(body))
    if start:
        body = body[: start.start()]
    cut = _DISCLAIMER.search(body)
    return body[: cut.start()] if cut else body
