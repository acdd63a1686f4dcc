"""Pure: the first lines of what a reply says, for the agenda (`sequencer agenda`).

Owns the short text a salesperson reads to decide what to do: the reply's own words, without
what it quotes or its signature, on one line and bounded. It reads only structure that every
mail client shares (`>` quoting, an attribution line just before a quote, the `-- ` signature
delimiter, a forwarded or Outlook header block), never a language's words, so it needs no
phrase table. Bounded for hostile input: at most MAX_BYTES of the message are parsed and at
most MAX_LINES lines of its text are read. No I/O.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
from email.message import Message

#: The agenda shows this many characters at most.
LIMIT = 300
MAX_BYTES = 256 * 1024
MAX_LINES = 200

_TAG = re.compile(r"<[^>]{0,2000}>")
_BLOCK = re.compile(r"(?i)<\s*(?:br|/p|/div|/li|/tr|/h\d)\b[^>]{0,200}>")
_DROP = re.compile(r"(?is)<\s*(style|script|head)\b.{0,100000}?</\s*\1\s*>")
#: An Outlook-style header block ("From: ...", "Von: ...", "De : ...") opening a quoted message:
#: a short word, a colon, then something with an @ or a date's digits.
_HEADER_LINE = re.compile(r"^\*?[A-Za-zÀ-ÿ]{2,12}\s?:\*?\s.{0,200}(@|\d{1,2}[:/. ]\d)")
_SEPARATOR = re.compile(r"^(?:-{2,}\s*[^-\s].{0,60}\s*-{2,}|_{8,}|-{8,}|={8,})\s*$")


def excerpt(raw: bytes, limit: int = LIMIT, *, parsed: Message | None = None) -> str:
    """The reply's new text, whitespace collapsed, at most `limit` characters ("" if none).

    `parsed`: the same message as the classifier parsed it (`classify_parsed`: compat32, line
    ends made LF, leading blank lines dropped), read instead of parsing `raw` a second time
    where that gives the same text: when all of `raw` is within MAX_BYTES, its line ends are
    all CRLF or all LF, and it starts with a header. The policy does not matter here: only the
    parts' structure and payloads are read, decoded the same way."""
    try:
        if parsed is None or not _parsed_alike(raw):
            parsed = email.message_from_bytes(raw[:MAX_BYTES], policy=email.policy.default)
        text = _body_text(parsed)
    except Exception:  # hostile or broken mail: nothing to show is better than a crash
        return ""
    return shorten(" ".join(new_lines(text)), limit)


def shorten(text: str, limit: int = LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def new_lines(text: str) -> list[str]:
    """The lines before the first quote, signature or quoted header block."""
    lines = text.splitlines()[:MAX_LINES]
    kept: list[str] = []
    for i, line in enumerate(lines):
        bare = line.strip()
        following = next((x.strip() for x in lines[i + 1 : i + 4] if x.strip()), "")
        if bare.startswith(">") or line.rstrip() == "--" or line.startswith("-- "):
            break
        if _SEPARATOR.match(bare) or (_HEADER_LINE.match(bare) and _HEADER_LINE.match(following)):
            break
        if bare.endswith(":") and following.startswith(">"):
            break  # the attribution line ("On Tue, Jo wrote:", in any language)
        if bare:
            kept.append(bare)
    return kept


def _body_text(msg: Message) -> str:
    plain = html_part = None
    for part in msg.walk():
        if part.is_multipart() or part.get_content_disposition() == "attachment":
            continue
        kind = part.get_content_type()
        if kind == "text/plain" and plain is None:
            plain = part
        elif kind == "text/html" and html_part is None:
            html_part = part
    if plain is not None:
        return _decoded(plain)
    if html_part is not None:
        return _html_text(_decoded(html_part))
    return ""


def _parsed_alike(raw: bytes) -> bool:
    """The classifier's parse of `raw` has the same parts and payloads as ours would: the
    message is whole (not cut at MAX_BYTES), starts with a header, and has no CR but in CRLF
    (the classifier turns each CRLF into LF, which no line of the text depends on)."""
    return (
        len(raw) <= MAX_BYTES
        and raw[:1] not in {b" ", b"\t", b"\r", b"\n"}
        and raw.count(b"\r") == raw.count(b"\r\n")
    )


def _decoded(part: Message) -> str:
    try:
        # What `EmailMessage.get_content()` does under `policy.default`, for a part parsed
        # under any policy (the classifier's is compat32).
        content = email.policy.default.content_manager.get_content(part)
        if isinstance(content, str):
            return content
    except (LookupError, ValueError, UnicodeError):
        pass
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode(part.get_content_charset() or "utf-8", errors="replace")
    return ""


def _html_text(markup: str) -> str:
    markup = _DROP.sub(" ", markup[:MAX_BYTES])
    # A quoted message in HTML mail sits in a blockquote: keep what comes before it.
    markup = re.split(r"(?i)<\s*blockquote\b", markup, maxsplit=1)[0]
    return html.unescape(_TAG.sub("", _BLOCK.sub("\n", markup)))
