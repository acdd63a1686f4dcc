"""Parsing one raw message into the facts the rules read (`Mail`), with the stdlib's parser.

Owns: `email.message_from_bytes(raw, policy=compat32)`, header decoding, the walk over parts
(bounded by _MAX_PARTS, each part read up to _MAX_TEXT characters, so hostile nesting and huge
bodies cost a bounded time), text and HTML-to-text extraction, delivery-status blocks, and the
lowered copies of the text that every phrase test reads (lowered once per message).
Must not decide anything: the rules do.
"""

from __future__ import annotations

import email
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from email.header import decode_header, make_header
from email.message import Message
from email.parser import Parser
from email.policy import compat32
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from functools import cached_property

from sequencer.classify import lexicon, quotes

REPLY_PREFIX = lexicon.section(
    "reply_prefix", "phrases", "subject prefixes a mail client puts before a reply (re, aw)"
)

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

_MSGID = re.compile(r"<[^<>\s]+@[^<>\s]+>|<[^<>\s]+>")
ADDR = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]+\b", re.I)
_ADDR_ONLY = re.compile(r"^[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)*\.[a-z]+$", re.I)
_ADDR_LOOSE = re.compile(r"^[^\s<>@]+@[^\s<>@]+$")


@dataclass
class Rcpt:
    """One per-recipient block of a delivery-status report."""

    address: str
    action: str
    status: str
    diagnostic: str


@dataclass
class Mail:
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
    dsn: list[Rcpt]
    original_headers: list[Message]
    calendar: str
    reply_relation: bool
    feedback_reports: list[Message]  # message/feedback-report leaves, in walk order
    headers: dict[str, str] = field(default_factory=dict)  # decoded once per name

    def header(self, name: str) -> str:
        key = name.lower()
        if key not in self.headers:
            self.headers[key] = header(self.msg, name)
        return self.headers[key]

    # Lowered copies, made once and only when a rule reads them; same length as the text.
    @cached_property
    def lowered(self) -> str:
        return lexicon.lower(self.text)

    @cached_property
    def new_lowered(self) -> str:
        return lexicon.lower(self.new_text)

    @cached_property
    def subject_lowered(self) -> str:
        return lexicon.lower(self.subject)

    @cached_property
    def report_lowered(self) -> str:
        return lexicon.lower(self.report_text)


def parse(raw: bytes) -> Mail | None:
    """The facts of one raw message; None when it has no header at all (not a message)."""
    raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").lstrip(b" \t\n")
    msg = email.message_from_bytes(raw, policy=compat32)
    if not msg.keys():
        return None
    return _facts(msg)


def header(msg: Message, name: str) -> str:
    """Decoded, unfolded header value, or "" (RFC 2047 words and raw 8-bit both tolerated)."""
    try:
        value = msg.get(name)
    except Exception:
        return ""
    if value is None:
        return ""
    try:
        text = str(make_header(decode_header(value)))
    except Exception:
        text = str(value)
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return " ".join(text.split())


def from_address(raw: str) -> tuple[str | None, str]:
    """(lower-cased bare address or None, display name) of a decoded From value."""
    if not raw:
        return None, ""
    try:
        name, addr = parseaddr(raw)
    except Exception:
        return None, raw
    addr = addr.strip().strip("<>").lower()
    return (addr if "@" in addr else None), name


def first_msgid(value: str) -> str | None:
    ids = _MSGID.findall(value)
    return ids[0] if ids else None


def msgids(value: str) -> tuple[str, ...]:
    return tuple(_MSGID.findall(value))


def addresses(value: str) -> list[str]:
    """Lower-cased addresses of an address-list header; [] when the stdlib parser gives up."""
    try:
        pairs = getaddresses([value])
    except Exception:  # hostile input: the address list is simply unknown
        return []
    return [address.lower() for _, address in pairs if "@" in address]


def bare_address(value: str, *, loose: bool = False) -> str:
    """Lower-cased addr-spec from a field or phrase; "" when there is none.

    `loose` keeps odd but exact addresses from DSN fields ("recipient@#example.net"): they
    are what we sent to, so the caller can still match them.
    """
    value = value.strip().strip("<>").strip().strip('"').lower()
    if _ADDR_ONLY.match(value) or (loose and _ADDR_LOOSE.match(value)):
        return value
    found = ADDR.findall(value)
    return found[-1].lower() if found else ""


def payload_text(part: Message) -> str:
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
        charset = part.get_content_charset()
    except Exception:
        charset = None
    try:
        return data.decode(charset or "utf-8", "replace")
    except (LookupError, ValueError):
        return data.decode("utf-8", "replace")


def header_block(text: str) -> Message:
    """A text/rfc822-headers part as a Message, for its Message-ID and To."""
    try:
        return Parser(policy=compat32).parsestr(text.lstrip(), headersonly=True)
    except Exception:
        return Message()


def is_reply_subject(subject: str) -> bool:
    """Whether the subject starts with a reply prefix ("Re:", "AW:", "返信:")."""
    return _reply_prefix().match(lexicon.lower(subject)) is not None


@functools.cache  # the phrase files are read once per process
def _reply_prefix() -> re.Pattern[str]:
    words = lexicon.phrases(REPLY_PREFIX).every
    return re.compile(r"\s*" + lexicon.alternation(words) + r"\s*(\[\d+\])?\s*[:：]")


def _walk(msg: Message) -> Iterator[tuple[Message, bool, str]]:
    """Leaf parts with a flag telling whether they sit inside an attached message, and their
    content type. Iterative with a part budget, so hostile nesting cannot exhaust the stack or
    the clock."""
    stack: list[tuple[Message, bool]] = [(msg, False)]
    seen = 0
    while stack and seen < _MAX_PARTS:
        part, nested = stack.pop()
        seen += 1
        ctype = part.get_content_type()
        if part.is_multipart() and ctype not in _REPORT_PARTS:
            inner = nested or ctype.split("/")[0] == "message"
            payload = part.get_payload()  # a list, as is_multipart() said
            stack.extend((p, inner) for p in reversed(list(payload)) if isinstance(p, Message))
        else:
            yield part, nested, ctype


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


def _dsn_blocks(part: Message) -> list[Rcpt]:
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
        text = payload_text(part)
        blocks = [_dsn_fields(b) for b in re.split(r"\n\s*\n", text)]
    rcpts: list[Rcpt] = []
    for fields in blocks:
        if not ({"final-recipient", "original-recipient", "action"} & fields.keys()):
            continue
        address = ""
        for key in ("original-recipient", "final-recipient", "x-actual-recipient"):
            candidate = bare_address(fields.get(key, "").rpartition(";")[2], loose=True)
            if candidate:
                address = candidate
                break
        action = fields.get("action", "")
        rcpts.append(
            Rcpt(
                address=address,
                action=action.lower().split(" ")[0] if action else "",
                status=fields.get("status", ""),
                diagnostic=fields.get("diagnostic-code", ""),
            )
        )
    return rcpts


def _report_type(msg: Message) -> str:
    try:
        value = msg.get_param("report-type")
    except Exception:
        return ""
    return value.lower() if isinstance(value, str) else ""


def _facts(msg: Message) -> Mail:
    headers: dict[str, str] = {}  # decoded once per name, shared with Mail.header

    def get(name: str) -> str:
        key = name.lower()
        if key not in headers:
            headers[key] = header(msg, name)
        return headers[key]

    sender, display = from_address(get("From"))
    sent: date | None = None
    try:
        sent = parsedate_to_datetime(get("Date")).date()
    except Exception:
        sent = None
    plain: list[str] = []
    html_parts: list[str] = []
    every: list[str] = []
    calendar = ""
    dsn: list[Rcpt] = []
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
            originals.append(header_block(payload_text(part)))
            every.append(payload_text(part))
            continue
        if maintype == "multipart":
            ctype = "text/plain"  # a multipart without a usable boundary: read it as text
        elif maintype != "text" and ctype != "message/rfc822":
            if ctype == "application/ics":
                calendar += payload_text(part)
            continue
        body = payload_text(part)
        every.append(body)
        if ctype == "text/calendar":
            calendar += body
            continue
        if nested:
            continue
        if ctype == "text/html":
            html_parts.append(body)
        else:
            plain.append(body)
    originals.extend(_attached_messages(msg))
    if plain:
        text = "\n".join(plain)
        new_text = quotes.new_text(text)
    else:
        markup = "\n".join(html_parts)
        text = quotes.html_to_text(markup, cut_quotes=False)
        new_text = quotes.new_text(quotes.html_to_text(markup, cut_quotes=True))
    report = [quotes.explanation(body) for body in (plain or [text])]
    subject = get("Subject")
    reply_relation = bool(
        get("In-Reply-To")
        or get("References")
        or is_reply_subject(subject)
        or new_text.strip() != text.strip()
    )
    return Mail(
        msg=msg,
        subject=subject,
        from_address=sender,
        from_display=display,
        sent=sent,
        text=text,
        new_text=new_text,
        report_text="\n".join(report),
        all_text="\n".join(every),
        report_type=_report_type(msg),
        dsn=dsn,
        original_headers=originals,
        calendar=calendar,
        reply_relation=reply_relation,
        feedback_reports=feedback,
        headers=headers,
    )
