"""What a reply asks for: the pure rules of sequencer/classify/intent.py, periods.py and
languages.py, on sentences written for these tests (not the labelled mail of tests/mail)."""

from __future__ import annotations

import time
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sequencer.classify import Intent, Referral, lexicon, periods
from sequencer.classify.intent import IntentReading, read_intent
from sequencer.classify.languages import guess_languages, numeric_date_order

SENT = date(2026, 3, 10)  # a Tuesday in Q1
SENDER = "pat@client.test"


def read(text: str, **kwargs: object) -> IntentReading:
    kwargs.setdefault("sent", SENT)
    kwargs.setdefault("sender", SENDER)
    return read_intent(text, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Period arithmetic


dates = st.dates(min_value=date(2000, 1, 1), max_value=date(2098, 12, 31))
fiscal_starts = st.tuples(st.integers(1, 12), st.integers(1, 28))


def months_between(a: date, b: date) -> int:
    return (b.year - a.year) * 12 + b.month - a.month


@given(sent=dates, quarter=st.integers(1, 4), fiscal=fiscal_starts)
def test_a_quarter_starts_on_its_first_day_in_the_coming_year(
    sent: date, quarter: int, fiscal: tuple[int, int]
) -> None:
    start = periods.quarter_start(sent, quarter, fiscal)
    assert sent < start <= sent + timedelta(days=366)
    assert start.day == fiscal[1]
    assert (start.month - fiscal[0]) % 12 == 3 * (quarter - 1)


@given(sent=dates, fiscal=fiscal_starts)
def test_next_quarter_is_the_nearest_quarter_start(sent: date, fiscal: tuple[int, int]) -> None:
    following = periods.resolve("quarter:next", sent, fiscal)
    starts = [periods.quarter_start(sent, q, fiscal) for q in (1, 2, 3, 4)]
    assert following == min(starts)
    assert sent < following <= sent + timedelta(days=93)


@given(sent=dates, month=st.integers(1, 12))
def test_a_month_rule_is_the_next_first_of_that_month(sent: date, month: int) -> None:
    start = periods.resolve(f"month:{month:02d}", sent)
    assert (start.month, start.day) == (month, 1)
    assert sent < start and months_between(sent, start) <= 12


@given(sent=dates, fiscal=fiscal_starts)
def test_every_rule_is_in_the_future_and_within_15_months(
    sent: date, fiscal: tuple[int, int]
) -> None:
    rules = [
        *(f"month:{m:02d}" for m in range(1, 13)),
        "month:next",
        *(f"quarter:{q}" for q in range(1, 5)),
        "quarter:next",
        "half:1",
        "half:2",
        "half:next",
        "year:next",
        "fiscal_year:next",
        "week:next",
        "days:14",
        "holidays",
    ]
    for rule in rules:
        when = periods.resolve(rule, sent, fiscal)
        assert sent < when, rule
        assert months_between(sent, when) <= 15, rule
        after = periods.after(rule, sent, fiscal)
        assert sent < after and months_between(sent, after) <= 15, rule


def test_named_periods_land_on_their_first_day() -> None:
    assert periods.resolve("year:next", date(2026, 12, 31)) == date(2027, 1, 1)
    assert periods.resolve("month:next", date(2026, 1, 31)) == date(2026, 2, 1)
    assert periods.resolve("week:next", SENT) == date(2026, 3, 16)  # the next Monday
    assert periods.resolve("week:next", date(2026, 3, 15)) == date(2026, 3, 16)  # a Sunday
    assert periods.resolve("days:14", SENT) == date(2026, 3, 24)
    assert periods.resolve("holidays", date(2026, 12, 1)) == date(2027, 1, 1)
    assert periods.resolve("holidays", date(2026, 7, 1)) == date(2026, 9, 1)
    assert periods.resolve("fiscal_year:next", SENT, (4, 1)) == date(2026, 4, 1)
    assert periods.after("quarter:3", SENT) == date(2026, 10, 1)
    assert periods.after("quarter:3", date(2026, 8, 1)) == date(2026, 10, 1)  # written in Q3
    assert periods.after("quarter:4", SENT) == date(2027, 1, 1)
    assert periods.after("month:03", SENT) == date(2026, 4, 1)


def test_a_fiscal_year_starting_on_the_31st_keeps_short_months() -> None:
    assert periods.quarter_start(date(2026, 3, 10), 2, (8, 31)) == date(2026, 11, 30)


@pytest.mark.parametrize("bad", ["month:13", "quarter:5", "days:0", "days:401", "weeks:2", ""])
def test_a_rule_outside_the_vocabulary_is_refused(bad: str) -> None:
    assert not periods.valid_rule(bad)
    with pytest.raises(ValueError, match="not a period rule"):
        periods.resolve(bad, SENT)


@pytest.mark.parametrize("bad", [(13, 1), (2, 30), (0, 1), (4, 31)])
def test_a_fiscal_year_start_that_is_not_a_day_is_an_error(bad: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="fiscal_year_start"):
        read_intent("Try me in Q3", sent=SENT, fiscal_year_start=bad)


def test_every_shipped_periods_table_uses_the_vocabulary() -> None:
    for code in lexicon.languages():
        for phrase, rule in lexicon.table("intent_periods", code).items():
            assert periods.valid_rule(rule), f"{code}.yaml: {phrase!r}: {rule!r}"


def test_a_broken_periods_rule_names_the_file_and_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sequencer.classify import intent

    real = lexicon.table
    monkeypatch.setattr(
        lexicon,
        "table",
        lambda name, code: {"after summer": "monthh:09"} if code == "en" else real(name, code),
    )
    intent._period_table.cache_clear()
    try:
        with pytest.raises(lexicon.LexiconError) as caught:
            intent._period_table(("en",))
    finally:
        intent._period_table.cache_clear()
    assert "en.yaml" in str(caught.value)
    assert "monthh:09" in str(caught.value) and "quarter:next" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# not_now: the date a person named, through the whole reading

QUARTER_WORDS = {
    "en": ["Try me in Q{n}.", "Let's revisit in Q{n}, please.", "Reach out again in Q{n}"],
    "de": ["Melden Sie sich bitte im Q{n} wieder.", "Bitte erst im {n}. Quartal wieder melden"],
    "fr": ["Recontactez-moi au T{n}.", "Pas maintenant, plutôt au Q{n}."],
    "es": ["Ahora no, vuelva a contactarme en el Q{n}."],
    "it": ["Non ora, ricontattami nel Q{n}."],
    "nl": ["Nu niet, neem in Q{n} weer contact op."],
    "pt": ["Agora não, volte a falar comigo no Q{n}."],
}


@settings(max_examples=60, deadline=None)
@given(
    sent=st.dates(min_value=date(2015, 1, 1), max_value=date(2040, 12, 31)),
    quarter=st.integers(1, 4),
    fiscal=st.sampled_from([(1, 1), (4, 1), (7, 1), (10, 1), (2, 1)]),
    choice=st.sampled_from([(c, s) for c, items in QUARTER_WORDS.items() for s in items]),
)
def test_any_quarter_phrase_gives_the_first_day_of_that_quarter(
    sent: date, quarter: int, fiscal: tuple[int, int], choice: tuple[str, str]
) -> None:
    _, sentence = choice
    reading = read(sentence.format(n=quarter), sent=sent, fiscal_year_start=fiscal)
    assert reading.intent is Intent.NOT_NOW
    assert reading.follow_up_on == periods.quarter_start(sent, quarter, fiscal)
    assert reading.follow_up_on is not None and reading.follow_up_on > sent
    assert months_between(sent, reading.follow_up_on) <= 15


MONTHS = {
    "en": (
        "January February March April May June July August September October November December",
        ["Please write again in early {m}.", "Not now - try me in {m}.", "Ping me in {m}"],
    ),
    "de": (
        "Januar Februar März April Mai Juni Juli August September Oktober November Dezember",
        ["Melden Sie sich bitte im {m} wieder.", "Gerade nicht, bitte Anfang {m} nochmal."],
    ),
    "fr": (
        "janvier février mars avril mai juin juillet août septembre octobre novembre décembre",
        ["Recontactez-moi en {m}.", "Pas maintenant, revenez vers moi début {m}."],
    ),
    "es": (
        "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre",
        ["Ahora no, escríbame en {m}.", "Vuelva a contactarme a principios de {m}."],
    ),
    "it": (
        "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre "
        "dicembre",
        ["Non ora, mi ricontatti a {m}.", "Ci risentiamo a inizio {m}."],
    ),
    "nl": (
        "januari februari maart april mei juni juli augustus september oktober november december",
        ["Nu niet, neem in {m} weer contact op.", "Mail me begin {m} opnieuw."],
    ),
    "pt": (
        "janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro dezembro",
        ["Agora não, volte a falar comigo em {m}.", "Entre em contato novamente em {m}."],
    ),
}


@settings(max_examples=80, deadline=None)
@given(
    sent=st.dates(min_value=date(2015, 1, 1), max_value=date(2040, 12, 31)),
    month=st.integers(1, 12),
    code=st.sampled_from(sorted(MONTHS)),
    pick=st.integers(0, 2),
)
def test_any_month_phrase_gives_the_next_first_of_that_month(
    sent: date, month: int, code: str, pick: int
) -> None:
    names, sentences = MONTHS[code]
    sentence = sentences[pick % len(sentences)].format(m=names.split()[month - 1])
    reading = read(sentence, sent=sent)
    assert reading.intent is Intent.NOT_NOW, sentence
    assert reading.follow_up_on == periods.next_on(sent, month), sentence


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Not now, maybe Q3.", date(2026, 7, 1)),
        ("Try me after Q3.", date(2026, 10, 1)),
        ("Could you reach out next quarter?", date(2026, 4, 1)),
        ("We're swamped. Let's reconnect next month.", date(2026, 4, 1)),
        ("Follow up in two weeks please", date(2026, 3, 24)),
        ("Busy right now, ping me in a couple of weeks", date(2026, 3, 24)),
        ("Bad timing - check back in 3 weeks.", date(2026, 3, 31)),
        ("Please get back to me next year.", date(2027, 1, 1)),
        ("Let's circle back in the new year.", date(2027, 1, 1)),
        ("Can we revisit after our fiscal year end?", date(2027, 1, 1)),
        ("Try me after the summer.", date(2026, 9, 1)),
        ("Please write again in early March.", date(2027, 3, 1)),
        ("Please try me after 15 March.", date(2026, 3, 16)),
        ("Not before April 20th, please.", date(2026, 4, 20)),
        ("Reach out after April, we'll have budget then.", date(2026, 5, 1)),
        ("Not this year. Try again in Q1 2027.", date(2027, 1, 1)),
        ("Happy to talk in September.", date(2026, 9, 1)),
        ("We're busy until May. Reach out then.", date(2026, 5, 1)),
        ("Bitte melden Sie sich ab dem 3. Februar wieder.", date(2027, 2, 3)),
        ("Aktuell keine Kapazitäten, bitte nach den Sommerferien erneut melden.", date(2026, 9, 1)),
        ("Kommen Sie im nächsten Quartal wieder auf mich zu.", date(2026, 4, 1)),
        ("Recontactez-moi à partir de septembre.", date(2026, 9, 1)),
        ("Pas pour le moment, relancez-moi à la rentrée.", date(2026, 9, 1)),
        ("Ahora mismo no, escríbeme el año que viene.", date(2027, 1, 1)),
        ("Non adesso, ricontattami tra un mese.", date(2026, 4, 10)),  # calendar month
        ("Op dit moment niet, neem na de zomer weer contact op.", date(2026, 9, 1)),
        ("Agora não. Volte a falar comigo no próximo trimestre.", date(2026, 4, 1)),
    ],
)
def test_not_now_remembers_the_first_day_they_named(text: str, expected: date) -> None:
    reading = read(text)
    assert reading.intent is Intent.NOT_NOW, reading
    assert reading.follow_up_on == expected, reading


def test_fiscal_quarters_follow_the_configured_year() -> None:
    april = (4, 1)
    assert read("Try me in Q3", fiscal_year_start=april).follow_up_on == date(2026, 10, 1)
    assert read("Try me in Q1", fiscal_year_start=april).follow_up_on == date(2026, 4, 1)
    assert read("Try me in Q4", fiscal_year_start=april).follow_up_on == date(2027, 1, 1)
    assert read("Next quarter, please.", fiscal_year_start=april).follow_up_on == date(2026, 4, 1)
    assert read("After our fiscal year end.", fiscal_year_start=april).follow_up_on == date(
        2026, 4, 1
    )
    assert read("Try me in Q3").follow_up_on == date(2026, 7, 1)


def test_a_not_now_without_a_date_has_none() -> None:
    for text in ["Not right now, maybe later.", "Bad timing, sorry.", "Momentan nicht."]:
        reading = read(text)
        assert reading.intent is Intent.NOT_NOW, text
        assert reading.follow_up_on is None, text


def test_without_the_reply_date_no_date_is_guessed() -> None:
    reading = read_intent("Try me in Q3.", sent=None)
    assert reading.intent is Intent.NOT_NOW
    assert reading.follow_up_on is None


def test_a_date_in_the_past_or_an_ambiguous_numeric_date_is_not_read() -> None:
    assert read("Not now; contact me after 02/01/2020.").follow_up_on is None
    # English writes both orders: 04/05 could be April or May, so no date is better.
    assert read("Not now, try me after 04/05/2026.").follow_up_on is None
    # German writes day first, so the same shape is unambiguous there.
    reading = read("Momentan nicht, bitte melden Sie sich ab dem 04.05.2026 wieder.")
    assert reading.follow_up_on == date(2026, 5, 4)


def test_a_modal_may_is_not_the_month() -> None:
    reading = read("Not now - we may look again later.")
    assert reading.intent is Intent.NOT_NOW
    assert reading.follow_up_on is None


# ---------------------------------------------------------------------------------------------
# Each intent, in each language

CASES = [
    # interested
    ("en", "Sounds good - can we do Thursday at 2pm?", Intent.INTERESTED),
    ("en", "Yes, please send me your pricing.", Intent.INTERESTED),
    ("en", "Could you share a case study from a company our size?", Intent.INTERESTED),
    ("en", "I'd like to see a demo. When are you free?", Intent.INTERESTED),
    ("en", "Sure, happy to hop on a quick call next week.", Intent.INTERESTED),
    ("en", "How much would this cost for 40 seats?", Intent.INTERESTED),
    ("de", "Ja, gerne. Wann hätten Sie Zeit für ein kurzes Gespräch?", Intent.INTERESTED),
    ("de", "Schicken Sie mir bitte die Preisliste.", Intent.INTERESTED),
    ("fr", "Oui, avec plaisir. Pouvez-vous m'envoyer vos tarifs ?", Intent.INTERESTED),
    ("fr", "Ça m'intéresse, on peut caler un appel jeudi ?", Intent.INTERESTED),
    ("es", "Sí, me interesa. ¿Podemos agendar una llamada el jueves?", Intent.INTERESTED),
    ("es", "¿Me puede enviar una propuesta con precios?", Intent.INTERESTED),
    ("it", "Sì, mi interessa. Possiamo fissare una call martedì?", Intent.INTERESTED),
    ("it", "Mi può inviare un preventivo?", Intent.INTERESTED),
    ("nl", "Ja graag, stuur me de prijzen.", Intent.INTERESTED),
    ("nl", "Klinkt interessant. Wanneer heeft u tijd voor een gesprek?", Intent.INTERESTED),
    ("pt", "Sim, tenho interesse. Podemos marcar uma reunião?", Intent.INTERESTED),
    ("pt", "Pode me enviar a tabela de preços?", Intent.INTERESTED),
    # decline
    ("en", "Not interested, thanks.", Intent.DECLINE),
    ("en", "We're all set with our current vendor.", Intent.DECLINE),
    ("en", "Thanks, but we already use a similar tool and we're happy with it.", Intent.DECLINE),
    ("en", "This isn't a fit for us.", Intent.DECLINE),
    ("en", "We'll pass.", Intent.DECLINE),
    ("de", "Kein Interesse, danke.", Intent.DECLINE),
    ("de", "Danke, aber das brauchen wir nicht.", Intent.DECLINE),
    ("fr", "Non merci, nous avons déjà une solution.", Intent.DECLINE),
    ("fr", "Ça ne nous intéresse pas.", Intent.DECLINE),
    ("es", "No, gracias. Ya trabajamos con otro proveedor.", Intent.DECLINE),
    ("es", "No nos interesa en absoluto.", Intent.DECLINE),
    ("it", "No grazie, non ci interessa.", Intent.DECLINE),
    ("it", "Abbiamo già un fornitore, grazie.", Intent.DECLINE),
    ("nl", "Geen interesse, bedankt.", Intent.DECLINE),
    ("nl", "Nee bedankt, we werken al met een andere partij.", Intent.DECLINE),
    ("pt", "Não temos interesse, obrigado.", Intent.DECLINE),
    ("pt", "Obrigado, mas não. Já usamos outra ferramenta.", Intent.DECLINE),
    # not_now without a date
    ("en", "Timing isn't right for us at the moment.", Intent.NOT_NOW),
    ("de", "Im Moment nicht, vielleicht später.", Intent.NOT_NOW),
    ("fr", "Pas pour l'instant, peut-être plus tard.", Intent.NOT_NOW),
    ("es", "Ahora no es buen momento, quizás más adelante.", Intent.NOT_NOW),
    ("it", "Non è il momento, forse più avanti.", Intent.NOT_NOW),
    ("nl", "Op dit moment niet, misschien later.", Intent.NOT_NOW),
    ("pt", "Agora não é um bom momento, talvez mais tarde.", Intent.NOT_NOW),
    # referral without an address
    ("en", "I'm not the right person for this, sorry.", Intent.REFERRAL),
    ("de", "Dafür bin ich nicht zuständig.", Intent.REFERRAL),
    ("fr", "Je ne suis pas la bonne personne pour ce sujet.", Intent.REFERRAL),
    ("es", "No soy la persona adecuada para esto.", Intent.REFERRAL),
    ("it", "Non sono la persona giusta, mi dispiace.", Intent.REFERRAL),
    ("nl", "Ik ben niet de juiste persoon hiervoor.", Intent.REFERRAL),
    ("pt", "Não sou a pessoa certa para isso.", Intent.REFERRAL),
    # unclear
    ("en", "Who is this?", Intent.UNCLEAR),
    ("en", "Thanks for the note.", Intent.UNCLEAR),
    ("de", "Wer sind Sie?", Intent.UNCLEAR),
    ("fr", "Merci pour votre message.", Intent.UNCLEAR),
]


@pytest.mark.parametrize(("code", "text", "intent"), CASES)
def test_each_intent_in_each_language(code: str, text: str, intent: Intent) -> None:
    assert read(text).intent is intent
    # The same reading when the caller names the language.
    assert read(text, languages=(code,)).intent is intent


# ---------------------------------------------------------------------------------------------
# Negation and precedence


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("Not interested.", Intent.DECLINE),
        ("No need for a demo, thanks.", Intent.DECLINE),
        ("I don't think we need a demo.", Intent.DECLINE),
        ("We don't need pricing, we've decided.", Intent.DECLINE),
        ("No need to follow up.", Intent.DECLINE),
        ("Das interessiert uns nicht.", Intent.DECLINE),
        ("Wir brauchen keine Demo.", Intent.DECLINE),
        ("Ça ne m'intéresse pas.", Intent.DECLINE),
        ("Don't call me now but try me in March.", Intent.NOT_NOW),
        ("No problem - send over the deck.", Intent.INTERESTED),
        ("N'hésitez pas à m'envoyer une démo.", Intent.INTERESTED),
        ("Kein Problem, schicken Sie mir gerne ein Angebot.", Intent.INTERESTED),
        ("No\nI'd love a demo actually, Tuesday works.", Intent.INTERESTED),
        ("Not sure about the webinar, but a demo would be great.", Intent.INTERESTED),
    ],
)
def test_negation_turns_interest_into_a_no(text: str, intent: Intent) -> None:
    assert read(text).intent is intent


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        # A concrete later date beats a polite decline and a vague yes.
        ("Not interested right now, but try me in Q3.", Intent.NOT_NOW),
        ("Sounds interesting! Not this quarter though - next quarter.", Intent.NOT_NOW),
        ("Yes, let's talk in September.", Intent.NOT_NOW),
        # A meeting proposed soon is interest, not "later".
        ("Yes, let's talk next week.", Intent.INTERESTED),
        # A later-phrase without a date still beats a yes.
        ("Interested, but not right now.", Intent.NOT_NOW),
        # ...but not a no.
        ("No thanks, not at the moment.", Intent.DECLINE),
        # Both a yes and a no: the last one said wins.
        ("No to the webinar, but I'd like to see a demo.", Intent.INTERESTED),
        ("The demo looked nice, but we're not interested.", Intent.DECLINE),
    ],
)
def test_precedence_between_intents(text: str, intent: Intent) -> None:
    assert read(text).intent is intent


def test_an_address_beats_a_decline() -> None:
    reading = read("Not interested myself - write to jane.roe@client.test instead.")
    assert reading.intent is Intent.REFERRAL
    assert reading.referral == (Referral("jane.roe@client.test", None),)


def test_a_referral_phrase_with_someone_in_cc_beats_interest() -> None:
    reading = read(
        "Sounds good. I've cc'd my colleague who handles purchasing.",
        cc=(("Mark Roe", "Mark.Roe@Client.test"),),
    )
    assert reading.intent is Intent.REFERRAL
    assert reading.referral == (Referral("mark.roe@client.test", "Mark Roe"),)
    assert "referral:cc" in reading.evidence


def test_a_colleague_in_cc_without_a_referral_phrase_leaves_a_yes_a_yes() -> None:
    reading = read("Yes, Tuesday at 10am works.", cc=((None, "amy@client.test"),))
    assert reading.intent is Intent.INTERESTED
    assert reading.referral == ()


# ---------------------------------------------------------------------------------------------
# Who a referral points to


@pytest.mark.parametrize(
    ("text", "people"),
    [
        (
            "I'm not the right person - please contact Jane Doe <jane@client.test>.",
            [("jane@client.test", "Jane Doe")],
        ),
        (
            "Please reach out to our CFO Mark Stone (mark.stone@client.test) instead.",
            [("mark.stone@client.test", "Mark Stone")],
        ),
        (
            "Contact Jane at jane@client.test, she handles this.",
            [("jane@client.test", "Jane")],
        ),
        (
            "The right person is ops@client.test (Jan van der Berg).",
            [("ops@client.test", "Jan van der Berg")],
        ),
        (
            "Wenden Sie sich bitte an Frau Anna Müller: anna.mueller@kunde.test",
            [("anna.mueller@kunde.test", "Anna Müller")],
        ),
        (
            "Please talk to either ann@client.test or bob@client.test.",
            [("ann@client.test", None), ("bob@client.test", None)],
        ),
    ],
)
def test_a_referral_names_the_people_in_the_text(
    text: str, people: list[tuple[str, str | None]]
) -> None:
    reading = read(text)
    assert reading.intent is Intent.REFERRAL
    assert [(r.address, r.name) for r in reading.referral] == people


def test_the_senders_own_address_is_never_a_referral() -> None:
    reading = read(
        "Not the right person, sorry. Pat\npat@client.test",
        cc=(("Pat", SENDER), ("Lee Chan", "lee@client.test")),
    )
    assert [r.address for r in reading.referral] == ["lee@client.test"]


def test_reach_me_at_another_address_is_the_sender_not_a_referral() -> None:
    reading = read("Yes, interested! Reach me at my personal address pat@home.test.")
    assert reading.intent is Intent.INTERESTED
    assert reading.referral == ()


def test_an_address_in_text_and_in_cc_is_listed_once() -> None:
    reading = read(
        "Please speak with Jane Doe <jane@client.test>, she's the decision maker.",
        cc=((None, "jane@client.test"),),
    )
    assert reading.referral == (Referral("jane@client.test", "Jane Doe"),)


# ---------------------------------------------------------------------------------------------
# Robustness: signature, subject, hostile input


def test_a_signature_is_not_read() -> None:
    text = (
        "Hi Sam,\n\nThanks!\nLet's talk Tuesday.\n\nBest regards,\nJo Bloggs\n"
        "Head of Procurement\njo.assistant@client.test\n+1 555 0100"
    )
    reading = read(text)
    assert reading.intent is Intent.INTERESTED
    assert reading.referral == ()


def test_a_new_subject_is_read_and_a_reply_subject_is_not() -> None:
    assert read("", subject="Not interested").intent is Intent.DECLINE
    assert read("Thanks.", subject="Re: Quick demo of Acme?").intent is Intent.UNCLEAR


def test_hostile_input_is_bounded() -> None:
    text = ("not now " * 5_000) + ("in march, after 15/03, " * 5_000)
    start = time.perf_counter()
    reading = read(text + "a@b.test " * 2_000)
    assert time.perf_counter() - start < 2.0
    assert reading.intent in set(Intent)


# ---------------------------------------------------------------------------------------------
# Languages


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Thanks for your note, we will get back to you next week.", "en"),
        ("Vielen Dank für Ihre Nachricht, wir melden uns nächste Woche bei Ihnen.", "de"),
        ("Merci pour votre message, nous reviendrons vers vous la semaine prochaine.", "fr"),
        ("Gracias por su mensaje, le responderemos la próxima semana.", "es"),
        ("Grazie per il messaggio, vi ricontatteremo la settimana prossima.", "it"),
        ("Bedankt voor uw bericht, we nemen volgende week contact met u op.", "nl"),
        ("Obrigado pela sua mensagem, entraremos em contato na próxima semana.", "pt"),
        ("ご連絡ありがとうございます。来週ご連絡いたします。", "ja"),
    ],
)
def test_guess_languages_names_the_language_first(text: str, code: str) -> None:
    assert guess_languages(text.lower())[0] == code


def test_guess_languages_is_empty_for_no_words() -> None:
    assert guess_languages("+1 555 0100") == ()


def test_numeric_date_order_comes_from_the_languages() -> None:
    assert numeric_date_order(("de",)) == "dmy"
    assert numeric_date_order(("en",)) == "any"
    assert numeric_date_order(("de", "ja")) == "any"  # they disagree
    assert numeric_date_order(()) == "any"


def test_a_bare_year_is_its_first_day() -> None:
    reading = read("Not a priority for this year, maybe 2027.")
    assert reading.intent is Intent.NOT_NOW
    assert reading.follow_up_on == date(2027, 1, 1)


# ---------------------------------------------------------------------------------------------
# Which date: the sentence that asks says when; a month named outright is read from the tables


@pytest.mark.parametrize(
    ("text", "sent", "expected"),
    [
        # A constraint in another sentence says why; the sentence that asks says when.
        (
            "Our licence runs until the end of June. Please circle back in mid-July.",
            date(2026, 5, 4),
            date(2026, 7, 11),
        ),
        (
            "We signed for a year in January. Try me again in late October.",
            date(2026, 3, 2),
            date(2026, 10, 21),
        ),
        (
            "Wir sind bis Ende März gebunden. Melden Sie sich bitte Anfang Mai wieder.",
            date(2026, 1, 12),
            date(2026, 5, 1),
        ),
        (
            "Nous sommes engagés jusqu'à fin mars. Recontactez-moi début mai.",
            date(2026, 1, 12),
            date(2026, 5, 1),
        ),
        # Within one sentence, the date nearest the request.
        (
            "We're tied up until the end of February, so write again in early April.",
            date(2026, 1, 20),
            date(2026, 4, 1),
        ),
        # No sentence asks with a date: the earliest named, as before.
        ("We're busy until May. Reach out then.", date(2026, 3, 10), date(2026, 5, 1)),
    ],
)
def test_the_sentence_that_asks_for_later_gives_the_date(
    text: str, sent: date, expected: date
) -> None:
    reading = read(text, sent=sent)
    assert reading.intent is Intent.NOT_NOW, reading
    assert reading.follow_up_on == expected, reading


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("Write again in early March.", 1),
        ("Try me mid-March.", 11),
        ("Ping me in the middle of March.", 11),
        ("Try again late March.", 21),
        ("Bitte Anfang März erneut melden.", 1),
        ("Bitte Mitte März nochmal melden.", 11),
        ("Recontactez-moi début mars.", 1),
        ("Relancez-moi à la mi-mars.", 11),
        ("Escríbame a principios de marzo.", 1),
        ("Vuelva a contactarme a mediados de marzo.", 11),
        ("Mi ricontatti a fine marzo.", 21),
        ("Mail me eind maart opnieuw.", 21),
        ("Volte a falar comigo em meados de março.", 11),
    ],
)
def test_a_part_of_a_month_is_read_from_the_month_part_table(text: str, day: int) -> None:
    sent = date(2026, 11, 20)
    reading = read(text, sent=sent)
    assert reading.intent is Intent.NOT_NOW, reading
    assert reading.follow_up_on == date(2027, 3, day), reading
    assert "date:month_part" in reading.evidence, reading


def test_a_part_of_this_month_still_ahead_is_this_years() -> None:
    reading = read("Not now, try me late March.", sent=date(2026, 3, 10))
    assert reading.follow_up_on == date(2026, 3, 21)
    reading = read("Not now, try me early March 2028.", sent=date(2026, 3, 10))
    assert reading.follow_up_on == date(2028, 3, 1)


@pytest.mark.parametrize(
    ("text", "sent", "expected"),
    [
        # A month named beside a table period is more precise than the period.
        (
            "Budget is frozen until the new fiscal year starts in April; circle back then.",
            date(2027, 2, 3),
            date(2027, 4, 1),
        ),
        (
            "Our financial year begins in July, so please reach out then.",
            date(2026, 3, 2),
            date(2026, 7, 1),
        ),
        (
            "Nach den Feiertagen, am besten Mitte Januar, gerne wieder melden.",
            date(2026, 12, 1),
            date(2027, 1, 11),
        ),
        ("Not now - early next year, say in March.", date(2026, 1, 23), date(2027, 3, 1)),
        (
            "Après les fêtes, disons fin janvier, relancez-moi.",
            date(2026, 12, 3),
            date(2027, 1, 21),
        ),
        # A day and month beside a period: dateparser reads the day.
        (
            "Circle back after the holidays, around 12 January.",
            date(2026, 12, 1),
            date(2027, 1, 12),
        ),
    ],
)
def test_a_month_named_with_a_period_wins_over_the_period(
    text: str, sent: date, expected: date
) -> None:
    reading = read(text, sent=sent)
    assert reading.intent is Intent.NOT_NOW, reading
    assert reading.follow_up_on == expected, reading


def test_a_period_alone_still_reads_from_the_table() -> None:
    reading = read("Circle back after our new fiscal year starts.", sent=date(2027, 2, 3))
    assert reading.follow_up_on == date(2028, 1, 1)
    assert read("We may look again in the new year.", sent=date(2026, 11, 2)).follow_up_on == (
        date(2027, 1, 1)
    )


SPANS = [
    ("Revenez vers moi dans 3 mois.", 3, "months"),
    ("Pas maintenant, recontactez-moi dans quelques semaines.", 21, "days"),
    ("Bitte melden Sie sich in 3 Monaten wieder.", 3, "months"),
    ("Momentan nicht, gerne in zwei Monaten nochmal.", 2, "months"),
    ("Ahora no, vuelva a escribirme en 3 meses.", 3, "months"),
    ("Escríbame dentro de dos semanas.", 14, "days"),
    ("Non ora, ci risentiamo tra 3 mesi.", 3, "months"),
    ("Mi ricontatti fra qualche settimana.", 21, "days"),
    ("Nu niet, mail me over 3 maanden opnieuw.", 3, "months"),
    ("Neem over een paar weken weer contact op.", 21, "days"),
    ("Agora não, volte a falar comigo daqui a 3 meses.", 3, "months"),
    ("Entre em contato novamente em duas semanas.", 14, "days"),
    ("Not now, check back in a couple of months.", 2, "months"),
    ("Ping me in a few weeks.", 21, "days"),
    ("Try me again 4 months from now.", 4, "months"),
    ("Reach out in 10 days, we'll know more.", 10, "days"),
]


@pytest.mark.parametrize(("text", "count", "unit"), SPANS)
@given(sent=st.dates(min_value=date(2015, 1, 1), max_value=date(2040, 12, 31)))
@settings(max_examples=15, deadline=None)
def test_in_n_units_is_the_reply_date_plus_that_span(
    text: str, count: int, unit: str, sent: date
) -> None:
    reading = read(text, sent=sent)
    assert reading.intent is Intent.NOT_NOW, reading
    if unit == "days":
        expected = sent + timedelta(days=count)
    else:  # calendar months, the same day (the month's last when shorter)
        expected = periods.add_months(sent, count, sent.day)
        assert months_between(sent, expected) == count
    assert reading.follow_up_on == expected, (text, reading)


def test_an_absurd_span_gives_no_date() -> None:
    assert read("Not now, try me in 40 years.").follow_up_on is None
    assert read("Not now, try me in 0 months.").follow_up_on is None


def test_a_months_rule_is_calendar_months_and_bounded() -> None:
    assert periods.resolve("months:3", date(2026, 11, 23)) == date(2027, 2, 23)
    assert periods.resolve("months:1", date(2027, 1, 31)) == date(2027, 2, 28)
    assert periods.valid_rule("months:24")
    assert not periods.valid_rule("months:25")
    assert not periods.valid_rule("months:0")


# ---------------------------------------------------------------------------------------------
# Names: titles left out, and a name found by its address


@pytest.mark.parametrize(
    ("text", "address", "name"),
    [
        ("Please contact Mr. John Carter <jc@client.test>.", "jc@client.test", "John Carter"),
        ("Talk to Dr Priya Nair (priya@client.test).", "priya@client.test", "Priya Nair"),
        ("Wenden Sie sich an Herrn Jonas Weber: jw@kunde.test", "jw@kunde.test", "Jonas Weber"),
        ("Contactez Mme Claire Petit : cp@client.test", "cp@client.test", "Claire Petit"),
        ("Contactez M. Hugo Marchand : hm@client.test", "hm@client.test", "Hugo Marchand"),
        ("Escriba a la Sra. Lucía Gómez <lg@cliente.test>", "lg@cliente.test", "Lucía Gómez"),
        ("Contacte con D. Andrés Vidal <av@cliente.test>", "av@cliente.test", "Andrés Vidal"),
        ("Scriva alla Dott.ssa Elena Conti: ec@cliente.test", "ec@cliente.test", "Elena Conti"),
        ("Contatti il Sig. Paolo Greco (pg@cliente.test)", "pg@cliente.test", "Paolo Greco"),
        ("Mail Dhr. Kees de Vries: kdv@klant.test", "kdv@klant.test", "Kees de Vries"),
        ("Fale com a Sra. Ana Lima <al@cliente.test>", "al@cliente.test", "Ana Lima"),
    ],
)
def test_titles_are_not_part_of_a_referred_name(text: str, address: str, name: str) -> None:
    reading = read(text)
    assert reading.intent is Intent.REFERRAL, reading
    assert reading.referral == (Referral(address, name),)


def test_a_title_in_a_cc_display_name_is_left_out() -> None:
    reading = read("Not my area, I've cc'd him.", cc=(("Herr Jonas Weber", "jw@kunde.test"),))
    assert reading.referral == (Referral("jw@kunde.test", "Jonas Weber"),)


@pytest.mark.parametrize(
    ("text", "address", "name"),
    [
        (
            "Je vous invite à contacter Sophie Laurent, notre responsable logistique : "
            "sophie.laurent@client.test",
            "sophie.laurent@client.test",
            "Sophie Laurent",
        ),
        (
            "Best to speak with Owen Hughes, who runs our warehouses. His email is "
            "o.hughes@client.test",
            "o.hughes@client.test",
            "Owen Hughes",
        ),
        (
            "Zuständig ist Jürgen Schäfer aus dem Einkauf; schreiben Sie an "
            "juergenschaefer@kunde.test",
            "juergenschaefer@kunde.test",
            "Jürgen Schäfer",
        ),
        (
            "La persona giusta è Chiara Ferri, responsabile acquisti, scrivete a "
            "ferri_chiara@cliente.test",
            "ferri_chiara@cliente.test",
            "Chiara Ferri",
        ),
        (
            "Hable con María José Pérez, ella decide: mjperez@cliente.test",
            "mjperez@cliente.test",
            "María José Pérez",
        ),
        (
            "Neem contact op met Jan van der Berg, hij gaat erover: jan.vanderberg@klant.test",
            "jan.vanderberg@klant.test",
            "Jan van der Berg",
        ),
        (
            "Please contact Dr. Ines Walter, our CTO; she's on iw@client.test",
            "iw@client.test",
            "Ines Walter",
        ),
    ],
)
def test_a_name_is_found_by_the_address_it_spells(text: str, address: str, name: str) -> None:
    reading = read(text)
    assert reading.intent is Intent.REFERRAL, reading
    assert reading.referral == (Referral(address, name),)


def test_a_name_that_does_not_spell_the_address_is_not_given() -> None:
    reading = read("Please talk to Owen Hughes in purchasing: purchasing@client.test")
    assert reading.referral == (Referral("purchasing@client.test", None),)
    reading = read("Thanks, Alice Martin. The right person is kd@client.test")
    assert reading.referral == (Referral("kd@client.test", None),)


# ---------------------------------------------------------------------------------------------
# The end of a period: the first day of its last part that is still ahead


@pytest.mark.parametrize(
    "text",
    [
        "Let's talk towards the end of the year.",
        "Reach out at year end.",
        "Maybe late this year, we'll see.",
        "Circle back around year-end please.",
        "Bitte Ende des Jahres nochmal melden.",
        "Gerne zum Jahresende wieder.",
        "Recontactez-moi en fin d'année.",
        "Revenez vers nous vers la fin de l'année.",
        "Escríbame a finales de año.",
        "Hablamos a fin de año.",
        "Mi ricontatti a fine anno.",
        "Sentiamoci verso la fine dell'anno.",
        "Mail me eind dit jaar opnieuw.",
        "Neem tegen het einde van het jaar contact op.",
        "Volte a falar comigo no final do ano.",
        "Fale comigo lá para o fim do ano.",
    ],
)
def test_the_end_of_the_year_is_its_last_quarter(text: str) -> None:
    reading = read(text)
    assert reading.intent is Intent.NOT_NOW, reading
    assert reading.follow_up_on == date(2026, 10, 1), reading


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Try me at the end of Q2.", date(2026, 6, 1)),
        ("Ping me towards the end of the second quarter.", date(2026, 6, 1)),
        ("Ende Q3 passt besser.", date(2026, 9, 1)),
        ("Melden Sie sich Ende des dritten Quartals.", date(2026, 9, 1)),
        ("Recontactez-moi fin T2.", date(2026, 6, 1)),
        ("Escríbame a finales del segundo trimestre.", date(2026, 6, 1)),
        ("Ci sentiamo a fine del terzo trimestre.", date(2026, 9, 1)),
        ("Neem eind van het tweede kwartaal contact op.", date(2026, 6, 1)),
        ("Fale comigo no final do segundo trimestre.", date(2026, 6, 1)),
        # This quarter's last month has begun on 10 March: its last part, the 21st.
        ("Let's reconnect at the end of this quarter.", date(2026, 3, 21)),
        ("Let's reconnect at the end of the month.", date(2026, 3, 21)),
        ("Try again at the end of next month.", date(2026, 4, 21)),
        ("Not this year - end of next year at the earliest.", date(2027, 10, 1)),
        # A month named with its end keeps the month-part table's day.
        ("Recontactez-moi fin juin.", date(2026, 6, 21)),
    ],
)
def test_the_end_of_a_quarter_is_its_last_month(text: str, expected: date) -> None:
    reading = read(text)
    assert reading.intent is Intent.NOT_NOW, reading
    assert reading.follow_up_on == expected, reading


def test_the_end_of_the_year_narrows_as_it_comes() -> None:
    text = "Please come back to me at the end of the year."
    assert read(text, sent=date(2026, 9, 30)).follow_up_on == date(2026, 10, 1)
    assert read(text, sent=date(2026, 11, 15)).follow_up_on == date(2026, 12, 1)
    assert read(text, sent=date(2026, 12, 5)).follow_up_on == date(2026, 12, 21)
    assert read(text, sent=date(2026, 12, 22)).follow_up_on == date(2027, 1, 1)
    # A named quarter that is over is next year's.
    assert read("Try me at the end of Q1.", sent=date(2026, 5, 4)).follow_up_on == date(2027, 3, 1)


def test_the_end_of_a_fiscal_year_follows_the_configured_year() -> None:
    april = (4, 1)
    reading = read("Reach out at year end.", sent=date(2026, 6, 1), fiscal_year_start=april)
    assert reading.follow_up_on == date(2027, 1, 1)  # FY Apr 2026-Mar 2027: its last quarter
    reading = read("Try me at the end of Q2.", sent=date(2026, 6, 1), fiscal_year_start=april)
    assert reading.follow_up_on == date(2026, 9, 1)  # fiscal Q2 is Jul-Sep


@given(
    sent=dates,
    base=st.sampled_from(
        [
            "year:this",
            "year:next",
            "fiscal_year:this",
            "half:1",
            "half:2",
            "half:this",
            "quarter:1",
            "quarter:4",
            "quarter:this",
            "quarter:next",
            "month:02",
            "month:12",
            "month:this",
            "month:next",
        ]
    ),
    fiscal=fiscal_starts,
)
def test_the_end_of_any_period_is_ahead_and_inside_it_or_the_day_it_is_over(
    sent: date, base: str, fiscal: tuple[int, int]
) -> None:
    start, stop = periods.span(base, sent, fiscal)
    assert stop > sent
    at_end = periods.resolve(f"{base}+end", sent, fiscal)
    assert sent < at_end <= stop
    assert at_end >= start
    if not base.endswith(":next"):  # "after the new year" is when it starts: resolve()'s
        assert periods.resolve(f"{base}+after", sent, fiscal) == stop


# ---------------------------------------------------------------------------------------------
# After a period: the first day of the period that follows it


@pytest.mark.parametrize(
    "text",
    [
        "Try me after Q1 ends.",
        "Please get back to me once Q1 is over.",
        "After the first quarter, please.",
        "Let's pick this up when Q1 is done.",
        "Bitte nach dem ersten Quartal wieder melden.",
        "Wenn das erste Quartal vorbei ist, gerne.",
        "Recontactez-moi après le premier trimestre.",
        "Une fois le premier trimestre terminé, recontactez-moi.",
        "Escríbame después del primer trimestre.",
        "Cuando termine el primer trimestre, escríbame.",
        "Mi ricontatti dopo il primo trimestre.",
        "Quando il primo trimestre è finito, ci sentiamo.",
        "Neem na het eerste kwartaal contact op.",
        "Zodra het eerste kwartaal voorbij is, mail me.",
        "Volte a falar comigo depois do primeiro trimestre.",
        "Quando o primeiro trimestre terminar, fale comigo.",
    ],
)
def test_after_the_first_quarter_is_the_first_day_of_the_second(text: str) -> None:
    reading = read(text)
    assert reading.intent is Intent.NOT_NOW, reading
    assert reading.follow_up_on == date(2026, 4, 1), reading
    assert any(how.endswith("+after") for how in reading.evidence), reading


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Written in March: this 1 April, not next year's.
        ("Reach out after March.", date(2026, 4, 1)),
        ("Bitte erst nach März melden.", date(2026, 4, 1)),
        ("Try me after the end of the year.", date(2027, 1, 1)),
        ("Let's wait until Q2 is over.", date(2026, 7, 1)),
        ("After this quarter, please.", date(2026, 4, 1)),
        ("Try again after the summer.", date(2026, 9, 1)),
    ],
)
def test_after_a_period_is_the_day_it_is_over(text: str, expected: date) -> None:
    reading = read(text)
    assert reading.intent is Intent.NOT_NOW, reading
    assert reading.follow_up_on == expected, reading


def test_this_year_alone_names_no_date() -> None:
    reading = read("Not this year, sorry.")
    assert reading.intent is Intent.NOT_NOW
    assert reading.follow_up_on is None


# ---------------------------------------------------------------------------------------------
# Moveable feasts, from the calendar (Easter 2026 is 5 April, Easter 2027 28 March)


@pytest.mark.parametrize(
    "text",
    [
        "Let's talk after Easter.",
        "Not before Easter, please.",
        "Bitte nach Ostern melden.",
        "Nach den Osterferien gerne wieder.",
        "Revenez vers moi après Pâques.",
        "Escríbame después de Semana Santa.",
        "Escríbame después de Pascua.",
        "Ci sentiamo dopo Pasqua.",
        "Neem na Pasen contact op.",
        "Fale comigo depois da Páscoa.",
        "Non prima di Pasqua, grazie.",
    ],
)
def test_after_easter_is_the_day_after_easter_monday(text: str) -> None:
    reading = read(text)
    assert reading.intent is Intent.NOT_NOW, reading
    assert reading.follow_up_on == date(2026, 4, 7), reading
    # Written after this year's Easter: next year's.
    assert read(text, sent=date(2026, 4, 20)).follow_up_on == date(2027, 3, 30)


def test_before_easter_leaves_time_before_it() -> None:
    text = "Can you get back to me before Easter?"
    assert read(text).follow_up_on == date(2026, 3, 23)  # two weeks before Easter Sunday
    assert read(text, sent=date(2026, 3, 25)).follow_up_on == date(2026, 3, 30)  # one week
    # Too close for a "before": right after the holiday, not next year.
    assert read(text, sent=date(2026, 4, 1)).follow_up_on == date(2026, 4, 7)
    reading = read("Melden Sie sich bitte noch vor Ostern wieder.", sent=date(2026, 1, 15))
    assert reading.follow_up_on == date(2026, 3, 23)


def test_other_moveable_feasts() -> None:
    reading = read("Melden Sie sich nach Pfingsten wieder.")
    assert reading.follow_up_on == date(2026, 5, 26)  # Whit Monday 25 May 2026
    reading = read("Depois do carnaval a gente conversa.", sent=date(2027, 1, 10))
    assert reading.follow_up_on == date(2027, 2, 10)  # Ash Wednesday 2027


@given(sent=dates)
def test_a_feast_is_always_ahead_and_within_a_year(sent: date) -> None:
    for rule in ("easter", "easter+before", "pentecost", "carnival+before"):
        when = periods.resolve(rule, sent)
        assert sent < when <= sent + timedelta(days=400), rule


# ---------------------------------------------------------------------------------------------
# A forwarding instruction or a department's address is a referral, even when interested


@pytest.mark.parametrize(
    ("text", "address"),
    [
        (
            "Happy to look at it, but please send it to our purchasing department at "
            "achats@client.test.",
            "achats@client.test",
        ),
        ("Yes, interested - send the pricing to procurement@client.test please.", None),
        ("Thanks, happy to review it. Could you email it to Mark at m.roe@client.test?", None),
        ("Sounds interesting. Our buying team is at buying@client.test, they'd love a demo.", None),
        ("Ja, gerne. Schicken Sie das Angebot bitte an einkauf@client.test.", None),
        ("Interessant, bitte das Angebot an unseren Einkauf: einkauf@client.test", None),
        ("Klingt gut, wenden Sie sich an m.braun@client.test.", None),
        ("Oui, intéressant. Envoyez votre proposition à achats@client.test.", None),
        ("Volontiers ; écrivez à claire.petit@client.test, elle décide.", None),
        ("Sí, me interesa. Mande la propuesta a compras@client.test.", None),
        ("Nos interesa, diríjase a ana.ruiz@client.test por favor.", None),
        ("Sì, mi interessa. Mandi il preventivo a acquisti@client.test.", None),
        ("Interessante, si rivolga a l.conti@client.test.", None),
        ("Ja graag, stuur de offerte naar inkoop@client.test.", None),
        ("Leuk! Neem contact op met j.devries@client.test.", None),
        ("Sim, tenho interesse. Envie a proposta para compras@client.test.", None),
        ("Interessante, fale com rita.lopes@client.test.", None),
        ("Happy to talk in September; meanwhile send details to purchasing@client.test.", None),
    ],
)
def test_a_forwarding_instruction_with_an_address_is_a_referral(
    text: str, address: str | None
) -> None:
    reading = read(text)
    assert reading.intent is Intent.REFERRAL, reading
    assert len(reading.referral) == 1
    assert reading.referral[0].address == (address or reading.referral[0].address)
    assert reading.referral[0].address.endswith("@client.test")


def test_an_address_that_is_not_a_forwarding_target_leaves_a_yes_a_yes() -> None:
    reading = read("Yes please, send me the deck. My colleague jane@client.test will join too.")
    assert reading.intent is Intent.INTERESTED
    reading = read("Sounds good - send the invite to pat@client.test.", sender="pat@client.test")
    assert reading.intent is Intent.INTERESTED  # their own address


# ---------------------------------------------------------------------------------------------
# Declines that say they already have it; thanks and questions that are not interest


@pytest.mark.parametrize(
    "text",
    [
        "Appreciate the persistence, but I don't think this is a fit.",
        "We run our own fleet and have no plans to outsource any of it.",
        "We handle all our freight with our own fleet.",
        "I don't think it would be useful for us.",
        "vielen Dank, wir arbeiten bereits mit einem anderen Dienstleister zusammen.",
        "Wir haben einen eigenen Fuhrpark.",
        "Wir arbeiten seit Jahren mit einem festen Partner zusammen.",
        "Das ist für uns nicht sinnvoll.",
        "Nous avons notre propre flotte de camions.",
        "Nous travaillons déjà avec un autre prestataire.",
        "Je ne pense pas que ce soit pertinent pour nous.",
        "Tenemos flota propia, gracias.",
        "Trabajamos con otro proveedor desde hace años.",
        "No creo que tenga sentido para nosotros.",
        "Abbiamo una flotta propria.",
        "Lavoriamo già con un altro fornitore.",
        "Non credo che abbia senso per noi.",
        "Wij hebben een eigen vloot.",
        "We werken al samen met een andere partij.",
        "Ik denk niet dat dit relevant is voor ons.",
        "Obrigado, mas não faz sentido para nós: trabalhamos só com transporte próprio.",
        "Temos frota própria.",
        "Já trabalhamos com outro parceiro.",
    ],
)
def test_we_already_have_one_or_it_does_not_fit_is_a_decline(text: str) -> None:
    assert read(text).intent is Intent.DECLINE, read(text)


@pytest.mark.parametrize(
    "text",
    [
        # A yes said after the doubt still wins.
        "Not sure it's relevant, but could you send a case study?",
        "No worries if it's not a fit - but I'd love a demo.",
        "Could you run this with our own data in a pilot?",
    ],
)
def test_a_doubt_before_a_request_stays_interested(text: str) -> None:
    assert read(text).intent is Intent.INTERESTED


@pytest.mark.parametrize(
    "text",
    [
        "Thanks for the info.",
        "Danke für die Info!",
        "Merci pour l'information.",
        "Gracias por la información.",
        "Grazie per le informazioni.",
        "Bedankt voor de info.",
        "Obrigado pela informação.",
        "Wat bedoelt u precies met 12% besparing? Op welke kosten?",
        "Was meinen Sie genau mit 12 % Ersparnis? Bei welchen Kosten?",
        "Qu'entendez-vous par 12 % d'économies ?",
    ],
)
def test_a_thanks_or_a_question_about_the_pitch_is_not_interest(text: str) -> None:
    assert read(text).intent is Intent.UNCLEAR, read(text)


def test_a_price_question_is_still_interest() -> None:
    assert read("Wat kost het voor 20 gebruikers?").intent is Intent.INTERESTED
    assert read("Was würde das für uns kosten?").intent is Intent.INTERESTED


@pytest.mark.parametrize(
    "text",
    [
        "Momentan passt es zeitlich nicht, gerne zu einem späteren Zeitpunkt nochmal.",
        "Im Moment passt es nicht, gerne später wieder.",
        "Ça ne tombe pas bien en ce moment, volontiers plus tard.",
    ],
)
def test_a_gladly_later_is_not_now_not_interest(text: str) -> None:
    reading = read(text)
    assert reading.intent is Intent.NOT_NOW, reading
    assert reading.follow_up_on is None


def test_a_quoted_header_left_above_the_cut_is_not_read() -> None:
    text = "\n\nDanke für die Info.\n\n \n\nGesendet: Dienstag, 24. November 2026 09:16 Uhr\n"
    assert read(text).intent is Intent.UNCLEAR
    text = "Thanks, noted.\n\nSent: Tuesday, November 24, 2026 9:16 AM\n"
    assert read(text).intent is Intent.UNCLEAR


COPIED_IN = [
    "Adding Priya, who runs our warehouses - she's the one to talk to.",
    "Looping in Priya here, she decides on site upgrades.",
    "Hi, I've cc'd Priya who looks after facilities.",
    "Ich habe Priya in Kopie gesetzt, sie ist für unsere Standorte zuständig.",
    "Je mets Priya en copie, elle gère nos entrepôts.",
    "Te copio a Priya, que lleva los almacenes.",
    "Metto in copia Priya, che si occupa dei magazzini.",
    "Ik heb Priya in de cc gezet, zij gaat over onze panden.",
    "Copiei a Priya, que cuida dos armazéns. Interessante, aliás.",
]


@pytest.mark.parametrize("text", COPIED_IN)
def test_someone_added_in_cc_with_words_that_say_so_is_a_referral(text: str) -> None:
    got = read(text, cc=(("Priya Shah", "priya@acme.test"),), sender="jo@acme.test")
    assert got.intent is Intent.REFERRAL, got
    assert got.referral == (Referral("priya@acme.test", "Priya Shah"),)


def test_adding_words_without_anyone_new_in_cc_refer_no_one() -> None:
    got = read("Adding to my last note: yes, Thursday at 10 works.", sender="jo@acme.test")
    assert got.intent is Intent.INTERESTED, got
