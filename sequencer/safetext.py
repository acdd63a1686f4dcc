"""Pure character checks for every value that ends up in an email, shared by the settings
file, the sequence files and contact intake, so each is refused at the door, not at send time.

Owns one rule: no line breaks (header injection; the email package refuses them with a bare
ValueError), no control characters (C0, DEL, C1), and no lone surrogates (U+D800-U+DFFF: not
characters; UTF-8 cannot encode them, so a send with one fails on every retry). Callers name
what they allow (a body keeps its line breaks and tabs). Non-ASCII letters are fine.
"""

from __future__ import annotations

import re

#: What str.splitlines() and the email package treat as a line break, plus NUL.
BREAKS = "\r\n\0\v\f\x1c\x1d\x1e\x85\u2028\u2029"
_BAD = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMES = {"\t": "tab", "\n": "line feed", "\r": "carriage return", "\0": "NUL", "\x1b": "escape"}


def problem(value: str, *, allow: str = "") -> str | None:
    """What is wrong with `value`, as the end of a sentence ("contains ..."), or None.

    A line break is named first, wherever it is (the injection is the graver fault). The
    value itself is never quoted back: it may be what would garble a terminal.
    """
    other = None
    for match in _BAD.finditer(value):
        char = match.group()
        if char in allow:
            continue
        code = f"U+{ord(char):04X}"
        name = f"{code}, {_NAMES[char]}" if char in _NAMES else code
        if char in BREAKS and "\n" not in allow:  # where lines are allowed, only \n makes one
            return f"contains a line break ({name}); keep it on one line"
        if other is not None:
            continue
        if 0xD800 <= ord(char) <= 0xDFFF:
            other = (
                f"contains {code}, a lone surrogate: not a character, and it cannot be sent "
                "(left by a broken encoding or a \\u escape); remove it"
            )
        else:
            other = f"contains the control character {name}; remove it"
    return other
