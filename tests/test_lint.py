"""`sequencer check`'s etiquette lint: what a salesperson is told about a sequence that loads
but would annoy the people it is sent to, and where in the file to fix it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sequencer.lint import Finding, lint, lint_contacts
from sequencer.sequences import Sequence, load_all, load_sequence

REPO = Path(__file__).resolve().parents[1]

OPENER = """\
Hi {{ contact.first_name }},

Thank you for the call this morning. As agreed, I'll send the pilot plan for
{{ contact.company }} by Thursday.

{{ sender.name }}
"""
CHECKLIST = """\
Hi {{ contact.first_name }},

Three things make the pilot far more useful, if they are easy to have to hand:
the numbers you would judge it by, who else needs to say yes, and the tools it
has to fit around. Rough answers are plenty.

{{ sender.name }}
"""
LESSON = """\
Hi {{ contact.first_name }},

One lesson from pilots that went well: each had a named owner, chosen before the
start rather than after. If it isn't obvious yet who that is at {{ contact.company }},
I'm happy to explain what the role involves.

{{ sender.name }}
"""
BREAKUP = """\
Hi {{ contact.first_name }},

I'll assume priorities have shifted, and that's fine. I won't write again about this.
If the timing changes, a one-word reply is all it takes.

{{ sender.name }}
"""


def write_sequence(
    folder: Path,
    steps: list[tuple[str, str]],
    *,
    variables: str = '  company: "your team"\n',
    name: str = "after-call.yaml",
) -> Sequence:
    """A sequence file of (wait, body) steps; the last is the break-up. Bodies are block
    scalars, so body line N of step S sits at a line the tests can compute."""
    text = "mailbox: sales\nvariables:\n" + variables + "steps:\n"
    for number, (wait, body) in enumerate(steps, start=1):
        text += f"  - wait: {wait}\n"
        if number == 1:
            text += '    subject: "Notes from our call"\n'
        if number == len(steps):
            text += "    breakup: true\n"
        text += "    body: |\n" + textwrap.indent(body, "      ")
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return load_sequence(path)


def good_steps(breakup: str = BREAKUP) -> list[tuple[str, str]]:
    return [("0s", OPENER), ("3bd", CHECKLIST), ("4d", LESSON), ("5d", breakup)]


def file_line(seq: Sequence, text: str) -> int:
    """The 1-based line of the file where `text` first appears."""
    for number, line in enumerate(seq.path.read_text(encoding="utf-8").splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {seq.path}")


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


# --- a good sequence --------------------------------------------------------------------------


def test_a_considerate_sequence_gets_no_findings(tmp_path: Path) -> None:
    assert lint(write_sequence(tmp_path, good_steps())) == []


def test_the_shipped_example_sequences_get_no_findings_at_all() -> None:
    for seq in load_all(REPO / "sequences", ["sales"]).values():
        assert lint(seq) == [], seq.id


def test_the_demo_sequence_has_no_errors() -> None:
    """Its waits are seconds on purpose (the demo runs in a minute), so only errors count."""
    for seq in load_all(REPO / "sequencer" / "demo_data", ["sales"]).values():
        assert [f for f in lint(seq) if f.severity == "error"] == [], seq.id


# --- breakup-asks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ask", "shown"),
    [
        ("If it helps, happy to hop on a call this week.", "hop on a call"),
        ("Whatever suits you: https://calendly.com/sam-seller/intro", "https://calendly.com"),
        ("My calendar is open at cal.com/sam-seller if you prefer.", "calendar"),
        ("Could you spare 15 minutes next Tuesday?", "15 minutes"),
        ("Would you be open to a quick call before Friday?", "open to a quick call"),
        ("Feel free to book a time that suits you.", "book a"),
        ("Shall we schedule a short demo for your team?", "schedule a"),
        ("The offer ends Friday, so sign up before then.", "sign up"),
        ("You can still buy it at this year's price.", "buy it"),
        ("Sollen wir einen Termin vereinbaren?", "Termin vereinbaren"),
        ("Pouvons-nous prendre un rendez-vous la semaine prochaine ?", "prendre un rendez-vous"),
        ("¿Podemos agendar una llamada esta semana?", "agendar una llamada"),
    ],
)
def test_a_break_up_that_still_asks_for_more_than_a_reply_is_an_error(
    tmp_path: Path, ask: str, shown: str
) -> None:
    breakup = BREAKUP.replace("If the timing changes", f"{ask}\nIf the timing changes")
    seq = write_sequence(tmp_path, good_steps(breakup))
    findings = lint(seq)
    assert codes(findings) == ["breakup-asks"]
    finding = findings[0]
    assert (finding.severity, finding.step) == ("error", 4)
    assert finding.line == file_line(seq, ask)
    assert shown in finding.message
    assert "reply" in finding.message
    assert str(finding).startswith(f"{seq.path}:{finding.line}: step 4: error: the break-up ")
    assert str(finding).endswith(" [breakup-asks]")


def test_a_calendar_link_variable_in_the_break_up_is_an_error(tmp_path: Path) -> None:
    breakup = BREAKUP + "PS: in case it helps: {{ contact.calendar_link }}\n"
    seq = write_sequence(
        tmp_path,
        good_steps(breakup),
        variables='  company: "your team"\n  calendar_link: "https://cal.example/sam"\n',
    )
    [finding] = lint(seq)
    assert finding.code == "breakup-asks"
    assert finding.line == file_line(seq, "{{ contact.calendar_link }}")
    assert "calendar link" in finding.message


@pytest.mark.parametrize(
    "fine",
    [
        "If that changes, a one-word reply is all it takes.",
        "If the timing changes, just reply to this email.",
        'If it is right, a one-word reply ("yes") is enough and I\'ll suggest a couple of '
        "times to talk.",
        'If you would still like the demo, reply "yes" and I\'ll set up a call.',
        "Thank you again for the 30 minutes you gave me in May.",
        "The proposal stays at the same link in case things change: {{ contact.company }}.",
        "I've put the schedule we discussed in the proposal, so nothing is lost.",
        "Hätten sich die Prioritäten geändert, genügt eine kurze Antwort.",
        "Si le calendrier change, une simple réponse suffit.",
        "Si cambia el momento, basta con responder a este correo.",
    ],
)
def test_a_break_up_that_only_invites_a_reply_is_fine(tmp_path: Path, fine: str) -> None:
    breakup = BREAKUP.replace("If the timing changes, a one-word reply is all it takes.", fine)
    assert lint(write_sequence(tmp_path, good_steps(breakup))) == []


def test_asking_for_a_call_before_the_break_up_is_not_a_break_up_problem(
    tmp_path: Path,
) -> None:
    lesson = LESSON.replace("I'm happy to", "Happy to hop on a call for 15 minutes to")
    steps = good_steps()
    steps[2] = ("4d", lesson)
    assert lint(write_sequence(tmp_path, steps)) == []


def test_several_asks_in_the_break_up_are_each_reported_on_their_line(tmp_path: Path) -> None:
    breakup = BREAKUP.replace(
        "If the timing changes",
        "Book a time here: https://calendly.com/sam\nOr let's hop on a call.\nIf the timing",
    )
    seq = write_sequence(tmp_path, good_steps(breakup))
    findings = lint(seq)
    assert codes(findings) == ["breakup-asks", "breakup-asks"]
    assert [f.line for f in findings] == [
        file_line(seq, "Book a time here"),
        file_line(seq, "Or let's hop on a call."),
    ]


# --- empty-opener ------------------------------------------------------------------------------

EMPTY_OPENERS = [
    "Just checking in on this.",
    "I'm just following up on the pilot.",
    "Touching base about the pilot plan.",
    "Circling back to the pilot plan we discussed.",
    "Any update on the pilot?",
    "Have you decided yet?",
    "Did you get my last email?",
    "Bumping this to the top of your inbox.",
    "Following up on my last email about the pilot.",
    "Ich wollte nur nachhaken, wie es mit dem Pilotprojekt aussieht.",
    "Ich wollte kurz nachhaken.",
    "Gibt es schon Neuigkeiten zum Pilotprojekt?",
    "Haben Sie meine letzte E-Mail erhalten?",
    "Je me permets de vous relancer au sujet du projet pilote.",
    "Je reviens vers vous concernant le projet pilote.",
    "Avez-vous eu le temps de lire ma proposition ?",
    "Avez-vous reçu mon dernier e-mail ?",
    "Solo quería hacer seguimiento del piloto.",
    "Solo para dar seguimiento a mi propuesta.",
    "¿Alguna novedad sobre el piloto?",
    "¿Recibiste mi último correo?",
]


@pytest.mark.parametrize("opener", EMPTY_OPENERS)
def test_an_empty_calorie_follow_up_is_a_warning_on_its_line(tmp_path: Path, opener: str) -> None:
    checklist = CHECKLIST.replace("Three things", f"{opener}\n\nThree things")
    seq = write_sequence(tmp_path, [("0s", OPENER), ("3bd", checklist), ("5d", BREAKUP)])
    findings = lint(seq)
    assert codes(findings) == ["empty-opener"]
    finding = findings[0]
    assert (finding.severity, finding.step) == ("warning", 2)
    assert finding.line == file_line(seq, opener)
    assert "ignore" in finding.message  # why it matters
    assert "something useful" in finding.message  # what to do instead


@pytest.mark.parametrize(
    "variant",
    [
        "Hi {{ contact.first_name }}, JUST CHECKING IN.",
        "Hi {{ contact.first_name }}, just   checking\n  in on the pilot.",
        "Any update on {{ contact.company }}'s pilot?",
        "Just {# a note to self #}following up.",
    ],
)
def test_openers_are_caught_whatever_the_case_spacing_or_template_markup(
    tmp_path: Path, variant: str
) -> None:
    body = variant.replace("\n  ", "\n") + "\n\n{{ sender.name }}\n"
    seq = write_sequence(tmp_path, [("0s", OPENER), ("3bd", body), ("5d", BREAKUP)])
    assert codes(lint(seq)) == ["empty-opener"]
    assert lint(seq)[0].line == file_line(seq, variant.split("\n")[0])


@pytest.mark.parametrize(
    "useful",
    [
        "Following up on {{ contact.company }}'s question about pricing: the pilot is free.",
        "I wanted to follow up with the pricing you asked for.",
        "Je reviens vers vous avec les chiffres promis.",
        "If there is any update on your side, I'll adjust the plan.",
        "Is there any update you need from us before the review?",
    ],
)
def test_a_follow_up_that_brings_something_is_not_an_empty_opener(
    tmp_path: Path, useful: str
) -> None:
    checklist = CHECKLIST.replace("Three things", f"{useful}\n\nThree things")
    assert (
        lint(write_sequence(tmp_path, [("0s", OPENER), ("3bd", checklist), ("5d", BREAKUP)])) == []
    )


# --- cadence ----------------------------------------------------------------------------------


NOTES = [
    "Pricing, since it comes up first: the pilot is free for 30 days, then per seat.",
    "Security reviews usually ask for our SOC 2 report; it is attached, ready to forward.",
    "Moving data in takes most teams an afternoon; we do the first import with you.",
    "Training is two one-hour sessions, recorded, so new joiners can catch up alone.",
    "Support answers within four business hours, from people who know the product.",
    "Single sign-on works with Okta, Entra ID and Google out of the box.",
    "Reports export to CSV and Excel, and a weekly summary can go to whoever needs it.",
]


def notes(count: int) -> list[tuple[str, str]]:
    """`count` distinct, useful follow-ups a week apart."""
    return [("1w", f"Hi {{{{ contact.first_name }}}},\n\n{note}\n") for note in NOTES[:count]]


def test_more_than_six_emails_before_the_break_up_is_a_warning_at_the_seventh(
    tmp_path: Path,
) -> None:
    seq = write_sequence(tmp_path, [("0s", OPENER), *notes(6), ("1w", BREAKUP)])
    findings = lint(seq)
    assert codes(findings) == ["too-many-steps"]
    assert (findings[0].step, findings[0].line) == (7, seq.steps[6].line)
    assert "7 emails before the break-up" in findings[0].message


def test_six_emails_and_a_break_up_is_fine(tmp_path: Path) -> None:
    assert lint(write_sequence(tmp_path, [("0s", OPENER), *notes(5), ("1w", BREAKUP)])) == []


@pytest.mark.parametrize("wait", ["1d", "36h", "1bd", "1 business day", "0s"])
def test_a_follow_up_sooner_than_two_business_days_is_a_warning(tmp_path: Path, wait: str) -> None:
    seq = write_sequence(
        tmp_path, [("0s", OPENER), (wait, CHECKLIST), ("4d", LESSON), ("5d", BREAKUP)]
    )
    findings = lint(seq)
    assert codes(findings) == ["short-wait"]
    assert findings[0].step == 2
    lines = seq.path.read_text(encoding="utf-8").splitlines()
    assert lines[findings[0].line - 1] == f"  - wait: {wait}"  # step 2's, not step 1's 0s
    assert f'"{wait}"' in findings[0].message


@pytest.mark.parametrize("wait", ["2bd", "2d", "48h", "1w"])
def test_two_business_days_or_more_is_fine(tmp_path: Path, wait: str) -> None:
    steps = good_steps()
    steps[1] = (wait, CHECKLIST)
    assert lint(write_sequence(tmp_path, steps)) == []


def test_step_1_may_go_at_once(tmp_path: Path) -> None:
    """Its wait counts from the enrolment, not from an email the contact received."""
    assert "short-wait" not in codes(lint(write_sequence(tmp_path, good_steps())))


def test_a_sequence_squeezed_into_less_than_a_week_is_a_warning(tmp_path: Path) -> None:
    seq = write_sequence(tmp_path, [("0s", OPENER), ("2bd", CHECKLIST), ("2d", BREAKUP)])
    findings = lint(seq)
    assert codes(findings) == ["short-sequence"]
    assert (findings[0].line, findings[0].step) == (None, None)
    assert "4 days" in findings[0].message
    assert str(findings[0]).startswith(f"{seq.path}: warning: the emails span only 4 days")


def test_a_week_from_the_first_email_to_the_break_up_is_enough(tmp_path: Path) -> None:
    """The wait before step 1 delays the start; it does not spread the emails."""
    seq = write_sequence(tmp_path, [("2w", OPENER), ("3d", CHECKLIST), ("4d", BREAKUP)])
    assert lint(seq) == []


def test_a_step_that_repeats_the_previous_one_is_a_warning_on_its_body(tmp_path: Path) -> None:
    again = CHECKLIST.replace("Rough answers are plenty.", "Rough answers are fine.")
    seq = write_sequence(
        tmp_path, [("0s", OPENER), ("3bd", CHECKLIST), ("4d", again), ("5d", BREAKUP)]
    )
    findings = lint(seq)
    assert codes(findings) == ["repeated-text"]
    assert (findings[0].step, findings[0].line) == (3, seq.steps[2].body_line)
    assert "repeats step 2" in findings[0].message


def test_the_same_greeting_and_signature_do_not_make_steps_repeats(tmp_path: Path) -> None:
    assert "repeated-text" not in codes(lint(write_sequence(tmp_path, good_steps())))


def test_findings_come_in_file_order_whole_sequence_first(tmp_path: Path) -> None:
    checklist = CHECKLIST.replace("Three things", "Just checking in.\n\nThree things")
    seq = write_sequence(
        tmp_path,
        [("0s", OPENER), ("1d", checklist), ("1d", LESSON), ("1d", BREAKUP + "Buy it now.\n")],
    )
    found = [(f.step, f.code) for f in lint(seq)]
    assert found == [
        (None, "short-sequence"),
        (2, "short-wait"),
        (2, "empty-opener"),
        (3, "short-wait"),
        (4, "short-wait"),
        (4, "breakup-asks"),
    ]


# --- no-fallback ------------------------------------------------------------------------------

ROLE = """\
Hi {{ contact.first_name }},

Teams like yours at {{ contact.company }} usually start with one region.
As {{ contact.role }}, you would see the results first.

{{ sender.name }}
"""


def rows(count: int, blank: int, field: str = "role") -> list[dict[str, str]]:
    return [
        {"email": f"p{n}@acme.test", "first_name": f"P{n}", field: "" if n < blank else "CFO"}
        for n in range(count)
    ]


def role_sequence(tmp_path: Path, body: str = ROLE, role: str = "null") -> Sequence:
    return write_sequence(
        tmp_path,
        [("0s", OPENER), ("3bd", body), ("4d", LESSON), ("5d", BREAKUP)],
        variables=f'  company: "your team"\n  role: {role}\n',
    )


def test_a_field_often_blank_in_the_csv_and_used_without_a_fallback_is_a_warning(
    tmp_path: Path,
) -> None:
    seq = role_sequence(tmp_path)
    findings = lint_contacts(seq, rows(10, blank=3), "leads.csv")
    assert codes(findings) == ["no-fallback"]
    finding = findings[0]
    assert (finding.severity, finding.step) == ("warning", 2)
    assert finding.line == file_line(seq, "As {{ contact.role }}")
    assert "contact.role is blank in 3 of 10 rows (30%) of leads.csv" in finding.message
    assert '{{ contact.role | default("...") }}' in finding.message
    assert "variables:" in finding.message


def test_a_column_the_csv_lacks_is_a_warning(tmp_path: Path) -> None:
    people = [{"email": "jo@acme.test", "first_name": "Jo"}] * 4
    [finding] = lint_contacts(role_sequence(tmp_path), people, "leads.csv")
    assert "leads.csv has no 'role' column (all 4 rows lack it)" in finding.message


def test_first_name_is_checked_too(tmp_path: Path) -> None:
    people = [{"email": f"p{n}@acme.test", "first_name": "" if n % 2 else "Jo"} for n in range(4)]
    seq = write_sequence(tmp_path, good_steps())
    [finding] = lint_contacts(seq, people, "leads.csv")
    assert "contact.first_name is blank in 2 of 4 rows (50%)" in finding.message
    assert finding.step == 1


def test_a_few_blanks_are_not_worth_a_warning(tmp_path: Path) -> None:
    assert lint_contacts(role_sequence(tmp_path), rows(10, blank=1), "leads.csv") == []


@pytest.mark.parametrize(
    "guarded",
    [
        "As {{ contact.role | default('the person who signs off') }}, you see results first.",
        "As {{ contact.role | d('the person who signs off') }}, you see results first.",
        "{% if contact.role is defined %}As {{ contact.role }}, you see results first.{% endif %}",
    ],
)
def test_a_field_with_a_fallback_in_the_template_is_fine(tmp_path: Path, guarded: str) -> None:
    body = ROLE.replace("As {{ contact.role }}, you would see the results first.", guarded)
    assert lint_contacts(role_sequence(tmp_path, body), rows(10, blank=10), "leads.csv") == []


def test_a_field_with_a_declared_default_is_fine(tmp_path: Path) -> None:
    seq = role_sequence(tmp_path, role='"the person who signs off"')
    assert lint_contacts(seq, rows(10, blank=10), "leads.csv") == []


def test_a_fallback_in_one_step_does_not_cover_a_bare_use_in_another(tmp_path: Path) -> None:
    body = ROLE.replace("{{ contact.role }}", "{{ contact.role | default('the lead') }}")
    lesson = LESSON.replace("I'm happy", "As {{ contact.role }}, I'm happy")
    seq = write_sequence(
        tmp_path,
        [("0s", OPENER), ("3bd", body), ("4d", lesson), ("5d", BREAKUP)],
        variables='  company: "your team"\n  role: null\n',
    )
    [finding] = lint_contacts(seq, rows(10, blank=5), "leads.csv")
    assert (finding.step, finding.line) == (3, file_line(seq, "As {{ contact.role }}, I'm"))


def test_csv_headers_are_matched_as_enroll_reads_them(tmp_path: Path) -> None:
    people = [{" Email ": f"p{n}@acme.test", "First_Name": "Jo", "ROLE": "CFO"} for n in range(5)]
    assert lint_contacts(role_sequence(tmp_path), people, "leads.csv") == []


def test_an_empty_csv_has_nothing_to_say(tmp_path: Path) -> None:
    assert lint_contacts(role_sequence(tmp_path), [], "leads.csv") == []
