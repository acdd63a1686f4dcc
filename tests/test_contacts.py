"""Contact intake: --var pairs and CSV files, checked whole before anything is enrolled."""

from __future__ import annotations

import tempfile
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sequencer.contacts import Contact, contact, parse_vars, read_csv
from sequencer.errors import EnrollError
from sequencer.sequences import Sequence, load_sequence

SEQUENCE = """\
mailbox: sales
variables:
  company: your team
  next_step: null
steps:
  - wait: 0s
    subject: "Hi {{ contact.first_name }}"
    body: "{{ contact.company }}: {{ contact.next_step }}"
  - wait: 3d
    breakup: true
    body: bye
"""


def _load() -> Sequence:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "intro.yaml"
        path.write_text(SEQUENCE, encoding="utf-8")
        return load_sequence(path)


SEQ = _load()


def problems(exc: pytest.ExceptionInfo[EnrollError]) -> list[str]:
    assert str(exc.value) == "\n".join(exc.value.problems)
    return exc.value.problems


# --- parse_vars ----------------------------------------------------------------------------


def test_parse_vars() -> None:
    assert parse_vars(["first_name=Jo", " Company =Acme = Co", "note=", "x=a=b"]) == {
        "first_name": "Jo",
        "company": "Acme = Co",
        "note": "",
        "x": "a=b",
    }
    assert parse_vars([]) == {}


def test_parse_vars_later_pairs_win() -> None:
    assert parse_vars(["a=1", "A=2"]) == {"a": "2"}


def test_parse_vars_lists_every_pair_without_equals() -> None:
    with pytest.raises(EnrollError) as info:
        parse_vars(["first_name", "ok=1", "company Acme"])
    assert problems(info) == [
        "--var 'first_name': expected key=value, e.g. --var first_name=Jo",
        "--var 'company Acme': expected key=value, e.g. --var first_name=Jo",
    ]


# --- contact -------------------------------------------------------------------------------


def test_contact_normalises_and_applies_defaults() -> None:
    c = contact(SEQ, " Jo@Acme.TEST ", {"first_name": " Jo ", "next_step": "a demo"}, line=3)
    assert c == Contact(
        "jo@acme.test",
        {
            "email": "jo@acme.test",
            "first_name": "Jo",
            "company": "your team",
            "next_step": "a demo",
        },
        3,
    )


def test_contact_ignores_an_email_field() -> None:
    c = contact(SEQ, "jo@acme.test", {"email": "x@y.test", "first_name": "Jo", "next_step": "x"})
    assert c.email == "jo@acme.test"
    assert c.values["email"] == "jo@acme.test"


@pytest.mark.parametrize(
    ("email", "message"),
    [
        ("jo", "email 'jo' is not an e-mail address (it needs exactly one @)"),
        ("", "email is empty"),
        ("jo@localhost", "email 'jo@localhost' has an invalid domain"),
        ("jo@acme.test\r\nBcc: x@y.test", "email contains a line break or NUL"),
    ],
)
def test_contact_refuses_invalid_addresses(email: str, message: str) -> None:
    with pytest.raises(EnrollError) as info:
        contact(SEQ, email, {"first_name": "Jo", "next_step": "x"})
    assert problems(info)[0].startswith(message)


@pytest.mark.parametrize(
    "value",
    [
        "Jo\r\nBcc: victim@x.test",
        "Jo\nSmith",
        "Jo\rSmith",
        "Jo\x00",
        "a\r\nb",
        "Jo\x0bBcc: victim@x.test",
        "Jo\u2028Smith",
        "Jo\x85Smith",
    ],
)
def test_contact_refuses_line_breaks_in_values(value: str) -> None:
    with pytest.raises(EnrollError) as info:
        contact(SEQ, "jo@acme.test", {"first_name": value, "next_step": "x"})
    assert problems(info) == ["first_name: contains a line break (header injection is refused)"]


def test_a_trailing_newline_is_just_whitespace() -> None:
    c = contact(SEQ, "jo@acme.test", {"first_name": "Jo\n", "next_step": "x\r\n"})
    assert c.values["first_name"] == "Jo"


@pytest.mark.parametrize("name", ["First Name", "1st", "first-name", "Company", "", "é"])
def test_contact_refuses_bad_field_names(name: str) -> None:
    with pytest.raises(EnrollError) as info:
        contact(SEQ, "jo@acme.test", {"first_name": "Jo", "next_step": "x", name: "v"})
    assert problems(info) == [
        f"'{name}' is not a usable field name (lower-case letters, digits, _)"
    ]


def test_contact_refuses_very_long_values() -> None:
    with pytest.raises(EnrollError) as info:
        contact(SEQ, "jo@acme.test", {"first_name": "J" * 1001, "next_step": "x"})
    assert problems(info) == ["first_name: longer than 1000 characters"]
    assert contact(SEQ, "jo@acme.test", {"first_name": "J" * 1000, "next_step": "x"})


def test_contact_lists_every_problem_at_once() -> None:
    with pytest.raises(EnrollError) as info:
        contact(SEQ, "bad", {"first_name": "a\nb", "Bad Name": "x"})
    found = problems(info)
    assert len(found) == 3
    assert found[0].startswith("email 'bad'")
    assert "first_name: contains a line break" in found[1]
    assert "'bad name' is not a usable field name" not in found[2]  # names are not lower-cased
    assert "'Bad Name' is not a usable field name" in found[2]


def test_contact_missing_required_values_names_them() -> None:
    with pytest.raises(EnrollError) as info:
        contact(SEQ, "jo@acme.test", {"first_name": "  "})
    (msg,) = problems(info)
    assert msg.startswith("missing first_name, next_step (sequence 'intro' needs them;")
    assert "--var first_name=..." in msg


@settings(max_examples=200, deadline=None)
@given(value=st.text(max_size=50))
def test_any_value_without_line_breaks_or_control_characters_is_kept_stripped(value: str) -> None:
    """The rule, stated independently: control characters (Unicode Cc) other than a tab,
    lone surrogates (Cs) and the two Unicode line separators are refused; all else is kept."""
    fields = {"first_name": "Jo", "next_step": "x", "note": value}
    kept = value.strip()
    breaks = any(c in kept for c in "\r\n\0\v\f\x1c\x1d\x1e\x85\u2028\u2029")
    bad = any(unicodedata.category(c) in ("Cc", "Cs") and c != "\t" for c in kept)
    if breaks:
        with pytest.raises(EnrollError, match="header injection"):
            contact(SEQ, "jo@acme.test", fields)
    elif bad:
        with pytest.raises(EnrollError, match="remove it"):
            contact(SEQ, "jo@acme.test", fields)
    else:
        values = contact(SEQ, "jo@acme.test", fields).values
        assert values.get("note") == (value.strip() or None)  # blank is the same as absent


# --- read_csv ------------------------------------------------------------------------------


def test_a_good_csv() -> None:
    text = (
        "email,first_name,company,next_step\n"
        "jo@acme.test,Jo,Acme,a demo\n"
        "Ann@Example.TEST,Ann,,a call\n"
    )
    people = read_csv(SEQ, text, "people.csv")
    assert [p.email for p in people] == ["jo@acme.test", "ann@example.test"]
    assert [p.line for p in people] == [2, 3]
    assert people[0].values["company"] == "Acme"
    assert people[1].values["company"] == "your team"  # an empty cell takes the default
    assert people[1].values["next_step"] == "a call"


def test_header_names_are_trimmed_and_lower_cased_and_columns_may_be_in_any_order() -> None:
    text = " Next_Step , EMAIL ,First_Name\na demo,jo@acme.test,Jo\n"
    (person,) = read_csv(SEQ, text, "p.csv")
    assert person.values == {
        "email": "jo@acme.test",
        "first_name": "Jo",
        "company": "your team",
        "next_step": "a demo",
    }


def test_two_bad_rows_are_both_listed_and_nothing_is_enrolled() -> None:
    text = (
        "email,first_name,next_step\n"
        "jo@acme.test,Jo,a demo\n"
        "not-an-address,Ann,a call\n"
        "sam@acme.test,Sam,\n"
        "kim@acme.test,Kim,a call\n"
    )
    with pytest.raises(EnrollError) as info:
        read_csv(SEQ, text, "people.csv")
    found = problems(info)
    assert found[0] == "2 problem(s) in people.csv; nothing was enrolled:"
    assert found[1].startswith("people.csv:3: email 'not-an-address' is not an e-mail address")
    assert found[2].startswith("people.csv:4: missing next_step (sequence 'intro' needs it;")
    assert len(found) == 3


def test_a_missing_email_column_is_refused_on_line_1() -> None:
    with pytest.raises(EnrollError) as info:
        read_csv(SEQ, "e-mail,first_name\njo@acme.test,Jo\n", "people.csv")
    assert problems(info) == [
        "people.csv:1: the header row needs an 'email' column (found: e-mail, first_name)"
    ]


def test_an_empty_file_is_refused() -> None:
    with pytest.raises(EnrollError) as info:
        read_csv(SEQ, "", "empty.csv")
    assert problems(info) == [
        "empty.csv:1: the header row needs an 'email' column (found: nothing)"
    ]


def test_a_bad_header_name_is_refused_on_line_1() -> None:
    with pytest.raises(EnrollError) as info:
        read_csv(SEQ, "email,first name\njo@acme.test,Jo\n", "p.csv")
    assert problems(info) == [
        "p.csv:1: 'first name' is not a usable field name (lower-case letters, digits, _)"
    ]


def test_a_header_only_csv_enrolls_nobody() -> None:
    assert read_csv(SEQ, "email,first_name\n", "p.csv") == []


def test_quoted_fields_may_contain_commas_and_quotes() -> None:
    text = 'email,first_name,company,next_step\njo@acme.test,Jo,"Acme, Inc.","a ""quick"" demo"\n'
    (person,) = read_csv(SEQ, text, "p.csv")
    assert person.values["company"] == "Acme, Inc."
    assert person.values["next_step"] == 'a "quick" demo'


def test_a_multi_line_quoted_value_is_refused_at_the_line_where_its_row_starts() -> None:
    text = (
        "email,first_name,next_step\n"
        'jo@acme.test,Jo,"a demo\nBcc: victim@x.test"\n'
        "ann@acme.test,Ann,a call\n"
        'sam@acme.test,"Sam\r\nSmith",x\n'
    )
    with pytest.raises(EnrollError) as info:
        read_csv(SEQ, text, "p.csv")
    found = problems(info)
    assert found[1:] == [
        "p.csv:2: next_step: contains a line break (header injection is refused)",
        "p.csv:5: first_name: contains a line break (header injection is refused)",
    ]


def test_a_quote_left_open_is_reported() -> None:
    text = 'email,first_name,next_step\njo@acme.test,"Jo,x\nann@acme.test,Ann,y\n'
    with pytest.raises(EnrollError) as info:
        read_csv(SEQ, text, "p.csv")
    found = problems(info)
    assert found[1].startswith("p.csv:2: ")
    assert "nothing was enrolled" in found[0]


def test_a_utf8_bom_is_handled() -> None:
    raw = "email,first_name,next_step\njo@acme.test,Zoë,x\n".encode("utf-8-sig")
    (person,) = read_csv(SEQ, raw.decode("utf-8-sig"), "p.csv")  # as the CLI reads it
    assert person.values["first_name"] == "Zoë"
    (person,) = read_csv(SEQ, raw.decode("utf-8"), "p.csv")  # and if a caller forgets
    assert person.email == "jo@acme.test"


def test_windows_line_endings() -> None:
    text = "email,first_name,next_step\r\njo@acme.test,Jo,x\r\nann@acme.test,Ann,y\r\n"
    people = read_csv(SEQ, text, "p.csv")
    assert [(p.email, p.values["next_step"], p.line) for p in people] == [
        ("jo@acme.test", "x", 2),
        ("ann@acme.test", "y", 3),
    ]


def test_blank_lines_are_skipped_and_line_numbers_stay_true() -> None:
    text = "email,first_name,next_step\n\njo@acme.test,Jo,x\n,,\n   ,  ,\n\nbad,Ann,y\n"
    with pytest.raises(EnrollError) as info:
        read_csv(SEQ, text, "p.csv")
    found = problems(info)
    assert len(found) == 2
    assert found[1].startswith("p.csv:7: email 'bad'")
    people = read_csv(SEQ, text.replace("bad,", "ann@acme.test,"), "p.csv")
    assert [(p.email, p.line) for p in people] == [("jo@acme.test", 3), ("ann@acme.test", 7)]


def test_too_many_cells_is_refused_with_a_hint() -> None:
    text = "email,first_name,next_step\njo@acme.test,Jo,a demo, then lunch\nann@acme.test,Ann,x\n"
    with pytest.raises(EnrollError) as info:
        read_csv(SEQ, text, "p.csv")
    found = problems(info)
    assert found == [
        "1 problem(s) in p.csv; nothing was enrolled:",
        "p.csv:2: more cells than header columns (the columns are separated by a comma: "
        'put a value that contains a comma in "double quotes")',
    ]


def test_too_few_cells_means_empty_values() -> None:
    text = "email,first_name,next_step,company\njo@acme.test,Jo,x\n"
    (person,) = read_csv(SEQ, text, "p.csv")
    assert person.values["company"] == "your team"


def test_an_extra_unnamed_column_is_ignored() -> None:
    text = "email,first_name,next_step,\njo@acme.test,Jo,x,\n"
    (person,) = read_csv(SEQ, text, "p.csv")
    assert "" not in person.values


def test_every_row_of_a_large_csv_is_checked() -> None:
    rows = [f"p{i}@acme.test,P{i},step {i}" for i in range(500)]
    rows[100] = "broken,P,x"
    rows[400] = "also@acme.test,Q,"
    text = "email,first_name,next_step\n" + "\n".join(rows) + "\n"
    with pytest.raises(EnrollError) as info:
        read_csv(SEQ, text, "big.csv")
    found = problems(info)
    assert found[0] == "2 problem(s) in big.csv; nothing was enrolled:"
    assert found[1].startswith("big.csv:102: ")
    assert found[2].startswith("big.csv:402: ")


# --- characters that cannot be sent --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("Jo\x07", "contains the control character U+0007; remove it"),
        ("Jo\x1b[31m", "contains the control character U+001B, escape; remove it"),
        ("Jo\x7f", "contains the control character U+007F; remove it"),
        ("Jo\x9bx", "contains the control character U+009B; remove it"),
        ("Jo\udcff", "contains U+DCFF, a lone surrogate: not a character, and it cannot be sent"),
        ("\ud800Jo", "contains U+D800, a lone surrogate"),
    ],
)
def test_contact_refuses_control_characters_and_lone_surrogates(value: str, what: str) -> None:
    """Any value may end up in the subject; a surrogate cannot be encoded and used to make the
    daemon retry the send for ever."""
    with pytest.raises(EnrollError) as info:
        contact(SEQ, "jo@acme.test", {"first_name": value, "next_step": "x"})
    [found] = problems(info)
    assert found.startswith(f"first_name: {what}")
    assert "\x1b" not in found and "\udcff" not in found  # never echoed to the terminal


def test_an_argument_that_was_not_utf8_is_refused() -> None:
    """Python turns undecodable bytes in argv into lone surrogates (surrogateescape)."""
    raw = b"first_name=Zo\xeb".decode("utf-8", "surrogateescape")  # Latin-1 from a terminal
    with pytest.raises(EnrollError) as info:
        contact(SEQ, "jo@acme.test", {**parse_vars([raw]), "next_step": "x"})
    assert problems(info)[0].startswith("first_name: contains U+DCEB, a lone surrogate")


@pytest.mark.parametrize(
    "email", ["jo\x07@acme.test", "jo@acme.test\udcff", "jo\t@acme.test", "jo@acme\x1b.test"]
)
def test_contact_refuses_control_characters_and_surrogates_in_the_address(email: str) -> None:
    with pytest.raises(EnrollError) as info:
        contact(SEQ, email, {"first_name": "Jo", "next_step": "x"})
    [found] = problems(info)
    assert found.startswith("email contains ") and "remove it" in found
    assert email not in found


def test_tabs_and_letters_are_fine_in_values() -> None:
    """A tab is harmless in a body and is encoded in a header; letters are letters."""
    c = contact(SEQ, "zoe@acme.test", {"first_name": "Zoë Müller", "next_step": "a\tb — ok"})
    assert c.values["first_name"] == "Zoë Müller" and c.values["next_step"] == "a\tb — ok"


def test_a_csv_with_control_characters_is_refused_with_each_line() -> None:
    text = (
        "email,first_name,next_step\n"
        "ann@acme.test,Ann,a call\n"
        "jo@acme.test,Jo\x07,demo\n"
        'zoe@acme.test,Zoë Müller,"a\tdemo"\n'
        'sam@acme.test,Sam,"x\x00y"\n'
        "bo\x1b@acme.test,Bo,x\n"
        "cy@acme.test,\udcffCy,x\n"
    )
    with pytest.raises(EnrollError) as info:
        read_csv(SEQ, text, "p.csv")
    assert problems(info) == [
        "4 problem(s) in p.csv; nothing was enrolled:",
        "p.csv:3: first_name: contains the control character U+0007; remove it",
        "p.csv:5: next_step: contains a line break (header injection is refused)",
        "p.csv:6: email contains the control character U+001B, escape; remove it",
        "p.csv:7: first_name: contains U+DCFF, a lone surrogate: not a character, and it "
        "cannot be sent (left by a broken encoding or a \\u escape); remove it",
    ]


def test_a_field_name_with_a_control_character_is_shown_escaped() -> None:
    with pytest.raises(EnrollError) as info:
        read_csv(SEQ, "email,first\x1bname\njo@acme.test,Jo\n", "p.csv")
    assert problems(info) == [
        "p.csv:1: 'first\\x1bname' is not a usable field name (lower-case letters, digits, _)"
    ]
