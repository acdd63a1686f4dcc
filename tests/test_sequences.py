"""Sequence files: what loads, and what a user is told (file:line, what to change) when not."""

from __future__ import annotations

import contextlib
import tempfile
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from hostile import laughs, load_capped, nested
from hypothesis import given, settings
from hypothesis import strategies as st

from sequencer.config import load_settings
from sequencer.errors import ConfigError, EnrollError, SequenceError
from sequencer.sequences import Sequence, load_all, load_sequence

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
mailbox: sales
variables:
  company: your team
  next_step: null
steps:
  - wait: 0s
    subject: "Notes from our call, {{ contact.first_name }}"
    body: |
      Hi {{ contact.first_name }},
      The next step for {{ contact.company }} is {{ contact.next_step }}.
  - wait: 3d
    body: "Following up on {{ contact.next_step }}. {{ sender.name }}"
  - wait: 1d12h
    breakup: true
    body: "I'll stop here. {{ sender.name }} <{{ sender.address }}>"
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path, mailboxes: list[str] | None = None) -> list[str]:
    with pytest.raises(SequenceError) as info:
        load_sequence(path, mailboxes)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def one_problem(path: Path, mailboxes: list[str] | None = None) -> str:
    found = problems_of(path, mailboxes)
    assert len(found) == 1, found
    return found[0]


def three_steps(step1: str = "", step2: str = "", step3: str = "", top: str = "") -> str:
    """GOOD's shape with extra lines for each step; bodies only use declared names."""
    return (
        "mailbox: sales\n"
        + top
        + "steps:\n"
        + "  - wait: 0s\n    subject: Hello\n    body: one\n"
        + step1
        + "  - wait: 2d\n    body: two\n"
        + step2
        + "  - wait: 3d\n    breakup: true\n    body: three\n"
        + step3
    )


# --- a good file ---------------------------------------------------------------------------


def test_a_good_three_step_sequence_loads(tmp_path: Path) -> None:
    seq = load_sequence(write(tmp_path, "after-call.yaml", GOOD), ["sales", "support"])
    assert seq.id == "after-call"
    assert seq.path == tmp_path / "after-call.yaml"
    assert seq.mailbox == "sales"
    assert dict(seq.variables) == {"company": "your team", "next_step": None}
    assert [s.number for s in seq.steps] == [1, 2, 3]
    assert [s.wait.delta for s in seq.steps] == [
        timedelta(0),
        timedelta(days=3),
        timedelta(days=1, hours=12),
    ]
    assert [str(s.wait) for s in seq.steps] == ["0s", "3d", "1d12h"]
    assert [s.line for s in seq.steps] == [6, 11, 13]
    assert seq.steps[0].subject == "Notes from our call, {{ contact.first_name }}"
    assert [s.subject for s in seq.steps[1:]] == [None, None]
    assert [s.breakup for s in seq.steps] == [False, False, True]
    assert seq.steps[0].body.endswith("is {{ contact.next_step }}.\n")
    assert seq.fields_used == {"first_name", "company", "next_step"}


def test_mailbox_is_not_checked_when_no_mailboxes_are_given(tmp_path: Path) -> None:
    seq = load_sequence(write(tmp_path, "x.yaml", GOOD.replace("sales", "anything")))
    assert seq.mailbox == "anything"


def test_the_shipped_example_sequences_are_valid() -> None:
    found = load_all(REPO / "sequences", ["sales"])
    assert {"after-meeting", "long-lead-nurture", "proposal-sent"} <= set(found)
    for seq in found.values():
        assert seq.steps[-1].breakup
        assert seq.steps[0].subject
    assert "after-meeting" in load_all(REPO / "sequencer" / "demo_data", ["sales"])


def test_comments_and_quoted_waits_are_fine(tmp_path: Path) -> None:
    text = "# a comment\n" + GOOD.replace("wait: 3d", 'wait: "3 days"  # comment')
    seq = load_sequence(write(tmp_path, "c.yaml", text))
    assert seq.steps[1].wait.delta == timedelta(days=3)
    assert seq.steps[1].line == 12


# --- YAML-level errors -------------------------------------------------------------------


def test_bad_indentation_names_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        """\
        mailbox: sales
        steps:
          - wait: 0s
            subject: x
           body: y
        """,
    )
    msg = one_problem(path)
    assert msg.startswith(f"{path}:5: not valid YAML")
    assert "indentation" in msg


def test_unclosed_bracket_names_the_line_it_was_opened_on(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.yaml",
        """\
        mailbox: sales
        variables: {company: Acme
        steps:
          - wait: 0s
        """,
    )
    msg = one_problem(path)
    assert msg.startswith(f"{path}:3: not valid YAML")
    assert "starts on line 2" in msg
    assert "check indentation and quoting" in msg


def test_unclosed_quote_is_reported_with_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", 'mailbox: sales\nsteps:\n  - wait: "0s\n    body: x\n')
    msg = one_problem(path)
    assert msg.startswith(f"{path}:5: not valid YAML: found unexpected end of stream")
    assert "(while scanning a quoted scalar that starts on line 3)" in msg


def test_a_tab_in_indentation_is_reported_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "mailbox: sales\nsteps:\n\t- wait: 0s\n")
    msg = one_problem(path)
    assert msg.startswith(f"{path}:3: not valid YAML")
    assert "\\t" in msg


def test_a_duplicate_key_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path, "s.yaml", GOOD.replace("mailbox: sales\n", "mailbox: sales\nmailbox: x\n")
    )
    msg = one_problem(path)
    assert msg.startswith(f"{path}:2: not valid YAML")
    assert 'duplicate key "mailbox"' in msg


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n", "just text\n"])
def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "s.yaml", text)
    msg = one_problem(path)
    assert msg.startswith(f"{path}:1:")
    assert "must be a mapping with 'mailbox' and 'steps'" in msg


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    msg = one_problem(tmp_path / "nope.yaml")
    assert msg == f"{tmp_path / 'nope.yaml'}: file not found"


def test_a_file_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes("mailbox: café\n".encode("latin-1"))
    msg = one_problem(path)
    assert msg.startswith(f"{path}: cannot read it")


# --- schema errors -------------------------------------------------------------------------


def test_unknown_top_level_key_is_named_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", GOOD.replace("variables:", "descripton: hi\nvariables:"))
    msg = one_problem(path)
    assert msg.startswith(f"{path}:2: descripton: unknown key 'descripton'")
    assert "check its spelling" in msg


def test_unknown_key_in_a_step_is_named_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", three_steps(step2="    subjet: oops\n"))
    msg = one_problem(path)
    assert msg.startswith(f"{path}:8: steps.1.subjet: unknown key 'subjet'")


def test_several_schema_problems_are_reported_together(tmp_path: Path) -> None:
    text = three_steps(step1="    colour: red\n", step3="    tone: warm\n").replace(
        "wait: 2d", "wait: 2"
    )
    path = write(tmp_path, "s.yaml", text)
    found = problems_of(path)
    assert len(found) == 3, found
    assert found[0].startswith(f"{path}:6: steps.0.colour: unknown key 'colour'")
    assert found[1].startswith(f"{path}:7: steps.1.wait:")
    assert 'has no unit (try "2d", "2bd" or "2h")' in found[1]
    assert found[2].startswith(f"{path}:12: steps.2.tone: unknown key 'tone'")


def test_a_missing_required_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", three_steps().replace("    body: two\n", ""))
    msg = one_problem(path)
    assert msg.startswith(f"{path}:6: steps.1.body: required key 'body' is missing")


def test_missing_mailbox_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", three_steps().replace("mailbox: sales\n", ""))
    msg = one_problem(path)
    assert msg.startswith(f"{path}:1: mailbox: required key 'mailbox' is missing")


def test_an_empty_steps_list_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", "mailbox: sales\nsteps: []\n")
    msg = one_problem(path)
    assert msg.startswith(f"{path}:2: steps:")


@pytest.mark.parametrize(
    ("wait", "hint"),
    [
        ("3", 'has no unit (try "3d", "3bd" or "3h")'),
        ("3 dayz", 'unknown unit "dayz" (use s, m, h, d, w, or bd for business days)'),
        ("soon", 'is not a duration (try "3d", "12h" or "3bd")'),
        ("-1d", "is not a duration"),
        ("null", "is not a duration"),
        ("true", "is not a duration"),
        ("99999999999w", "longer than ten years"),
    ],
)
def test_a_bad_wait_says_how_to_write_one(tmp_path: Path, wait: str, hint: str) -> None:
    path = write(tmp_path, "s.yaml", three_steps().replace("wait: 2d", f"wait: {wait}"))
    msg = one_problem(path)
    assert msg.startswith(f"{path}:6: steps.1.wait: ")
    assert hint in msg


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("Company", "must be lower-case letters, digits and _"),
        ("email", "'email' is always present; do not declare it"),
    ],
)
def test_bad_variable_names_are_refused(tmp_path: Path, name: str, hint: str) -> None:
    path = write(tmp_path, "s.yaml", three_steps(top=f"variables:\n  {name}: x\n"))
    msg = one_problem(path)
    assert msg.startswith(f"{path}:2: variables: ")
    assert hint in msg


@pytest.mark.parametrize(
    ("value", "shown"),
    [("2025", '"2025"'), ("1.50", '"1.5"'), ("true", '"true"'), ("2024-06-12", '"2024-06-12"')],
)
def test_a_default_yaml_reads_as_non_text_says_to_quote_it(
    tmp_path: Path, value: str, shown: str
) -> None:
    path = write(tmp_path, "s.yaml", three_steps(top=f"variables:\n  year: {value}\n"))
    msg = one_problem(path)
    assert msg.startswith(f"{path}:3: variables.year: ")
    assert f"put it in quotes to keep it as text, e.g. year: {shown}" in msg


def test_yaml_1_2_keeps_no_off_yes_on_as_strings(tmp_path: Path) -> None:
    top = "variables:\n  answer: no\n  state: off\n  ok: yes\n  light: on\n  quoted: 'no'\n"
    seq = load_sequence(write(tmp_path, "s.yaml", three_steps(top=top)))
    assert dict(seq.variables) == {
        "answer": "no",
        "state": "off",
        "ok": "yes",
        "light": "on",
        "quoted": "no",
    }
    values = seq.contact_values("jo@acme.test", {})
    assert values["answer"] == "no"


def test_a_mailbox_called_off_stays_a_string(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", three_steps().replace("mailbox: sales", "mailbox: off"))
    assert load_sequence(path, ["off"]).mailbox == "off"


def test_a_file_name_that_is_not_a_usable_id_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "my sequence.yaml", three_steps())
    msg = one_problem(path)
    assert msg.startswith(f"{path}: the file name 'my sequence.yaml' is not a usable sequence id")
    assert "use letters, digits" in msg


# --- structural rules ----------------------------------------------------------------------


def test_a_sequence_without_a_break_up_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", three_steps().replace("    breakup: true\n", ""))
    msg = one_problem(path)
    assert msg.startswith(f"{path}:8: step 3: the last step must be the break-up")
    assert "add 'breakup: true'" in msg


def test_breakup_false_on_the_last_step_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", three_steps().replace("breakup: true", "breakup: false"))
    assert "add 'breakup: true'" in one_problem(path)


def test_a_single_step_that_is_the_break_up_is_fine(tmp_path: Path) -> None:
    text = "mailbox: sales\nsteps:\n  - wait: 0s\n    subject: Hi\n    breakup: true\n    body: x\n"
    seq = load_sequence(write(tmp_path, "s.yaml", text))
    assert len(seq.steps) == 1
    assert seq.steps[0].breakup


def test_a_break_up_that_is_not_last_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", three_steps(step1="    breakup: true\n"))
    msg = one_problem(path)
    assert msg.startswith(f"{path}:6: step 1: the break-up must be the last step")
    assert "move it to the end or remove the steps after it" in msg


def test_a_subject_on_step_2_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", three_steps(step2="    subject: Again\n"))
    msg = one_problem(path)
    assert msg.startswith(f"{path}:8: step 2: remove 'subject'")
    assert "'Re: <first subject>'" in msg


@pytest.mark.parametrize("subject", [None, '""', '"   "'])
def test_step_1_needs_a_subject(tmp_path: Path, subject: str | None) -> None:
    line = "" if subject is None else f"    subject: {subject}\n"
    path = write(tmp_path, "s.yaml", three_steps().replace("    subject: Hello\n", line))
    msg = one_problem(path)
    assert msg.startswith(f"{path}:3: step 1: needs a subject")


def test_an_unknown_mailbox_names_the_known_ones(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", three_steps().replace("sales", "marketing"))
    msg = one_problem(path, ["support", "sales"])
    assert msg.startswith(f"{path}:1: unknown mailbox 'marketing'")
    assert "(the settings file defines: sales, support)" in msg


def test_an_unknown_mailbox_with_none_configured_says_so(tmp_path: Path) -> None:
    msg = one_problem(write(tmp_path, "s.yaml", three_steps()), [])
    assert "none are configured" in msg


# --- template rules ------------------------------------------------------------------------


def test_an_undeclared_contact_field_says_to_declare_it(tmp_path: Path) -> None:
    text = three_steps().replace("body: two", 'body: "At {{ contact.company }}?"')
    path = write(tmp_path, "s.yaml", text)
    msg = one_problem(path)
    assert msg.startswith(f"{path}:7: step 2: body: contact.company is not declared")
    assert "add 'company:' under variables:" in msg


def test_an_undeclared_field_in_the_subject_is_reported_on_the_subject_line(
    tmp_path: Path,
) -> None:
    text = three_steps().replace("subject: Hello", 'subject: "Hi {{ contact.role }}"')
    path = write(tmp_path, "s.yaml", text)
    msg = one_problem(path)
    assert msg.startswith(f"{path}:4: step 1: subject: contact.role is not declared")


def test_item_access_counts_as_a_field(tmp_path: Path) -> None:
    text = three_steps().replace("body: two", "body: \"{{ contact['company'] }}\"")
    assert "contact.company is not declared" in one_problem(write(tmp_path, "s.yaml", text))


def test_computed_item_access_is_refused(tmp_path: Path) -> None:
    text = three_steps().replace("body: two", 'body: "{{ contact[contact.first_name] }}"')
    msg = one_problem(write(tmp_path, "s.yaml", text))
    assert "computed key cannot be checked; use contact.<field>" in msg


def test_an_unknown_top_level_name_is_refused(tmp_path: Path) -> None:
    text = three_steps().replace("body: one", 'body: "Hi {{ foo }}"')
    path = write(tmp_path, "s.yaml", text)
    msg = one_problem(path)
    assert msg.startswith(f"{path}:5: step 1: body: unknown name 'foo'")
    assert "use contact.<field> or sender.name / sender.address" in msg


def test_names_the_template_sets_itself_are_fine(tmp_path: Path) -> None:
    body = "{% set greeting = 'Hi' %}{{ greeting }} {{ contact.first_name | upper }}"
    text = three_steps().replace("body: one", f'body: "{body}"')
    seq = load_sequence(write(tmp_path, "s.yaml", text))
    assert seq.fields_used == {"first_name"}


def test_a_jinja_syntax_error_is_reported_with_step_and_line(tmp_path: Path) -> None:
    text = three_steps().replace("body: three", 'body: "Bye {{ contact.first_name }"')
    path = write(tmp_path, "s.yaml", text)
    msg = one_problem(path)
    assert msg.startswith(f"{path}:10: step 3: body: line 1 of the template:")


def test_a_jinja_syntax_error_on_a_later_template_line(tmp_path: Path) -> None:
    text = three_steps().replace("body: one", "body: |\n      Hi\n      {% if %}\n")
    msg = one_problem(write(tmp_path, "s.yaml", text))
    assert "step 1: body: line 2 of the template:" in msg


def test_sender_name_and_address_are_allowed_sender_phone_is_not(tmp_path: Path) -> None:
    ok = three_steps().replace("body: two", 'body: "{{ sender.name }} {{ sender.address }}"')
    assert load_sequence(write(tmp_path, "ok.yaml", ok)).fields_used == frozenset()
    bad = three_steps().replace("body: two", 'body: "Call {{ sender.phone }}"')
    path = write(tmp_path, "bad.yaml", bad)
    msg = one_problem(path)
    assert msg.startswith(f"{path}:7: step 2: body: sender.phone does not exist")
    assert "use sender.name or sender.address" in msg


def test_several_problems_in_one_file_are_all_reported(tmp_path: Path) -> None:
    text = """\
        mailbox: marketing
        steps:
          - wait: 0s
            body: "Hi {{ contact.company }}"
          - wait: 1d
            subject: Again
            body: "{{ nope }}"
          - wait: 2d
            body: "{{ sender.phone }}"
        """
    path = write(tmp_path, "s.yaml", text)
    found = problems_of(path, ["sales"])
    assert found == [
        f"{path}:1: unknown mailbox 'marketing' (the settings file defines: sales)",
        f"{path}:3: step 1: needs a subject (later steps reuse it as 'Re: ...')",
        found[2],
        found[3],
        found[4],
        found[5],
        found[6],
    ]
    assert found[2].startswith(f"{path}:4: step 1: body: contact.company is not declared")
    assert found[3].startswith(f"{path}:6: step 2: remove 'subject'")
    assert found[4].startswith(f"{path}:7: step 2: body: unknown name 'nope'")
    assert found[5].startswith(f"{path}:8: step 3: the last step must be the break-up")
    assert found[6].startswith(f"{path}:9: step 3: body: sender.phone does not exist")


# --- load_all ------------------------------------------------------------------------------


def test_load_all_reads_every_yaml_file(tmp_path: Path) -> None:
    write(tmp_path, "one.yaml", GOOD)
    write(tmp_path, "two.yaml", three_steps())
    (tmp_path / "notes.txt").write_text("not a sequence", encoding="utf-8")
    found = load_all(tmp_path, ["sales"])
    assert sorted(found) == ["one", "two"]
    assert all(isinstance(s, Sequence) for s in found.values())
    assert found["two"].id == "two"


def test_load_all_of_an_empty_folder_is_empty(tmp_path: Path) -> None:
    assert load_all(tmp_path) == {}


def test_load_all_reports_problems_of_several_files_at_once(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", GOOD)
    bad1 = write(tmp_path, "bad1.yaml", three_steps(step2="    subject: Again\n"))
    bad2 = write(tmp_path, "bad2.yaml", "mailbox: sales\nsteps: [\n")
    old = write(tmp_path, "old.yml", GOOD)
    with pytest.raises(SequenceError) as info:
        load_all(tmp_path, ["sales"])
    found = info.value.problems
    assert len(found) == 3, found
    assert found[0].startswith(f"{bad1}:8: step 2: remove 'subject'")
    assert found[1].startswith(f"{bad2}:")
    assert "not valid YAML" in found[1]
    assert found[2] == f"{old}: rename it to old.yaml (sequence files end in .yaml)"


def test_load_all_checks_mailboxes_of_every_file(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", three_steps().replace("sales", "x"))
    b = write(tmp_path, "b.yaml", three_steps().replace("sales", "y"))
    with pytest.raises(SequenceError) as info:
        load_all(tmp_path, iter(["sales"]))  # any iterable, used once per file
    assert [p.split(": ")[0] for p in info.value.problems] == [f"{a}:1", f"{b}:1"]


def test_load_all_of_a_missing_folder_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(SequenceError) as info:
        load_all(tmp_path / "nowhere")
    assert str(info.value) == (
        f"{tmp_path / 'nowhere'}: sequences folder not found (create it, or set "
        "'sequences:' in the settings file)"
    )


# --- contact_values ------------------------------------------------------------------------


@pytest.fixture
def seq(tmp_path: Path) -> Sequence:
    return load_sequence(write(tmp_path, "after-call.yaml", GOOD))


def test_defaults_are_applied_and_given_values_win(seq: Sequence) -> None:
    values = seq.contact_values("jo@acme.test", {"first_name": "Jo", "next_step": "a demo"})
    assert values == {
        "email": "jo@acme.test",
        "first_name": "Jo",
        "company": "your team",
        "next_step": "a demo",
    }
    values = seq.contact_values(
        "jo@acme.test", {"first_name": "Jo", "next_step": "a demo", "company": "Acme"}
    )
    assert values["company"] == "Acme"


def test_extra_given_values_are_kept(seq: Sequence) -> None:
    values = seq.contact_values("jo@acme.test", {"first_name": "Jo", "next_step": "x", "vip": "y"})
    assert values["vip"] == "y"


def test_email_is_always_the_address_given(seq: Sequence) -> None:
    values = seq.contact_values(
        "jo@acme.test", {"first_name": "Jo", "next_step": "x", "email": "evil@x.test"}
    )
    assert values["email"] == "jo@acme.test"


def test_required_variables_missing_are_all_named(seq: Sequence) -> None:
    with pytest.raises(EnrollError) as info:
        seq.contact_values("jo@acme.test", {})
    msg = str(info.value)
    assert "missing first_name, next_step (sequence 'after-call' needs them" in msg
    assert "pass --var first_name=..." in msg
    assert "give a default under variables: in after-call.yaml" in msg


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_blank_values_count_as_missing(seq: Sequence, blank: str) -> None:
    with pytest.raises(EnrollError) as info:
        seq.contact_values("jo@acme.test", {"first_name": "Jo", "next_step": blank})
    assert "missing next_step (sequence 'after-call' needs it;" in str(info.value)


def test_a_blank_given_value_falls_back_to_the_default(seq: Sequence) -> None:
    values = seq.contact_values(
        "jo@acme.test", {"first_name": "Jo", "next_step": "x", "company": "  "}
    )
    assert values["company"] == "your team"


def test_first_name_used_by_a_template_is_required(seq: Sequence) -> None:
    with pytest.raises(EnrollError) as info:
        seq.contact_values("jo@acme.test", {"next_step": "a demo"})
    assert "missing first_name (" in str(info.value)


def test_first_name_with_a_default_is_not_required(tmp_path: Path) -> None:
    text = GOOD.replace("  company: your team\n", "  company: your team\n  first_name: there\n")
    seq = load_sequence(write(tmp_path, "s.yaml", text))
    values = seq.contact_values("jo@acme.test", {"next_step": "a demo"})
    assert values["first_name"] == "there"


def test_a_required_variable_no_template_uses_is_still_required(tmp_path: Path) -> None:
    seq = load_sequence(write(tmp_path, "s.yaml", three_steps(top="variables:\n  owner: null\n")))
    assert seq.fields_used == frozenset()
    with pytest.raises(EnrollError) as info:
        seq.contact_values("jo@acme.test", {})
    assert "missing owner (" in str(info.value)
    assert seq.contact_values("jo@acme.test", {"owner": "Sam"})["owner"] == "Sam"


def test_first_name_not_used_is_not_required(tmp_path: Path) -> None:
    seq = load_sequence(write(tmp_path, "s.yaml", three_steps()))
    assert seq.contact_values("jo@acme.test", {}) == {"email": "jo@acme.test"}


@settings(max_examples=60, deadline=None)
@given(
    first=st.text(min_size=1, max_size=20).filter(str.strip),
    step=st.text(min_size=1, max_size=20).filter(str.strip),
    company=st.one_of(st.none(), st.text(max_size=20)),
)
def test_contact_values_property(first: str, step: str, company: str | None) -> None:
    seq = _GOOD_SEQ
    given_values = {"first_name": first, "next_step": step}
    if company is not None:
        given_values["company"] = company
    values = seq.contact_values("jo@acme.test", given_values)
    assert values["first_name"] == first
    assert values["next_step"] == step
    expected = company if company is not None and company.strip() else "your team"
    assert values["company"] == expected
    assert all(values[name].strip() for name in seq.fields_used)


def _good_seq() -> Sequence:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return load_sequence(write(Path(d), "after-call.yaml", GOOD))


_GOOD_SEQ = _good_seq()


# --- YAML anchors --------------------------------------------------------------------------


def test_anchors_and_merge_keys_can_share_step_settings(tmp_path: Path) -> None:
    text = """\
        mailbox: sales
        variables:
          company: &team your team
          team: *team
        steps:
          - &first
            wait: 0s
            subject: Hi
            body: "{{ contact.company }}"
          - <<: *first
            subject: null
            wait: 2d
          - wait: 3d
            breakup: true
            body: bye
        """
    seq = load_sequence(write(tmp_path, "s.yaml", text))
    assert dict(seq.variables) == {"company": "your team", "team": "your team"}
    assert seq.steps[1].body == "{{ contact.company }}"
    assert seq.steps[1].subject is None
    assert seq.steps[1].wait.delta == timedelta(days=2)
    assert [s.line for s in seq.steps] == [6, 10, 13]


def test_a_problem_in_a_merged_key_points_at_the_mapping(tmp_path: Path) -> None:
    text = """\
        mailbox: sales
        steps:
          - &first
            wait: 0s
            subject: Hi
            body: one
          - <<: *first
            wait: 2d
          - wait: 3d
            breakup: true
            body: bye
        """
    path = write(tmp_path, "s.yaml", text)
    msg = one_problem(path)
    assert msg.startswith(f"{path}:7: step 2: remove 'subject'")


def test_an_undefined_alias_is_reported_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "s.yaml", three_steps().replace("body: three", "body: *missing"))
    msg = one_problem(path)
    assert msg.startswith(f"{path}:10: not valid YAML: found undefined alias 'missing'")


def test_a_field_read_only_through_a_fallback_is_optional(tmp_path: Path) -> None:
    from sequencer.render import render

    seq = load_sequence(
        write(
            tmp_path,
            "fallback.yaml",
            """\
            mailbox: sales
            variables:
              role: null
            steps:
              - wait: 0s
                subject: "Hello {{ contact.first_name | default('there') }}"
                body: "As {{ contact.role | default('the person who signs off') }}, you decide."
              - wait: 3d
                breakup: true
                body: "{% if contact.role is defined %}{{ contact.role }}: {% endif %}bye"
            """,
        )
    )
    values = seq.contact_values("jo@acme.test", {})  # neither first_name nor role: fine
    assert render(seq.steps[0].body, values, {}) == "As the person who signs off, you decide."
    assert render(seq.steps[1].body, values, {}) == "bye"
    assert render(seq.steps[0].subject or "", values, {}) == "Hello there"


def test_one_bare_read_makes_the_field_required_again(tmp_path: Path) -> None:
    seq = load_sequence(
        write(
            tmp_path,
            "bare.yaml",
            """\
            mailbox: sales
            variables:
              role: null
            steps:
              - wait: 0s
                subject: "Hello {{ contact.first_name | default('there') }}"
                body: "As {{ contact.role | default('the lead') }}, you decide."
              - wait: 3d
                breakup: true
                body: "{{ contact.role }}: bye"
            """,
        )
    )
    with pytest.raises(EnrollError, match="missing role"):
        seq.contact_values("jo@acme.test", {})


def test_business_day_wait_in_a_weekend_only_window_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "weekend.yaml",
        """\
        mailbox: sales
        window: {days: [sat, sun], hours: "10:00-12:00"}
        steps:
          - wait: 0s
            subject: "Hi"
            body: "Notes."
          - wait: 3bd
            breakup: true
            body: "I'll stop here; a reply is all it takes."
        """,
    )
    (problem,) = problems_of(path)
    assert problem.startswith(f"{path}:7: step 2: a wait in business days can never land")
    assert "add a weekday to the window or give the wait in days" in problem


# --- hostile files: bounded, refused with file:line, never a traceback ---------------------

STEPS = """\
steps:
  - wait: 0s
    subject: Hi
    body: Hello
    breakup: true
"""


def test_a_billion_laughs_file_is_refused_fast_in_little_memory(tmp_path: Path) -> None:
    """Nine levels of nine aliases stand for 9**9 strings: refused at the alias that crosses
    the bound, without expanding anything (it used to take 1.8 GB, 44 s and a traceback)."""
    path = write(tmp_path, "bomb.yaml", "mailbox: sales\n" + laughs() + STEPS)
    out = load_capped(
        "from pathlib import Path\nfrom sequencer.errors import SequenceError\n"
        "from sequencer.sequences import load_sequence\n",
        f"""
        try:
            load_sequence(Path({str(path)!r}))
        except SequenceError as exc:
            result = exc.problems
        """,
    )
    assert out["result"] == [
        f"{path}:7: the document expands to more than 100000 values through its aliases "
        "(here *lol4); remove the aliases (a settings or sequence file holds a few hundred)"
    ]
    assert out["seconds"] < 0.5, out
    assert out["peak_mb"] < 200, out


def test_a_few_aliases_are_still_fine(tmp_path: Path) -> None:
    path = write(tmp_path, "ok.yaml", "mailbox: sales\nx-shared: " + laughs(2, 9)[6:] + STEPS)
    with pytest.raises(SequenceError, match="unknown key 'x-shared'"):
        load_sequence(path)  # composed and validated: 9 * 9 values are no bomb


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "loop.yaml", "mailbox: sales\nx: &a [1, *a]\n" + STEPS)
    assert one_problem(path) == (
        f"{path}:2: alias *a is used inside its own anchor (a loop); write the value out instead"
    )


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ('!!python/object/apply:os.system ["echo pwned"]', "!!python/object/apply:os.system"),
        ("!!python/name:os.system", "!!python/name:os.system"),
        ("!custom x", "!custom"),
        ("!!binary aGk=", "!!binary"),
        ("!!set {a}", "!!set"),
        ("!!timestamp 2026-01-01", "!!timestamp"),
        ("!!str [a]", "!!str"),  # a core tag on the wrong kind of node
    ],
)
def test_tags_beyond_the_plain_core_types_are_refused_with_their_line(
    tmp_path: Path, value: str, tag: str
) -> None:
    path = write(
        tmp_path, "tagged.yaml", f"mailbox: sales\nvariables:\n  company: {value}\n" + STEPS
    )
    assert one_problem(path) == (
        f"{path}:3: the tag {tag} is not allowed (only plain values, lists and mappings; "
        "remove the tag, or put the value in quotes to keep it as text)"
    )


def test_a_tag_handle_declared_with_percent_tag_is_refused_too(tmp_path: Path) -> None:
    text = "%TAG !p! tag:yaml.org,2002:python/\n---\nmailbox: !p!object:os.system x\n" + STEPS
    path = write(tmp_path, "directive.yaml", text)
    assert one_problem(path).startswith(f"{path}:3: the tag !p!object:os.system is not allowed")


def test_plain_core_tags_are_accepted(tmp_path: Path) -> None:
    text = "mailbox: !!str sales\nvariables: !!map\n  company: !!str 2025\n" + STEPS
    seq = load_sequence(write(tmp_path, "core.yaml", text))
    assert seq.mailbox == "sales" and seq.variables == {"company": "2025"}


@pytest.mark.parametrize("style", ["block", "flow"])
def test_deep_nesting_is_refused_with_its_line(tmp_path: Path, style: str) -> None:
    body = nested(200) if style == "block" else "x: " + "[" * 200 + "]" * 200 + "\n"
    path = write(tmp_path, "deep.yaml", "mailbox: sales\n" + body + STEPS)
    line = 52 if style == "block" else 2
    assert (
        one_problem(path)
        == f"{path}:{line}: nested more than 50 levels deep; flatten the structure"
    )


def test_very_deep_flow_nesting_is_refused_without_recursion(tmp_path: Path) -> None:
    path = write(tmp_path, "deeper.yaml", "mailbox: sales\nx: " + "[" * 200_000 + "\n")
    assert "nested more than 50 levels deep" in one_problem(path)


def test_a_file_over_one_mib_is_refused_unread(tmp_path: Path) -> None:
    path = write(tmp_path, "huge.yaml", "mailbox: sales\n" + "# padding\n" * 110_000 + STEPS)
    assert one_problem(path) == (
        f"{path}: larger than 1 MiB; a settings or sequence file is a few KB"
    )


def test_many_values_without_aliases_are_bounded_too(tmp_path: Path) -> None:
    path = write(tmp_path, "wide.yaml", "mailbox: sales\nx: [" + "a, " * 120_000 + "a]\n" + STEPS)
    assert one_problem(path) == (
        f"{path}:2: the document expands to more than 100000 values; split it into smaller "
        "files (a settings or sequence file holds a few hundred)"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1" * 5000, "cannot read '1111111111111111111111111111111111111...' as int"),
        ("2026-13-45", "cannot read '2026-13-45' as timestamp (ValueError: month must be in"),
        ("!!int abc", "cannot read 'abc' as int"),
        ("!!bool maybe", "cannot read 'maybe' as bool"),
    ],
)
def test_a_value_yaml_cannot_convert_is_refused_with_its_line(
    tmp_path: Path, value: str, message: str
) -> None:
    path = write(
        tmp_path, "scalar.yaml", f"mailbox: sales\nvariables:\n  company: {value}\n" + STEPS
    )
    found = one_problem(path)
    assert found.startswith(f"{path}:3: {message}"), found
    assert found.endswith("; put it in quotes to keep it as text")


def test_a_raw_control_character_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bell.yaml", "mailbox: sales\n\n# ring \x07\n" + STEPS)
    assert one_problem(path) == (
        f"{path}:3: not valid YAML: U+0007 (special characters are not allowed); remove it"
    )


@pytest.mark.parametrize(
    ("where", "escaped", "what"),
    [
        ("subject", "Hi\\nBcc: x@evil.test", "contains a line break (U+000A, line feed)"),
        ("subject", "Hi \\ud83d", "contains U+D83D, a lone surrogate"),
        ("body", "Hi \\x00 there", "contains the control character U+0000, NUL"),
        ("body", "Hi\\r\\nthere", "contains the control character U+000D, carriage return"),
        ("body", "Hi \\e[2J there", "contains the control character U+001B, escape"),
        ("body", "Hi \\udcff", "contains U+DCFF, a lone surrogate"),
        ("company", "Acme\\rBcc: x", "contains a line break (U+000D, carriage return)"),
        ("wait", "1d\\x7f", "contains the control character U+007F"),
    ],
)
def test_control_characters_and_surrogates_are_refused_with_their_line(
    tmp_path: Path, where: str, escaped: str, what: str
) -> None:
    """YAML escapes make them easy to write; each would fail or be mangled at send time."""
    text = (
        'mailbox: sales\nvariables:\n  company: "Acme"\nsteps:\n  - wait: "0s"\n'
        '    subject: "Hi"\n    body: "Hello"\n    breakup: true\n'
    )
    line = {"company": 3, "wait": 5, "subject": 6, "body": 7}[where]
    old = {"company": '"Acme"', "wait": '"0s"', "subject": '"Hi"', "body": '"Hello"'}[where]
    lines = text.splitlines()
    lines[line - 1] = lines[line - 1].replace(old, f'"{escaped}"')
    path = write(tmp_path, "chars.yaml", "\n".join(lines) + "\n")
    dotted = {"company": "variables.company"}.get(where, f"steps.0.{where}")
    assert one_problem(path).startswith(f"{path}:{line}: {dotted}: {what}")


def test_tabs_line_breaks_and_letters_are_fine_where_they_belong(tmp_path: Path) -> None:
    text = (
        'mailbox: sales\nvariables:\n  company: "Zoë Müller\\tGmbH"\nsteps:\n  - wait: 0s\n'
        '    subject: "Grüße,\\t{{ contact.company }}"\n'
        '    body: "Liebe Zoë,\\n\\n\\tdie Preise\\u2028folgen.\\n"\n    breakup: true\n'
    )
    seq = load_sequence(write(tmp_path, "fine.yaml", text))
    assert seq.steps[0].body == "Liebe Zoë,\n\n\tdie Preise\u2028folgen.\n"
    assert seq.variables["company"] == "Zoë Müller\tGmbH"


_YAML_BITS = [
    *["a", "b: ", ": ", "- ", "\n", "  ", "&x ", "*x", "<<: ", "? ", "[", "]", "{", "}", ","],
    *["!!str ", "!!int ", "!!float ", "!!map ", "!!seq ", "!!null ", "!!bool ", "! ", "!e!str "],
    *["'", '"', "|", ">", "#", "1", "0x1F", "1e5", ".inf", "2020-01-01", "12:30", "~", "null"],
    *["---\n", "...\n", "%YAML 1.2\n", "%TAG !e! tag:yaml.org,2002:\n", "\\ud800", "\t", "é"],
    *["steps", "mailbox", "body", "subject", "wait: 1d", "{{", "}}", "{%", "%}"],
]


@settings(max_examples=300, deadline=None)
@given(bits=st.lists(st.sampled_from(_YAML_BITS), max_size=30))
def test_any_yaml_loads_or_is_refused_never_a_traceback(bits: list[str]) -> None:
    """Found this way: `? !!float` (an empty float key) raised a bare IndexError in ruamel."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_text("".join(bits), encoding="utf-8")
        with contextlib.suppress(SequenceError):
            load_sequence(path, ["sales"])
        with contextlib.suppress(ConfigError):
            load_settings(path)


def test_an_anchor_defined_twice_is_refused_at_its_line(tmp_path: Path) -> None:
    """Found by the fuzz test above: ruamel only warns when an anchor is redefined, and which
    value a later alias means is a trap."""
    path = tmp_path / "twice.yaml"
    path.write_text("b: &x ---\nc: &x 2\nd: *x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"twice\.yaml:2: anchor &x is defined twice"):
        load_settings(path)
