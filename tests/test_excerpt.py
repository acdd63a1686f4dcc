"""The agenda's excerpt: what a reply says in its own words, without what it quotes, in any
language (only the structure mail clients share is read), bounded."""

from __future__ import annotations

from pathlib import Path

from sequencer.classify import classify_parsed
from sequencer.excerpt import LIMIT, excerpt


def _mail(body: str, kind: str = "text/plain") -> bytes:
    head = f"From: Ann <ann@prospect.test>\r\nContent-Type: {kind}; charset=utf-8\r\n\r\n"
    return (head + body.replace("\n", "\r\n")).encode()


def test_the_quote_and_its_attribution_are_left_out_whatever_the_language() -> None:
    de = "Gerne, rufen Sie mich an.\n\nAm 01.12.2026 um 09:00 schrieb Sam <s@v.test>:\n> Hallo\n"
    assert excerpt(_mail(de)) == "Gerne, rufen Sie mich an."
    ja = "来週お電話ください。\n\n2026年12月1日(火) Sam <s@v.test>:\n> こんにちは\n"
    assert excerpt(_mail(ja)) == "来週お電話ください。"


def test_an_outlook_header_block_and_a_signature_end_the_new_text() -> None:
    outlook = (
        "Sure, Friday works.\n\nFrom: Sam Seller <sales@vendor.test>\n"
        "Sent: Tuesday, December 1, 2026 9:00 AM\nTo: Ann\n\nHi Ann, a short note.\n"
    )
    assert excerpt(_mail(outlook)) == "Sure, Friday works."
    signed = "Yes, call me.\n-- \nAnn Lee\nHead of Ops\n"
    assert excerpt(_mail(signed)) == "Yes, call me."
    original = "Not now.\n-----Original Message-----\nFrom: sales@vendor.test\n"
    assert excerpt(_mail(original)) == "Not now."


def test_html_mail_is_read_as_text_before_its_blockquote() -> None:
    body = (
        "<html><head><style>p {color: red}</style></head><body><p>Yes&nbsp;please,</p>"
        "<div>Thursday at 10</div><blockquote>Hi Ann, a short note.</blockquote></body></html>"
    )
    assert excerpt(_mail(body, "text/html")) == "Yes please, Thursday at 10"


def test_it_is_bounded_and_never_raises() -> None:
    long = excerpt(_mail("word " * 1000))
    assert len(long) == LIMIT and long.endswith("…")
    odd = b"From: a@b.test\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\n\xff\xfeHi"
    assert isinstance(excerpt(odd), str)  # an unknown charset: no crash, whatever it shows


def test_the_classifiers_parse_gives_the_excerpt_the_bytes_give() -> None:
    """The daemon reads the excerpt from the message the classifier already parsed; on every
    message of the corpora, as IMAP hands it over (CRLF) and with bare LF line ends, that is
    the excerpt a fresh parse of the bytes gives."""
    tests = Path(__file__).parent
    files = [p for d in ("corpus", "mail") for p in sorted((tests / d).rglob("*"))]
    reused = 0
    for path in (p for p in files if p.is_file() and p.suffix not in {".csv", ".md"}):
        lf = path.read_bytes().replace(b"\r\n", b"\n")
        for raw in (lf, lf.replace(b"\n", b"\r\n")):
            _, parsed = classify_parsed(raw)
            reused += parsed is not None
            assert excerpt(raw, parsed=parsed) == excerpt(raw), path
    assert reused > 500
    # A lone CR, which the classifier makes a line end: parsed again, the bytes' own excerpt.
    lone_cr = _mail("Yes,\rcall me.").replace(b"\r\n", b"\n")
    assert excerpt(lone_cr, parsed=classify_parsed(lone_cr)[1]) == excerpt(lone_cr)
