"""sequencer.mime builds exactly the tree the stdlib's compat32 parser builds.

The classifier's verdicts are only as right as the tree it reads, so the fast parser is held
to the stdlib's own output: every test message, then generated mail that walks the
FeedParser's odd corners (misplaced From lines, boundaries in a row, missing close
boundaries, digests, delivery-status blocks, truncated headers).
"""

from __future__ import annotations

import email
import email.policy
from email.message import Message
from email.parser import Parser
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_classify import _cases, _raw

from sequencer.mime import (
    _MISSING,
    boundary,
    charset,
    message_from_bytes,
    message_from_string,
    param,
)


def tree(msg: Message) -> Any:
    """Everything the parser decides about a message, recursively, in comparable form."""
    payload = msg._payload  # type: ignore[attr-defined]
    if isinstance(payload, list):
        payload = [tree(p) for p in payload]
    return (
        msg.get_unixfrom(),
        list(msg._headers),  # type: ignore[attr-defined]
        [type(d).__name__ for d in msg.defects],
        msg.preamble,
        msg.epilogue,
        msg.get_default_type(),
        payload,
    )


def stdlib(text: str, headersonly: bool = False) -> Any:
    return tree(Parser(policy=email.policy.compat32).parsestr(text, headersonly=headersonly))


def test_every_test_message_parses_as_the_stdlib_parses_it() -> None:
    cases = _cases()
    assert len(cases) > 600
    for case in cases:
        raw = _raw(case).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        want = tree(email.message_from_bytes(raw, policy=email.policy.compat32))
        assert tree(message_from_bytes(raw)) == want, case.label


def test_a_multipart_report_keeps_its_structure() -> None:
    """A concrete anchor for the generated cases: the shape of a real DSN."""
    text = (
        "From: MAILER-DAEMON@example.org\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\n'
        "\n"
        "preamble\n"
        "--b1\n"
        "Content-Type: text/plain\n"
        "\n"
        "Mail to ann@example.com failed.\n"
        "\n"
        "--b1\n"
        "Content-Type: message/delivery-status\n"
        "\n"
        "Reporting-MTA: dns; mx.example.org\n"
        "\n"
        "Final-Recipient: rfc822; ann@example.com\n"
        "Status: 5.1.1\n"
        "\n"
        "--b1\n"
        "Content-Type: message/rfc822\n"
        "\n"
        "Message-ID: <1@example.net>\n"
        "Subject: Hello\n"
        "\n"
        "Body\n"
        "--b1--\n"
        "epilogue\n"
    )
    msg = message_from_string(text)
    assert tree(msg) == stdlib(text)
    text_part, status, original = msg._payload  # type: ignore[attr-defined]
    assert text_part._payload == "Mail to ann@example.com failed.\n"
    assert [b.get("Status") for b in status._payload] == [None, "5.1.1"]
    assert original._payload[0]["Message-ID"] == "<1@example.net>"
    assert msg.preamble == "preamble" and msg.epilogue == "epilogue\n"


# Lines chosen to reach every branch of the FeedParser: ordinary and odd header lines,
# continuation lines, blank lines, boundary lines of two nested multiparts (opening, closing,
# with trailing blanks or junk), and body text that resembles each of them.
_LINES = [
    "Subject: hello",
    "X-Empty:",
    "X-Blank:   ",
    "\tfolded continuation",
    "  ",
    "From someone@example.org Mon Jan  1 00:00:00 2024",
    "From : not an envelope",
    ": no name",
    "no colon here",
    "Name With Space: value",
    "Content-Type: multipart/mixed; boundary=b1",
    'Content-Type: multipart/alternative; boundary="b2"',
    "Content-Type: multipart/digest; boundary=b2",
    "Content-Type: multipart/mixed",
    "Content-Type: message/rfc822",
    "Content-Type: message/delivery-status",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Type: texty",
    "Content-Transfer-Encoding: base64",
    "",
    "",
    "--b1",
    "--b1--",
    "--b1 \t",
    "--b1--  ",
    "--b1x",
    "--b1---",
    "--b1\x0c",
    " --b1",
    "--b2",
    "--b2--",
    "body text",
    "caf\udce9 8-bit",
    "Final-Recipient: rfc822; ann@example.com",
]


@settings(max_examples=1500, deadline=None)
@given(
    opening=st.sampled_from(
        [
            "",
            "Content-Type: multipart/mixed; boundary=b1\n\n--b1\n",
            "Content-Type: multipart/mixed; boundary=b2\nContent-Transfer-Encoding: base64\n\n",
        ]
    ),
    lines=st.lists(st.sampled_from(_LINES), max_size=40),
    final_newline=st.booleans(),
    carriage_return=st.booleans(),
)
def test_generated_mail_parses_as_the_stdlib_parses_it(
    opening: str, lines: list[str], final_newline: bool, carriage_return: bool
) -> None:
    text = opening + "\n".join(lines) + ("\n" if final_newline else "")
    if carriage_return:
        text = text.replace("\n", "\r\n", 1)
    assert tree(message_from_string(text)) == stdlib(text)
    assert tree(message_from_string(text, headersonly=True)) == stdlib(text, headersonly=True)


def _part(depth: int) -> st.SearchStrategy[str]:
    leaf = st.sampled_from(
        [
            "Content-Type: text/plain\n\nhello\n",
            "Subject: no body",
            "Content-Type: text/html\n\n<p>x</p>\n\n",
            "\nheaderless body\n",
            "Content-Type: message/delivery-status\n\nA: 1\n\n\nB: 2\nC: 3\n\n",
            "Content-Type: message/delivery-status\n\n",
            "Content-Type: message/rfc822\n\nSubject: inner\n\ninner body\n",
        ]
    )
    if depth == 0:
        return leaf
    return leaf | st.builds(
        _multipart,
        st.sampled_from(["mixed", "digest", "report"]),
        st.sampled_from([f"b{depth}", "same"]),
        st.lists(_part(depth - 1), min_size=1, max_size=3),
        st.booleans(),
        st.sampled_from(["", "preamble\n", "\n"]),
        st.sampled_from(["", "epilogue\n", "\n\n"]),
        st.sampled_from(["\n", "", "\n--same\n"]),
    )


def _multipart(
    subtype: str,
    boundary: str,
    parts: list[str],
    closed: bool,
    preamble: str,
    epilogue: str,
    after_part: str,
) -> str:
    text = f"Content-Type: multipart/{subtype}; boundary={boundary}\n\n{preamble}"
    for part in parts:
        text += f"--{boundary}\n{part}{after_part}"
    return text + (f"--{boundary}--\n{epilogue}" if closed else "")


@settings(max_examples=500, deadline=None)
@given(_part(3))
def test_generated_nested_mime_parses_as_the_stdlib_parses_it(text: str) -> None:
    assert tree(message_from_string(text)) == stdlib(text)


_VALUE_PIECES = st.sampled_from(
    [
        "text/plain",
        "multipart/mixed",
        ";",
        " ",
        "=",
        '"',
        "*",
        "\\",
        "<",
        ">",
        "charset",
        "Charset",
        "boundary",
        "name*0",
        "utf-8",
        "ISO-8859-1",
        "b1",
        "us-ascii''x",
        "\udce9",
    ]
)


@settings(max_examples=2000, deadline=None)
@given(
    value=st.one_of(
        st.lists(_VALUE_PIECES, max_size=14).map("".join),
        st.lists(
            st.tuples(
                st.sampled_from(["", " ", "  "]),
                st.sampled_from(["charset", "Charset", "boundary", "name*0", "name*", "bare"]),
                st.sampled_from(["=", " = ", ""]),
                st.sampled_from(
                    [
                        "utf-8",
                        '"utf-8"',
                        "<b1>",
                        '"a;b"',
                        '"a\\"b"',
                        "us-ascii''x",
                        "\udce9",
                        "",
                        "a b ",
                    ]
                ),
            ).map("".join),
            max_size=4,
        ).map(lambda params: "text/plain" + "".join(";" + p for p in params)),
    ),
    present=st.booleans(),
)
def test_parameters_read_as_the_stdlib_reads_them(value: str, present: bool) -> None:
    """param, boundary and charset answer exactly as get_param, get_boundary and
    get_content_charset, whatever the quoting, RFC 2231 stars or 8-bit bytes."""
    msg = Message()
    if present:
        msg._headers = [("Content-Type", value)]  # type: ignore[attr-defined]
    for name in ("charset", "boundary", "Boundary", "name", "text/plain"):
        assert outcome(param, msg, name) == outcome(msg.get_param, name, _MISSING)
    assert outcome(boundary, msg) == outcome(msg.get_boundary)
    assert outcome(charset, msg) == outcome(msg.get_content_charset)


def outcome(function: Any, *args: Any) -> Any:
    """What a call returns, or the type of what it raises."""
    try:
        return function(*args)
    except Exception as error:
        return type(error)
