"""Templates and the bytes sent: what a recipient's mail client will see."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta, timezone
from email.header import decode_header
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sequencer import render
from sequencer.errors import TemplateError
from sequencer.render import (
    analyse,
    build_message,
    check_header_value,
    new_message_id,
    reply_subject,
)

SENDER = {"name": "Sam Seller", "address": "sales@vendor.test"}
WHEN = datetime(2025, 3, 4, 9, 30, 15, tzinfo=UTC)


def build(**kw: object) -> bytes:
    args: dict[str, object] = {
        "from_address": "sales@vendor.test",
        "from_name": "Sam Seller",
        "to_address": "jo@acme.test",
        "subject": "Notes from our call",
        "body": "Hi Jo,\n\nThanks.\n",
        "message_id": "<first@vendor.test>",
        "date": WHEN,
    }
    args.update(kw)
    out = build_message(**args)  # type: ignore[arg-type]
    assert out.message_id == args["message_id"]
    assert out.subject == str(args["subject"]).strip()  # what clients show
    return out.data


def text_of(msg: EmailMessage) -> str:
    """The body as a mail client shows it (the wire form has CRLF line ends)."""
    content = msg.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def header_lines(data: bytes) -> list[bytes]:
    head = data.split(b"\r\n\r\n", 1)[0]
    return head.split(b"\r\n")


# --- analyse -------------------------------------------------------------------------------


def test_analyse_finds_contact_and_sender_fields() -> None:
    use = analyse(
        "Hi {{ contact.first_name }} at {{ contact['company'] }}, "
        "{% if contact.role %}{{ contact.role | upper }}{% endif %} {{ sender.name }}"
    )
    assert use.contact_fields == {"first_name", "company", "role"}
    assert use.sender_fields == {"name"}
    assert use.unknown_names == frozenset()
    assert not use.dynamic_access


def test_analyse_reports_unknown_names_but_not_own_variables_or_globals() -> None:
    use = analyse(
        "{% set x = 1 %}{{ x }}{% for i in range(2) %}{{ i }}{% endfor %}{{ foo }}{{ bar.baz }}"
    )
    assert use.unknown_names == {"foo", "bar"}


def test_analyse_flags_computed_keys() -> None:
    assert analyse("{{ contact[contact.first_name] }}").dynamic_access
    assert not analyse("{{ contact.first_name }}").dynamic_access


def test_analyse_of_plain_text_uses_nothing() -> None:
    use = analyse("Just text, no {placeholders}.")
    assert use == render.TemplateUse(frozenset(), frozenset(), frozenset(), False)


@pytest.mark.parametrize(
    ("source", "line"),
    [("{{ contact.first_name }", 1), ("a\nb\n{% if %}", 3), ("{% for x in y %}", 1)],
)
def test_analyse_syntax_error_gives_the_template_line(source: str, line: int) -> None:
    with pytest.raises(TemplateError, match=rf"^line {line} of the template: "):
        analyse(source)


# --- render --------------------------------------------------------------------------------


def test_render_fills_contact_and_sender_values() -> None:
    out = render.render(
        "Hi {{ contact.first_name }},\n{{ sender.name }} <{{ sender.address }}>\n",
        {"first_name": "Zoë", "email": "z@acme.test"},
        SENDER,
    )
    assert out == "Hi Zoë,\nSam Seller <sales@vendor.test>\n"


def test_render_keeps_the_trailing_newline_and_does_not_escape_html() -> None:
    out = render.render("{{ contact.company }}\n", {"company": "Smith & <Sons>"}, SENDER)
    assert out == "Smith & <Sons>\n"


def test_render_with_a_missing_field_is_an_error_not_a_blank() -> None:
    with pytest.raises(TemplateError, match="does not have") as info:
        render.render("Hi {{ contact.first_name }}", {"email": "jo@acme.test"}, SENDER)
    assert "first_name" in str(info.value)


def test_a_missing_field_used_in_a_condition_is_an_error() -> None:
    with pytest.raises(TemplateError):
        render.render("{% if contact.vip %}VIP{% endif %}", {}, SENDER)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ contact.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
    ],
)
def test_the_sandbox_blocks_escapes(source: str) -> None:
    with pytest.raises(TemplateError, match="template tried something the sandbox forbids"):
        render.render(source, {"first_name": "Jo"}, SENDER)


@pytest.mark.parametrize(
    "source",
    ["{{ 1 / 0 }}", "{{ contact.first_name + 1 }}", "{{ range(10**7) | list | length }}"],
)
def test_runtime_errors_in_a_template_are_template_errors(source: str) -> None:
    # The worker only catches TemplateError: anything else would crash the daemon.
    with pytest.raises(TemplateError, match="template failed while rendering"):
        render.render(source, {"first_name": "Jo"}, SENDER)


@settings(max_examples=60, deadline=None)
@given(value=st.text(max_size=40))
def test_values_are_inserted_verbatim_never_evaluated(value: str) -> None:
    assert render.render("[{{ contact.x }}]", {"x": value}, SENDER) == f"[{value}]"


# --- message ids and subjects --------------------------------------------------------------


def test_new_message_id_is_unique_and_on_the_domain() -> None:
    ids = [new_message_id("vendor.test") for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for mid in ids[:50]:
        assert re.fullmatch(r"<[0-9a-f]{32}@vendor\.test>", mid)


@pytest.mark.parametrize(
    ("first", "reply"),
    [
        ("Notes from our call", "Re: Notes from our call"),
        ("Re: Notes", "Re: Notes"),
        ("RE: Notes", "RE: Notes"),
        ("re:Notes", "re:Notes"),
        ("  Re: Notes", "Re: Notes"),
        ("Fwd: Notes", "Re: Fwd: Notes"),
        ("Regarding the plan", "Re: Regarding the plan"),
        ("Café ☕ notes", "Re: Café ☕ notes"),
    ],
)
def test_reply_subject(first: str, reply: str) -> None:
    assert reply_subject(first) == reply


@settings(max_examples=100, deadline=None)
@given(subject=st.text(max_size=30))
def test_reply_subject_never_doubles_re(subject: str) -> None:
    once = reply_subject(subject)
    assert once[:3].lower() == "re:"
    assert reply_subject(once) == once
    assert not re.match(r"(?i)re:\s*re:", once) or re.match(r"(?i)\s*re:\s*re:", subject)


# --- build_message -------------------------------------------------------------------------


def test_step_1_message_headers() -> None:
    data = build()
    msg = parse(data)
    assert msg["From"].addresses[0].display_name == "Sam Seller"
    assert msg["From"].addresses[0].addr_spec == "sales@vendor.test"
    assert msg["To"].addresses[0].addr_spec == "jo@acme.test"
    assert msg["Subject"] == "Notes from our call"
    assert parsedate_to_datetime(msg["Date"]) == WHEN
    assert msg["Message-ID"] == "<first@vendor.test>"
    assert msg["In-Reply-To"] is None
    assert msg["References"] is None
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert text_of(msg) == "Hi Jo,\n\nThanks.\n"
    assert len(msg.get_all("From") or []) == 1


def test_later_steps_thread_onto_the_earlier_ones() -> None:
    chain = ["<a@vendor.test>", "<b@vendor.test>", "<c@vendor.test>"]
    msg = parse(build(message_id="<d@vendor.test>", subject="Re: Notes", thread=chain))
    assert msg["Message-ID"] == "<d@vendor.test>"
    assert msg["In-Reply-To"] == "<c@vendor.test>"
    assert msg["References"].split() == chain


def test_a_long_reference_chain_stays_whole_and_folds() -> None:
    chain = [new_message_id("vendor.test") for _ in range(30)]
    data = build(thread=chain)
    assert parse(data)["References"].split() == chain
    assert all(len(line) <= 998 for line in header_lines(data))


def test_the_date_keeps_its_offset() -> None:
    when = datetime(2025, 7, 1, 17, 0, tzinfo=timezone(timedelta(hours=2)))
    data = build(date=when)
    assert b"Date: Tue, 01 Jul 2025 17:00:00 +0200\r\n" in data
    assert parsedate_to_datetime(parse(data)["Date"]) == when


def test_a_body_without_final_newline_gets_one() -> None:
    assert parse(build(body="Bye"))["Subject"] == "Notes from our call"
    assert text_of(parse(build(body="Bye"))) == "Bye\n"


def test_non_ascii_display_name_and_subject_round_trip_rfc2047() -> None:
    data = build(from_name="Zoë Müller", subject="Café ☕ notes")
    head = b"\r\n".join(header_lines(data))
    assert head.isascii()
    assert b"=?utf-8?" in head
    msg = parse(data)
    assert msg["From"].addresses[0].display_name == "Zoë Müller"
    assert shown_display_name(data) == "Zoë Müller"
    assert msg["From"].addresses[0].addr_spec == "sales@vendor.test"
    assert msg["Subject"] == "Café ☕ notes"


@pytest.mark.parametrize(
    "text",
    [
        "h åtmkçjonf wÖörisÖpe qdbösèööel cöäw øjlood eüunoq",
        "shvøöømtsÜñø Ücèpzäl Äxfüøg åzx bèctÜÜzk øoa",
        "Ørjan Ødegård Åsmund Æbeltoft Sørensen Hansen, Vertrieb & Beratung Europa",
        "  two  spaces  kept  in  a  long  Zoë  Müller  subject  line  that  folds  ",
    ],
)
def test_long_non_ascii_headers_fold_without_losing_spaces(text: str) -> None:
    # Python 3.11's folder used to drop the space at a fold between two encoded words.
    data = build(from_name=text.strip(), subject=text.strip())
    assert all(len(line) <= 78 for line in header_lines(data))
    assert shown_display_name(data) == text.strip()
    assert parse(data)["Subject"] == text.strip()


def test_a_display_name_with_punctuation_is_quoted() -> None:
    name = 'Sam "The Closer" Seller, Sales'
    msg = parse(build(from_name=name))
    assert msg["From"].addresses[0].display_name == name
    assert len(msg["From"].addresses) == 1


def test_an_empty_display_name_sends_the_bare_address() -> None:
    msg = parse(build(from_name=""))
    assert msg["From"].addresses[0].display_name == ""
    assert msg["From"].addresses[0].addr_spec == "sales@vendor.test"


def test_non_ascii_body_round_trips_as_utf8() -> None:
    body = "Grüße aus Köln, Zoë — 日本語もOK ☕\nZweite Zeile\n"
    data = build(body=body)
    assert data.isascii()  # quoted-printable: no 8BITMIME needed
    msg = parse(data)
    assert msg.get_content_charset() == "utf-8"
    assert text_of(msg) == body


def test_a_long_subject_folds_and_round_trips() -> None:
    subject = "A really quite long subject line about " + "several things " * 20
    data = build(subject=subject.strip())
    assert parse(data)["Subject"] == subject.strip()
    assert all(len(line) <= 998 for line in header_lines(data))


@pytest.mark.parametrize(
    "body",
    [
        "x" * 1200 + "\n",
        "Short line\n" + "word " * 400 + "\nend\n",
        "ü" * 1500 + "\n",
    ],
)
def test_lines_are_crlf_and_at_most_998_characters(body: str) -> None:
    data = build(body=body, from_name="Zoë Müller", subject="Café ☕ notes")
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    assert text_of(parse(data)) == body


@pytest.mark.parametrize("field", ["subject", "from_name"])
@pytest.mark.parametrize(
    "evil",
    [
        "Hi\r\nBcc: victim@x.test",
        "Hi\nBcc: victim@x.test",
        "Hi\rBcc: victim@x.test",
        "Hi\x00there",
        "Hi\x0bBcc: victim@x.test",
        "Hi\x0cthere",
        "Hi\x1cthere",
        "Hi\x85there",
        "Hi\u2028Bcc: victim@x.test",
        "Hi\u2029there",
        "trailing newline\n",
    ],
)
def test_line_breaks_in_headers_are_refused(field: str, evil: str) -> None:
    with pytest.raises(TemplateError, match="line break; header values must be one line"):
        build(**{field: evil})


def test_other_control_characters_in_headers_are_refused() -> None:
    with pytest.raises(TemplateError, match="control character"):
        build(subject="Hi\x07there")
    with pytest.raises(TemplateError, match="control character"):
        check_header_value("display name", "a\x1bb")
    check_header_value("subject", "a\tb")  # a tab is fine


@pytest.mark.parametrize("subject", ["", "   "])
def test_an_empty_subject_is_refused(subject: str) -> None:
    with pytest.raises(TemplateError, match="subject renders empty"):
        build(subject=subject)


@pytest.mark.parametrize("body", ["", "  \n\n "])
def test_an_empty_body_is_refused(body: str) -> None:
    with pytest.raises(TemplateError, match="body renders empty"):
        build(body=body)


def shown_display_name(data: bytes) -> str:
    """The From display name as RFC 2047 defines it (whitespace between adjacent encoded
    words is dropped; the stdlib address parser keeps it, which is its quirk, not ours)."""
    raw = email.message_from_bytes(data, policy=email.policy.compat32)["From"]
    unfolded = re.sub(r"\r?\n(?=[ \t])", "", str(raw))
    phrase = unfolded.rpartition(" <")[0]
    parts = decode_header(phrase)
    return "".join(p.decode(c or "ascii") if isinstance(p, bytes) else p for p, c in parts).strip()


_NAMES = st.lists(
    st.text(st.characters(codec="utf-8", categories=("L",)), min_size=1, max_size=12),
    min_size=0,
    max_size=4,
).map(" ".join)
_SUBJECT_CHARS = st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs"))
_BODY_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"))


@settings(max_examples=60, deadline=None)
@given(
    name=_NAMES,
    subject=st.text(_SUBJECT_CHARS, min_size=1, max_size=120).filter(str.strip),
    body=st.text(_BODY_CHARS, min_size=1, max_size=300).filter(str.strip),
)
def test_messages_round_trip(name: str, subject: str, body: str) -> None:
    data = build(from_name=name, subject=subject, body=body)
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    assert b"\n" not in data.replace(b"\r\n", b"")
    msg = parse(data)
    assert shown_display_name(data) == name
    assert msg["From"].addresses[0].addr_spec == "sales@vendor.test"
    assert msg["Subject"] == subject.strip()
    assert text_of(msg).splitlines() == body.splitlines()


def test_list_unsubscribe_is_absent_unless_the_mailbox_asks_for_it() -> None:
    assert parse(build())["List-Unsubscribe"] is None


def test_list_unsubscribe_mailto_goes_back_to_the_mailbox_with_the_subject_we_read() -> None:
    msg = parse(build(unsubscribe="sales@vendor.test"))
    assert msg["List-Unsubscribe"] == "<mailto:sales@vendor.test?subject=unsubscribe>"


def test_what_a_mail_client_sends_for_list_unsubscribe_is_read_as_a_removal_request() -> None:
    """Clients answer a mailto List-Unsubscribe with a bare message: subject, no body."""
    from sequencer.classify import Verdict, classify

    raw = (
        b"From: Jo <jo@acme.test>\r\nTo: sales@vendor.test\r\nSubject: unsubscribe\r\n"
        b"Date: Wed, 05 Mar 2025 10:00:00 +0000\r\nMessage-ID: <u1@acme.test>\r\n\r\n"
    )
    assert classify(raw).verdict == Verdict.UNSUBSCRIBE_REQUEST


# --- defaulted_fields: which fields a template renders without --------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "Hi {{ contact.first_name | default('there') }},",
        "Hi {{ contact.first_name | d('there') | title }},",
        "Hi {{ contact['first_name'] | default('there') }},",
        "Hi{% if contact.first_name is defined %} {{ contact.first_name }}{% endif %},",
        "Hi {{ contact.first_name if contact.first_name is defined else 'there' }},",
        "{% if contact.first_name is defined and contact.first_name %}Hi {{ contact.first_name }},"
        "{% else %}Hi,{% endif %}",
    ],
)
def test_a_field_read_only_with_a_fallback_renders_for_a_contact_without_it(source: str) -> None:
    use = analyse(source)
    assert use.defaulted_fields == {"first_name"} == use.contact_fields
    assert render.render(source, {}, SENDER).startswith("Hi")


@pytest.mark.parametrize(
    "source",
    [
        "Hi {{ contact.first_name }},",
        "Hi {{ contact.first_name | default('there') }}, {{ contact.first_name }}",
        "Hi {{ contact.first_name | trim | default('there') }},",
        "Hi{% if contact.first_name %} {{ contact.first_name }}{% endif %},",
        "Hi{% if contact.first_name is defined %}!{% else %} {{ contact.first_name }}{% endif %}",
        "Hi {{ contact.first_name or 'there' }},",
    ],
)
def test_a_field_read_once_without_a_fallback_is_not_defaulted(source: str) -> None:
    """Each of these fails to render when the contact lacks the field."""
    assert analyse(source).defaulted_fields == frozenset()
    with pytest.raises(TemplateError, match="does not have"):
        render.render(source, {}, SENDER)


def test_a_fallback_on_one_field_does_not_cover_another() -> None:
    use = analyse("{{ contact.role | default(contact.company) }} at {{ contact.company }}")
    assert use.contact_fields == {"role", "company"}
    assert use.defaulted_fields == {"role"}


# --- budgets: what one render may cost ------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 'x' * 10**9 }}", "repeating a value 1000000000 times would exceed 256000"),
        ("{{ 10**9 * 'ab' }}", "repeating a value 1000000000 times"),
        ("{{ [0] * 10**9 }}", "repeating a value 1000000000 times"),
        ("{{ 9 ** 100000000 }}", "9 ** 100000000 is too large a number"),
    ],
)
def test_arithmetic_that_builds_a_huge_value_is_refused_before_it_runs(
    source: str, message: str
) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        render.render(source, {}, SENDER)


def test_ordinary_arithmetic_still_works() -> None:
    source = "{{ 'ab' * 3 }} {{ 3 * [1] | length }} {{ 2 ** 10 }} {{ 1.5 * 2 }} {{ 2 ** 0.5 }}"
    assert render.render(source, {}, SENDER) == "ababab 3 1024 3.0 1.4142135623730951"


def test_output_past_the_budget_stops_the_render() -> None:
    source = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
    with pytest.raises(TemplateError, match="template renders more than 1000 characters"):
        render.render(source, {}, SENDER, max_chars=1000)
    assert render.render("{{ 'x' * 1000 }}", {}, SENDER, max_chars=1000) == "x" * 1000


def test_a_macro_that_calls_itself_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match="template recurses too deeply"):
        render.render("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", {}, SENDER)


def test_render_step_shares_one_budget_and_names_the_part_that_failed() -> None:
    contact = {"first_name": "Zoë"}
    assert render.render_step("Hi {{ contact.first_name }}", "Body", contact, SENDER) == (
        "Hi Zoë",
        "Body",
    )
    assert render.render_step(None, "Body", contact, SENDER) == ("", "Body")
    with pytest.raises(TemplateError, match=r"^body: template renders more than"):
        render.render_step("x" * 600, "y" * 600, contact, SENDER, max_chars=1000)
    with pytest.raises(TemplateError, match=r"^subject: template uses a value"):
        render.render_step("{{ contact.nope }}", "y", contact, SENDER)


@pytest.mark.parametrize("body", ["Hi \udcff", "Hi \x07", "Hi \x1b[2J"])
def test_a_body_that_cannot_be_sent_is_a_template_error(body: str) -> None:
    """A lone surrogate used to fail to encode on every retry (a bare UnicodeEncodeError)."""
    with pytest.raises(TemplateError, match=r"^body contains"):
        build(body=body)


def test_a_subject_with_a_lone_surrogate_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match=r"^subject contains U\+D800, a lone surrogate"):
        build(subject="Hi \ud800")
    assert parse(build(subject="Hi\tZoë"))["Subject"] == "Hi\tZoë"  # a tab is encoded


def _by_the_email_package(thread: list[str], unsubscribe: str | None, **kw: str) -> bytes:
    """The message as build_message wrote it with the email package (headers set raw,
    `set_content`, `as_bytes`) before it wrote the part itself."""
    msg = EmailMessage(policy=email.policy.SMTP)
    name, subject = kw["from_name"], kw["subject"].strip()
    if name.isascii():
        msg.set_raw("From", email.utils.formataddr((name, "sales@vendor.test")))
    else:
        addr = "<sales@vendor.test>"
        lines = render._encoded_words("From", name).split("\r\n")
        if len(lines[-1]) + 1 + len(addr) <= 78 - (len("From: ") if len(lines) == 1 else 0):
            lines[-1] += f" {addr}"
        else:
            lines.append(f" {addr}")
        msg.set_raw("From", "\r\n".join(lines))
    msg.set_raw("To", kw["to_address"])
    if subject.isascii():
        msg.set_raw("Subject", subject)
    else:
        msg.set_raw("Subject", render._encoded_words("Subject", subject))
    msg.set_raw("Date", email.utils.format_datetime(WHEN))
    msg.set_raw("Message-ID", "<first@vendor.test>")
    if thread:
        msg.set_raw("In-Reply-To", thread[-1])
        msg.set_raw("References", " ".join(thread))
    if unsubscribe:
        msg.set_raw("List-Unsubscribe", f"<mailto:{unsubscribe}?subject=unsubscribe>")
    body = kw["body"] if kw["body"].endswith("\n") else kw["body"] + "\n"
    short = all(len(line) <= 998 for line in body.splitlines())
    cte = "7bit" if body.isascii() and short else "quoted-printable"
    msg.set_content(body, charset="utf-8", cte=cte)
    return msg.as_bytes()


@settings(max_examples=150, deadline=None)
@given(
    name=_NAMES,
    subject=st.text(_SUBJECT_CHARS, min_size=1, max_size=120).filter(str.strip),
    body=st.one_of(
        st.text(_BODY_CHARS, min_size=1, max_size=300),
        st.text(st.sampled_from("ab =.\t\n"), min_size=1, max_size=2500),
        st.text(st.sampled_from("aé \n"), min_size=1, max_size=2500),
    ).filter(str.strip),
    thread=st.lists(st.from_regex(r"<[a-f0-9]{8,32}@vendor\.test>", fullmatch=True), max_size=6),
    unsubscribe=st.sampled_from([None, "sales@vendor.test"]),
)
def test_the_bytes_are_those_the_email_package_writes(
    name: str, subject: str, body: str, thread: list[str], unsubscribe: str | None
) -> None:
    kw = {"from_name": name, "subject": subject, "body": body, "to_address": "jo@acme.test"}
    ours = build(**kw, thread=thread, unsubscribe=unsubscribe)
    assert ours == _by_the_email_package(thread, unsubscribe, **kw)
