"""The stdlib's compat32 message tree, built several times faster.

`email.message_from_bytes(raw, policy=compat32)` walks the text one line at a time through a
generator and a stack of end-of-part predicates; on bounce-sized mail that is most of the cost
of classifying it. `message_from_bytes` here builds the *same* `email.message.Message` tree
(headers, payloads, preamble, epilogue, unix-from, default types, defects) with whole-text
regex searches: a part's extent is found once, by searching for its boundary line, instead of
testing every line against every enclosing boundary.

Exactness over cleverness: only the paths real mail takes are re-implemented, defects and all
(a body without its blank line, a multipart without a boundary or cut before its first one).
Anything else the FeedParser treats specially (a misplaced "From " line, a continuation line
first, boundary lines in a row, a carriage return anywhere) is handed to the stdlib parser
itself, so every input yields precisely the stdlib's tree. tests/test_mime.py compares the
two, structure and all, on every test message and on generated hostile ones.
"""

from __future__ import annotations

import re
from email import errors, utils
from email.message import Message
from email.parser import Parser
from email.policy import compat32

__all__ = ["boundary", "charset", "message_from_bytes", "message_from_string", "param"]

# A line the FeedParser accepts as a header line (email.feedparser.headerRE).
_HEADER_LINE = re.compile(r"From |[\041-\071\073-\176]*:|[\t ]")
# A run of ordinary fields: a name, a colon, the rest of the line, then continuation lines.
_FIELDS = re.compile(r"(?:[\041-\071\073-\176]+:[^\n]*(?:\n|\Z)(?:[ \t][^\n]*(?:\n|\Z))*)*")
# One ordinary field: its name and its value as compat32 stores it (leading blanks of the
# first line dropped, the line breaks of folding kept, the final line break dropped).
_FIELD = re.compile(r"([\041-\071\073-\176]+):[ \t]*([^\n]*(?:\n[ \t][^\n]*)*)")
_PLAIN_CTE = ("7bit", "8bit", "binary")


class _Unusual(Exception):
    """A path of the FeedParser this module does not re-implement: use the stdlib instead."""


def message_from_bytes(raw: bytes) -> Message:
    """`email.message_from_bytes(raw, policy=compat32)`, the same tree, built faster."""
    return message_from_string(raw.decode("ascii", "surrogateescape"))


def message_from_string(text: str, *, headersonly: bool = False) -> Message:
    """`Parser(policy=compat32).parsestr(text, headersonly)`, the same tree, built faster."""
    root = Message()
    try:
        if "\r" in text:
            raise _Unusual  # the FeedParser's universal newlines: not re-implemented
        if headersonly:
            body = _headers(text, root, 0, len(text))
            root._payload = text[body:]  # type: ignore[attr-defined]
        else:
            _part(text, root, 0, len(text))
            if root.get_content_maintype() == "multipart" and not root.is_multipart():
                root.defects.append(errors.MultipartInvariantViolationDefect())
    except Exception:  # _Unusual, or input odd enough to trip us: the stdlib decides
        return Parser(policy=compat32).parsestr(text, headersonly=headersonly)
    return root


def _headers(text: str, msg: Message, pos: int, end: int) -> int:
    """Read the header section of the part at `pos` into `msg`; return where its body starts."""
    if text.startswith("From ", pos, end):  # an mbox envelope line, first of the section
        newline = text.find("\n", pos, end)
        line_end = end if newline < 0 else newline
        msg.set_unixfrom(text[pos:line_end])
        pos = end if newline < 0 else newline + 1
    stop = _FIELDS.match(text, pos, end).end()  # type: ignore[union-attr]  # always matches
    if stop >= end:
        body = end
    elif text[stop] == "\n":
        body = stop + 1
    elif _HEADER_LINE.match(text, stop, end):
        raise _Unusual  # a header-like line the FeedParser treats specially
    else:  # the body starts without the blank line
        msg.defects.append(errors.MissingHeaderBodySeparatorDefect())
        body = stop
    msg._headers = [  # type: ignore[attr-defined]
        (field[1], field[2]) for field in _FIELD.finditer(text, pos, stop)
    ]
    return body


def _child(parent: Message, parent_type: str) -> Message:
    child = Message()
    if parent_type == "multipart/digest" and len(parent):
        child.set_default_type("message/rfc822")
    parent.attach(child)
    return child


def _part(text: str, msg: Message, pos: int, end: int) -> tuple[Message, str]:
    """Parse the part occupying text[pos:end] into `msg`.

    Returns the message the FeedParser would call its last one (the innermost part read
    last, or a multipart once its parts are read), whose trailing line break belongs to the
    enclosing boundary, with its content type.
    """
    body = _headers(text, msg, pos, end)
    ctype = msg.get_content_type()
    if ctype == "message/delivery-status":
        return _delivery_status(text, msg, body, end)
    maintype = ctype.split("/")[0]
    if maintype == "message":
        return _part(text, _child(msg, ctype), body, end)
    if maintype == "multipart":
        return _multipart(text, msg, ctype, body, end), ctype
    msg._payload = text[body:end]  # type: ignore[attr-defined]
    return msg, ctype


def _delivery_status(text: str, msg: Message, pos: int, end: int) -> tuple[Message, str]:
    """Blocks of fields separated by blank lines, each its own body-less Message."""
    while True:
        if pos < end and text[pos] == "\n":
            block_end = pos
        else:
            blank = text.find("\n\n", pos, end)
            block_end = end if blank < 0 else blank + 1
        last = _part(text, _child(msg, "message/delivery-status"), pos, block_end)
        pos = block_end + 1  # the blank line, or nothing at the end
        if pos >= end:
            return last


def _boundary(text: str, delimiter: str, pos: int, end: int) -> tuple[int, bool, int] | None:
    """The next line in text[pos:end] that is `delimiter`, optionally "--", then blanks:
    (where it starts, whether it closes the multipart, where the next line starts)."""
    while True:
        start = text.find(delimiter, pos, end)
        if start < 0:
            return None
        after = start + len(delimiter)
        newline = text.find("\n", after, end)
        line_end = end if newline < 0 else newline
        if start == 0 or text[start - 1] == "\n":
            rest = text[after:line_end]
            closing = rest.startswith("--")
            if not (rest[2:] if closing else rest).strip(" \t"):
                return start, closing, end if newline < 0 else newline + 1
        pos = start + 1


def _multipart(text: str, msg: Message, ctype: str, pos: int, end: int) -> Message:
    separator = boundary(msg)
    if separator is None:  # the body is kept as text
        msg.defects.append(errors.NoBoundaryInMultipartDefect())
        msg._payload = text[pos:end]  # type: ignore[attr-defined]
        return msg
    if str(msg.get("content-transfer-encoding", "8bit")).lower() not in _PLAIN_CTE:
        msg.defects.append(errors.InvalidMultipartContentTransferEncodingDefect())
    delimiter = "--" + separator
    found = _boundary(text, delimiter, pos, end)
    if found is None or found[1]:  # no opening boundary (a cut bounce): text up to any close
        msg.defects.append(errors.StartBoundaryNotFoundDefect())
        msg._payload = text[pos : end if found is None else found[0]]  # type: ignore[attr-defined]
        msg.epilogue = ""
        return msg
    if found[0] > pos:
        msg.preamble = text[pos : found[0] - 1]  # the last line break is the boundary's
    while True:
        pos = found[2]
        following = _boundary(text, delimiter, pos, end)
        if following is not None and following[0] == pos:
            raise _Unusual  # boundary lines in a row: the stdlib skips them all
        part_end = end if following is None else following[0]
        last, last_type = _part(text, _child(msg, ctype), pos, part_end)
        if last_type.startswith("multipart/"):
            if last.epilogue == "":
                last.epilogue = None
            elif last.epilogue is not None and last.epilogue.endswith("\n"):
                last.epilogue = last.epilogue[:-1]
        else:
            payload = last._payload  # type: ignore[attr-defined]
            if isinstance(payload, str) and payload.endswith("\n"):
                last._payload = payload[:-1]  # type: ignore[attr-defined]
        if following is None:
            msg.defects.append(errors.CloseBoundaryNotFoundDefect())
            return msg
        if following[1]:
            msg.epilogue = text[following[2] : end]
            return msg
        found = following


# Content-Type values whose parameters need none of get_param's quoting or RFC 2231 rules.
_PLAIN_PARAMS = re.compile(r"[^\"*\\]*")
_MISSING = object()


def param(msg: Message, name: str) -> object:
    """`msg.get_param(name)` with its answer for a missing one as `_MISSING`, and the
    same answer otherwise, without the stdlib's general parameter decoding when the
    Content-Type value is plain ASCII without quotes, stars or backslashes."""
    value = msg.get("content-type", _MISSING)
    if value is _MISSING:
        return _MISSING
    if not (isinstance(value, str) and value.isascii() and _PLAIN_PARAMS.fullmatch(value)):
        return msg.get_param(name, _MISSING)
    name = name.lower()
    for segment in value.split(";"):
        key, _, found = segment.partition("=")
        if key.strip().lower() == name:
            return utils.unquote(found.strip())
    return _MISSING


def boundary(msg: Message) -> str | None:
    """`msg.get_boundary()`, by way of `param`."""
    found = param(msg, "boundary")
    if found is _MISSING:
        return None
    return utils.collapse_rfc2231_value(found).rstrip()  # type: ignore[arg-type]


def charset(msg: Message) -> str | None:
    """`msg.get_content_charset()`, by way of `param`."""
    found = param(msg, "charset")
    if isinstance(found, str) and found.isascii():
        return found.lower()
    return msg.get_content_charset() if found is not _MISSING else None
