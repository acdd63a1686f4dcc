"""CSV files as Excel and CRMs save them: the delimiter sniffed from the header row, the
encoding detected from the bytes, and every bad row named by its line with advice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sequencer import csvfile
from sequencer.contacts import read_csv
from sequencer.errors import EnrollError, SuppressionError
from sequencer.sequences import Sequence, load_sequence
from sequencer.suppression import read_csv as read_suppressions

SEQUENCE = """\
mailbox: sales
variables:
  company: your team
steps:
  - wait: 0s
    subject: "Hi {{ contact.first_name }}"
    body: "{{ contact.company }}"
  - wait: 3d
    breakup: true
    body: bye
"""


@pytest.fixture(scope="module")
def seq(tmp_path_factory: pytest.TempPathFactory) -> Sequence:
    path = tmp_path_factory.mktemp("seq") / "intro.yaml"
    path.write_text(SEQUENCE, encoding="utf-8")
    return load_sequence(path)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_an_excel_europe_export_semicolons_in_windows_1252(seq: Sequence, tmp_path: Path) -> None:
    # What "CSV (separator: semicolon)" in a French or German Excel writes: cp1252, CRLF,
    # a decimal comma in a cell, quotes only where a cell holds a semicolon.
    text = (
        "Email;First_Name;Company;Score\r\n"
        "k.mueller@acme.test;Müller;Bäckerei Groß;3,5\r\n"
        'francoise@acme.test;Françoise;"Dupont; Fils & Cie";4,0\r\n'
    )
    path = _write(tmp_path, "export.csv", text.encode("cp1252"))
    assert b"\xfc" in path.read_bytes()  # really not UTF-8
    decoded, note = csvfile.load(path)
    assert note is not None and "Windows-1252" in note and str(path) in note
    people = read_csv(seq, decoded, str(path))
    assert [(p.email, p.values["first_name"], p.values["company"], p.line) for p in people] == [
        ("k.mueller@acme.test", "Müller", "Bäckerei Groß", 2),
        ("francoise@acme.test", "Françoise", "Dupont; Fils & Cie", 3),
    ]
    assert people[0].values["score"] == "3,5"


def test_a_tab_separated_utf8_file_with_a_bom(seq: Sequence, tmp_path: Path) -> None:
    text = "email\tfirst_name\tcompany\njo@acme.test\tZoë\tSmith, Jones & Co\n"
    path = _write(tmp_path, "crm.tsv", b"\xef\xbb\xbf" + text.encode("utf-8"))
    decoded, note = csvfile.load(path)
    assert note is None  # UTF-8 is what we expect: nothing to say
    (person,) = read_csv(seq, decoded, str(path))
    assert (person.email, person.values["first_name"]) == ("jo@acme.test", "Zoë")
    assert person.values["company"] == "Smith, Jones & Co"


def test_excel_unicode_text_utf16_tabs(seq: Sequence, tmp_path: Path) -> None:
    text = "email\tfirst_name\r\nann@acme.test\tŁucja\r\n"
    path = _write(tmp_path, "unicode.txt", text.encode("utf-16"))  # with its BOM
    decoded, note = csvfile.load(path)
    assert note is not None and "UTF-16" in note
    (person,) = read_csv(seq, decoded, str(path))
    assert person.values["first_name"] == "Łucja"


def test_bytes_windows_1252_leaves_undefined_are_read_as_latin_1() -> None:
    text, note = csvfile.decode(b"email\nx@acme.test\n" + b"\x81\n", "odd.csv")
    assert note is not None and "Latin-1" in note
    assert text.endswith("\x81\n")


def test_plain_utf8_comma_files_read_as_before(seq: Sequence) -> None:
    text, note = csvfile.decode("email,first_name\njo@acme.test,Zoë\n".encode(), "p.csv")
    assert note is None
    (person,) = read_csv(seq, text, "p.csv")
    assert person.values["first_name"] == "Zoë"


def test_a_header_mixing_delimiters_is_refused_on_line_1(seq: Sequence, tmp_path: Path) -> None:
    path = _write(tmp_path, "mixed.csv", b"email;first_name,company\njo@acme.test;Jo,Acme\n")
    text, _ = csvfile.load(path)
    with pytest.raises(EnrollError) as info:
        read_csv(seq, text, str(path))
    (message,) = info.value.problems
    assert message.startswith(f"{path}:1: the header row has both commas and semicolons")
    assert "save the file again with one delimiter" in message


def test_a_tab_and_a_semicolon_in_the_header_are_refused_for_suppressions_too() -> None:
    with pytest.raises(
        SuppressionError,
        match=r"list\.csv:1: .* tabs and semicolons|"
        r"list\.csv:1: .* semicolons and tabs",
    ):
        read_suppressions("email\treason;source\nx@acme.test\tasked\n", "list.csv")


def test_a_delimiter_inside_a_quoted_column_name_is_not_a_mix() -> None:
    header, rows = csvfile.read('email;"Notes, free text"\njo@acme.test;hi, there\n', "p.csv")
    assert header == ["email", "notes, free text"]
    assert rows[0].fields == {"email": "jo@acme.test", "notes, free text": "hi, there"}


def test_a_single_column_list_needs_no_delimiter() -> None:
    entries = read_suppressions("email\nx@acme.test\n@rival.test\n", "list.csv")
    assert [e.email for e in entries] == ["x@acme.test", "@rival.test"]


def test_semicolon_suppression_list_in_windows_1252(tmp_path: Path) -> None:
    data = "Email;Reason\r\nr.lefevre@acme.test;a demandé à ne plus être contacté\r\n"
    text, note = csvfile.decode(data.encode("cp1252"), "optout.csv")
    assert note is not None
    (entry,) = read_suppressions(text, "optout.csv")
    assert entry.email == "r.lefevre@acme.test"
    assert entry.reason == "a demandé à ne plus être contacté"


def test_each_bad_row_is_named_by_line_with_advice_and_nothing_is_enrolled(seq: Sequence) -> None:
    text = (
        "email;first_name\n"
        "jo@acme.test;Jo\n"
        "Ann;ann@acme.test\n"  # columns swapped
        "bob@acme.test,Bob\n"  # this row saved with commas
        "\n"
        "jo@acme;Jo\n"
    )
    with pytest.raises(EnrollError) as info:
        read_csv(seq, text, "p.csv")
    assert info.value.problems == [
        "3 problem(s) in p.csv; nothing was enrolled:",
        "p.csv:3: email 'Ann' is not an e-mail address (it needs exactly one @): "
        "check the column order or the delimiter",
        "p.csv:4: email 'bob@acme.test,Bob' has an invalid domain (expected something like "
        "example.com): it contains a comma, so this row may use another delimiter",
        "p.csv:6: email 'jo@acme' has an invalid domain (expected something like "
        "example.com): check the column order or the delimiter",
    ]


def test_too_many_cells_names_the_delimiter_of_the_file(seq: Sequence) -> None:
    with pytest.raises(EnrollError) as info:
        read_csv(seq, "email;first_name\njo@acme.test;Jo;extra\n", "p.csv")
    assert info.value.problems[1] == (
        "p.csv:2: more cells than header columns (the columns are separated by a semicolon: "
        'put a value that contains a semicolon in "double quotes")'
    )


def test_an_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"missing\.csv: cannot read it: No such file"):
        csvfile.load(tmp_path / "missing.csv")


def test_a_hostile_header_line_is_sniffed_quickly() -> None:
    # The sniffer's regexes backtrack on long lines of quotes and delimiters: line 1 is cut.
    hostile = "email;" + '"a;' * 200_000 + "\n"
    start = time.monotonic()
    header, rows = csvfile.read(hostile, "h.csv")
    assert header[0] == "email" and rows == []
    assert time.monotonic() - start < 10  # unbounded backtracking takes minutes
