"""Removal requests as a person writes them, in every language we read: found, attributed to
the right address, never confused with a footer, a negation or an ordinary reply."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sequencer.classify import lexicon
from sequencer.classify.removal_request import (
    ERASE,
    LEGAL,
    NO_SENDER,
    OTHERS,
    OTHERS_NO_ADDRESS,
    PHRASE,
    SHORT,
    SUBJECT,
    Removal,
    read_removal,
)

SENDER = "ana.lopez@client.test"
OURS = ("sales@vendor.example",)
SEVEN = ("en", "de", "fr", "es", "it", "nl", "pt")


def reply(text: str, subject: str = "Re: a quicker way to follow up") -> Removal | None:
    return read_removal(text, subject=subject, sender=SENDER, reply_relation=True, recipients=OURS)


def new(text: str, subject: str = "Request") -> Removal | None:
    return read_removal(text, subject=subject, sender=SENDER, reply_relation=False, recipients=OURS)


# Requests about the writer, as people write them: short, polite, angry, with a decline.
REQUESTS = {
    "en": [
        "Remove",
        "STOP",
        "unsubscribe",
        "Unsubscribe me please.",
        "take me off",
        "Take me off this list, thanks.",
        "Not interested. Stop emailing.",
        "Not interested - please remove me from your list.",
        "Could you please remove me from your mailing list?",
        "Kindly remove my email address from your database.",
        "Please stop contacting me.",
        "stop spamming me",
        "This is the fourth email. Stop. Just stop.",
        "f*** off, never email me again",
        "Leave me alone!!!",
        "Please don't email me again.",
        "No more emails please.",
        "I already unsubscribed and I keep getting these emails.",
        "Please opt me out of all future communications.",
        "I'd like to be removed from your list.",
        "We're all set. Please take us off your list.",
        "Wrong person, and I don't want to receive any more of these.",
        "How do I unsubscribe from these?",
        "Hi,\nRemove\nThanks\nTom",
        "I tried to unsubscribe but couldn't, please remove me",
    ],
    "de": [
        "Austragen",
        "Bitte austragen.",
        "Abmelden, danke.",
        "Bitte keine weiteren E-Mails.",
        "Kein Interesse. Bitte tragen Sie mich aus Ihrem Verteiler aus.",
        "Bitte entfernen Sie mich aus Ihrer Liste.",
        "Löschen Sie meine E-Mail-Adresse aus Ihrer Datenbank!",
        "Hören Sie auf, mir ständig zu schreiben.",
        "Ich möchte keine Werbung mehr von Ihnen bekommen.",
        "Bitte kontaktieren Sie mich nicht mehr.",
        "Lassen Sie mich in Ruhe.",
        "Ich bekomme immer noch Mails von Ihnen, obwohl ich mich abgemeldet habe.",
    ],
    "fr": [
        "Désinscrire",
        "STOP",
        "merci de me retirer de votre liste",
        "Désinscrivez-moi, merci.",
        "Pas intéressé, retirez-moi de vos listes.",
        "Veuillez supprimer mon adresse de votre fichier.",
        "Ne me contactez plus.",
        "Merci de ne plus m'envoyer de messages.",
        "Je ne souhaite plus recevoir vos e-mails.",
        "Arrêtez de m'écrire !",
        "Plus de mails svp.",
        "Foutez-moi la paix.",
    ],
    "es": [
        "Baja",
        "Baja, gracias.",
        "Por favor, denme de baja.",
        "Quiero darme de baja de su lista.",
        "No me interesa. Elimínenme de su base de datos.",
        "Sáquenme de su lista, por favor.",
        "No me envíen más correos.",
        "Dejen de escribirme, por favor.",
        "No quiero recibir más mensajes suyos.",
        "Por favor eliminen mi correo de su lista.",
        "¡Déjenme en paz!",
    ],
    "it": [
        "Cancellami",
        "Basta, grazie.",
        "Per favore cancellatemi dalla vostra lista.",
        "Rimuovetemi dalla mailing list.",
        "Non mi interessa, toglietemi dai vostri contatti.",
        "Non scrivetemi più.",
        "Vi prego di rimuovere il mio indirizzo email.",
        "Smettetela di scrivermi!",
        "Non voglio più ricevere le vostre email.",
        "Vorrei essere rimosso dalla lista.",
    ],
    "nl": [
        "Afmelden",
        "Graag uitschrijven.",
        "Verwijder mij alstublieft van jullie lijst.",
        "Haal me van de mailinglijst.",
        "Geen interesse. Stuur me geen mails meer.",
        "Wilt u mij niet meer mailen?",
        "Ik wil geen e-mails meer ontvangen.",
        "Stop met mailen!",
        "Graag mijn e-mailadres verwijderen uit uw bestand.",
        "Laat me met rust.",
    ],
    "pt": [
        "Descadastrar",
        "Sair",
        "Por favor me removam da lista.",
        "Remova-me da sua lista, obrigado.",
        "Não tenho interesse. Parem de me enviar e-mails.",
        "Não quero receber mais e-mails.",
        "Não me enviem mais mensagens.",
        "Deixem de me contactar, por favor.",
        "Quero cancelar minha inscrição.",
        "Gostaria de ser removido da vossa lista.",
    ],
    "ja": ["配信停止してください。", "今後のご連絡は不要です。"],
}


@pytest.mark.parametrize(
    ("lang", "text"), [(lang, t) for lang, texts in REQUESTS.items() for t in texts]
)
def test_a_request_about_the_writer_suppresses_the_sender(lang: str, text: str) -> None:
    for got in (reply(text), new(text)):
        assert got is not None, f"{lang}: missed {text!r}"
        assert got.suppress == (SENDER,), f"{lang}: {text!r} -> {got}"
        assert not got.erasure


# Ordinary replies that use removal words: negated, asked and answered no, in the past,
# about another list, or not about mail at all.
NOT_REQUESTS = {
    "en": [
        "don't remove me",
        "Please don't remove me, I'd like to hear more in March.",
        "No need to unsubscribe me, I'm interested.",
        "I'm not asking to be removed, just fewer emails.",
        "I never asked to be removed.",
        "Don't stop emailing me, these are useful.",
        "Unsubscribe me from the newsletter? No, the call is fine.",
        "I unsubscribed from your newsletter but I'd like a demo.",
        "Happy to chat. Stop by our booth at the fair on Tuesday.",
        "I'll stop by your office next week.",
        "We've been working non-stop on the launch.",
        "Stop the presses! Our CFO loved it.",
        "Could you remove the second paragraph from the proposal?",
        "Stop\nby our stand 4B if you're at the expo.",
        "Not interested right now, maybe next quarter.",
        "Thanks, we went with another vendor.",
        "Can we remove the onboarding fee from the quote?",
        "I don't want to opt out, I just want the pricing.",
    ],
    "de": [
        "Bitte tragen Sie mich nicht aus, ich bin interessiert.",
        "Kein Interesse, danke.",
        "Ich bin nächste Woche im Urlaub, melden Sie sich danach.",
        "Sie müssen mich nicht abmelden, ich lese das gern.",
    ],
    "fr": [
        "Ne me désabonnez pas, je suis intéressé.",
        "Je ne souhaite pas être retiré de la liste, merci.",
        "Merci, mais ce n'est pas le bon moment.",
    ],
    "es": [
        "Estoy de baja hasta el lunes.",
        "No quiero darme de baja, solo menos correos.",
        "Gracias, pero ya tenemos proveedor.",
    ],
    "it": [
        "Non voglio essere rimosso, sono interessato.",
        "Grazie, ma non è il momento giusto.",
    ],
    "nl": [
        "Verwijder mij niet, ik ben geïnteresseerd.",
        "Ik hoef niet afgemeld te worden.",
        "Bedankt, geen interesse op dit moment.",
    ],
    "pt": [
        "Não quero ser removido, tenho interesse.",
        "Obrigado, mas agora não é o momento.",
    ],
}


@pytest.mark.parametrize(
    ("lang", "text"), [(lang, t) for lang, texts in NOT_REQUESTS.items() for t in texts]
)
def test_an_ordinary_reply_is_not_a_removal_request(lang: str, text: str) -> None:
    assert reply(text) is None, f"{lang}: {text!r} read as a request"


FOOTERS = [
    "To unsubscribe, click here: https://news.vendor.example/u/123",
    "Manage preferences | Unsubscribe",
    "Unsubscribe: <https://lists.vendor.example/unsub>",
    "You are receiving this email because you signed up at vendor.example.",
    "If you no longer wish to receive these emails, you can unsubscribe at any time.",
    "Reply STOP to opt out.",
    "Um sich abzumelden, klicken Sie hier.",
    "Wenn Sie diese E-Mails nicht mehr erhalten möchten, klicken Sie hier.",
    "Pour vous désinscrire, cliquez ici.",
    "Si vous ne souhaitez plus recevoir nos e-mails, cliquez ici",
    "Para darse de baja haga clic aquí.",
    "Si no desea recibir más correos, pulse aquí.",
    "Per disiscriverti clicca qui.",
    "Se non desideri più ricevere questa newsletter clicca qui",
    "Klik hier om je af te melden.",
    "Als u deze nieuwsbrief niet meer wilt ontvangen, klik dan hier.",
    "Para se descadastrar, clique aqui.",
    "Se você não deseja mais receber nossos e-mails, clique aqui.",
    "You have the right to object to processing and to request erasure of your data.",
    "Privacy notice: we process personal data in line with Art. 13 GDPR.",
    "Sie haben das Recht auf Löschung Ihrer Daten und ein Widerspruchsrecht.",
    "Vous disposez d'un droit d'opposition et d'un droit à l'effacement.",
    "Usted tiene derecho de supresión y de oposición.",
    "Ha il diritto di opposizione e il diritto all'oblio.",
    "U heeft het recht op vergetelheid en het recht van bezwaar.",
    "Você tem o direito de oposição e o direito ao esquecimento.",
]


@pytest.mark.parametrize("footer", FOOTERS)
def test_a_footer_or_privacy_notice_is_never_a_request(footer: str) -> None:
    text = f"Thanks, Thursday at 3pm works for me.\n\nBest,\nAna\n\n{footer}"
    assert reply(text) is None
    assert new(footer) is None


LEGAL_OBJECTIONS = [
    (
        "en",
        "Dear Sir or Madam,\n\nI object to the processing of my personal data for direct "
        "marketing purposes under Art. 21(2) GDPR. Please confirm in writing that my "
        "details will no longer be used.\n\nRegards,\nAna Lopez",
    ),
    ("en", "Under CAN-SPAM I am requesting you cease all further contact."),
    ("en", "This is a formal opt-out request under CASL."),
    ("en", "I withdraw my consent to receive commercial electronic messages."),
    (
        "de",
        "Sehr geehrte Damen und Herren,\n\nhiermit lege ich Widerspruch gegen die "
        "Verarbeitung meiner personenbezogenen Daten zu Werbezwecken gemäß Art. 21 DSGVO "
        "ein.\n\nMit freundlichen Grüßen",
    ),
    ("de", "Ich widerspreche der Nutzung meiner Daten für Werbung."),
    ("fr", "Je m'oppose au traitement de mes données à des fins de prospection (art. 21 RGPD)."),
    ("fr", "J'exerce mon droit d'opposition."),
    ("es", "Me opongo al tratamiento de mis datos con fines comerciales."),
    ("es", "Por la presente ejerzo mi derecho de oposición conforme al artículo 21 del RGPD."),
    ("it", "Mi oppongo al trattamento dei miei dati personali per finalità di marketing."),
    ("it", "Revoco il mio consenso all'invio di comunicazioni commerciali."),
    ("nl", "Hierbij maak ik bezwaar tegen de verwerking van mijn persoonsgegevens."),
    ("nl", "Ik trek hierbij mijn toestemming in voor direct marketing."),
    ("pt", "Oponho-me ao tratamento dos meus dados pessoais para marketing direto."),
    ("pt", "Nos termos da LGPD, revogo o meu consentimento."),
]


@pytest.mark.parametrize(("lang", "text"), LEGAL_OBJECTIONS)
def test_a_legal_objection_as_a_new_message_is_a_request(lang: str, text: str) -> None:
    got = new(text, subject="Data protection")
    assert got is not None, f"{lang}: missed {text!r}"
    assert got.suppress == (SENDER,)
    assert got.legal
    assert LEGAL in got.evidence


ERASURES = [
    ("en", "Please delete all my personal data under Art. 17 GDPR."),
    ("en", "I am exercising my right to be forgotten. Erase all data you hold about me."),
    ("en", "Right to erasure request: delete all information you store about me."),
    ("de", "Ich mache mein Recht auf Löschung nach Art. 17 DSGVO geltend."),
    ("de", "Bitte löschen Sie sämtliche Daten, die Sie über mich gespeichert haben."),
    ("fr", "J'exerce mon droit à l'effacement : supprimez toutes mes données."),
    ("fr", "Conformément à l'article 17 du RGPD, merci d'effacer mes données."),
    ("es", "Ejerzo mi derecho de supresión: borren todos mis datos."),
    ("es", "Solicito el derecho al olvido respecto de mis datos personales."),
    ("it", "Chiedo la cancellazione dei miei dati ai sensi dell'art. 17 GDPR."),
    ("it", "Esercito il diritto all'oblio."),
    ("nl", "Ik beroep me op mijn recht op vergetelheid; verwijder al mijn gegevens."),
    ("nl", "Graag mijn persoonsgegevens verwijderen (art. 17 AVG)."),
    ("pt", "Solicito a eliminação dos meus dados, direito ao apagamento (art. 17 RGPD)."),
    ("pt", "Por favor apaguem todos os meus dados."),
]


@pytest.mark.parametrize(("lang", "text"), ERASURES)
def test_an_erasure_request_asks_to_erase_and_suppress(lang: str, text: str) -> None:
    for got in (new(text, subject="GDPR"), reply(text)):
        assert got is not None, f"{lang}: missed {text!r}"
        assert got.erasure, f"{lang}: {text!r} not read as erasure"
        assert got.legal
        assert got.suppress == (SENDER,)
        assert ERASE in got.evidence


def test_a_long_formal_letter_is_read_whole() -> None:
    preamble = "I refer to the emails your company has sent to my work address. " * 12
    letter = (
        f"Dear Data Protection Officer,\n\n{preamble}\n\nPursuant to Article 17 GDPR I "
        "request the erasure of all personal data concerning me, and I object under "
        "Art. 21 GDPR to any further processing.\n\nYours faithfully,\nAna Lopez"
    )
    got = new(letter, subject="Formal request")
    assert got is not None
    assert got.erasure
    assert got.legal


@pytest.mark.parametrize(
    ("text", "suppress"),
    [
        ("please remove my colleague bob@client.test, he has left", ("bob@client.test",)),
        ("remove jane@client.test from your list", ("jane@client.test",)),
        ("Jane (jane@client.test) retired last month, please remove her.", ("jane@client.test",)),
        ("Please stop emailing tom@client.test, he no longer works here.", ("tom@client.test",)),
        (
            "Please remove bob@client.test and add carla@client.test instead.",
            ("bob@client.test",),
        ),
        (
            "Please remove me and my colleague bob@client.test from your list.",
            (SENDER, "bob@client.test"),
        ),
        (
            "Bitte entfernen Sie meinen Kollegen max@client.test aus dem Verteiler.",
            ("max@client.test",),
        ),
        (
            "Merci de désinscrire mon collègue paul@client.test, il a quitté la société.",
            ("paul@client.test",),
        ),
        ("Por favor eliminen a mi compañero luis@client.test de su lista.", ("luis@client.test",)),
        (
            "Per favore rimuovete il mio collega mario@client.test, non lavora più qui.",
            ("mario@client.test",),
        ),
        ("Graag mijn collega piet@client.test verwijderen van de lijst.", ("piet@client.test",)),
        ("Por favor removam o meu colega joao@client.test da lista.", ("joao@client.test",)),
    ],
)
def test_a_request_naming_someone_else_suppresses_them_not_the_writer(
    text: str, suppress: tuple[str, ...]
) -> None:
    got = reply(text)
    assert got is not None
    assert got.suppress == suppress
    assert OTHERS in got.evidence


@pytest.mark.parametrize(
    "text",
    [
        "can you unsubscribe my colleague and add me instead?",
        "He has left the company, please remove him.",
        "Bitte tragen Sie meinen Kollegen aus, ich bin jetzt zuständig.",
        "Il a quitté la société, merci de le retirer de votre liste.",
        "Por favor den de baja a mi compañera, ya no trabaja aquí.",
    ],
)
def test_someone_else_without_an_address_suppresses_nobody_and_says_so(text: str) -> None:
    """The writer asked for the colleague to go, not themselves; with no address to suppress,
    the caller gets an empty list and the evidence (the thread's enrolled contact, if any,
    is the colleague)."""
    got = reply(text)
    assert got is not None
    assert got.suppress == ()
    assert OTHERS_NO_ADDRESS in got.evidence


def test_a_referral_address_and_our_own_address_are_never_suppressed() -> None:
    got = reply("Please remove me and contact jane@client.test instead.")
    assert got is not None
    assert got.suppress == (SENDER,)
    got = reply("Stop emailing me from sales@vendor.example every other day.")
    assert got is not None
    assert got.suppress == (SENDER,)


@pytest.mark.parametrize(
    "subject", ["Unsubscribe", "Re: Remove", "AW: Abmelden", "Baja", "STOP", "Désinscrire"]
)
def test_a_subject_that_is_a_request_counts_with_an_empty_body(subject: str) -> None:
    got = read_removal("", subject=subject, sender=SENDER, reply_relation=True)
    assert got is not None
    assert got.suppress == (SENDER,)
    assert SUBJECT in got.evidence


def test_our_subject_quoted_in_a_reply_is_not_a_request() -> None:
    assert reply("Sounds good, call me Monday.", subject="Re: Stop emailing by hand") is None
    assert reply("Sounds good.", subject="Re: How to stop sending follow-ups manually") is None


def test_a_new_message_subject_that_asks_counts() -> None:
    got = new("", subject="Please remove me from your mailing list")
    assert got is not None
    assert got.suppress == (SENDER,)
    got = new("Hello,", subject="Right to erasure request")
    assert got is not None
    assert got.erasure


def test_a_bare_keyword_deep_in_a_new_message_is_not_a_request() -> None:
    """Cold mail and newsletters without list headers use the word in their body."""
    body = "Our product helps sales teams grow. " * 20 + "Many customers opt out of tracking."
    assert new(body) is None
    assert reply(body) is not None  # in a reply to us, a person wrote it: fail closed


def test_an_unknown_sender_gets_no_address_but_the_request_stands() -> None:
    got = read_removal("Unsubscribe", subject="", sender=None, reply_relation=False)
    assert got is not None
    assert got.suppress == ()
    assert NO_SENDER in got.evidence
    assert SHORT in got.evidence


def test_hostile_input_is_bounded() -> None:
    text = "Please remove me.\n" + "stop by " * 400_000 + "remove me"
    started = time.perf_counter()
    got = reply(text)
    # A guard against runaway backtracking, not a speed target (bench/classify.py has those).
    assert time.perf_counter() - started < 10.0
    assert got is not None


@pytest.mark.parametrize("code", SEVEN)
def test_every_language_has_the_core_removal_sections(code: str) -> None:
    lang = lexicon.languages()[code]
    for name in ("removal", "removal_short", "removal_legal", "erasure", "removal_footer"):
        assert lang.phrases.get(name), f"{code}.yaml has no {name!r} phrases"


# Properties: a request survives friendly filler around it; filler and footers alone never ask.

FILLER = st.sampled_from(
    [
        "Hi there,",
        "Thanks for reaching out.",
        "Hope your week is going well.",
        "I appreciate the persistence.",
        "Best regards,\nAna",
        "Cheers",
        "Hallo zusammen,",
        "Viele Grüße",
        "Bonjour,",
        "Cordialement,",
        "Un saludo.",
        "Grazie mille.",
        "Met vriendelijke groet,",
        "Abraços,",
        "Sent from my iPhone",
        "We have a lot going on this quarter.",
    ]
)
SENTENCES = st.sampled_from([t for texts in REQUESTS.values() for t in texts])


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(FILLER, max_size=4),
    request=SENTENCES,
    after=st.lists(FILLER, max_size=4),
    answers=st.booleans(),
)
def test_a_request_among_friendly_filler_is_still_a_request(
    before: list[str], request: str, after: list[str], answers: bool
) -> None:
    text = "\n\n".join([*before, request, *after])
    read = reply if answers else new
    got = read(text)
    assert got is not None, text
    assert got.suppress == (SENDER,)


@settings(max_examples=200, deadline=None)
@given(filler=st.lists(FILLER, max_size=6), footers=st.lists(st.sampled_from(FOOTERS), max_size=4))
def test_filler_and_footers_alone_are_never_a_request(
    filler: list[str], footers: list[str]
) -> None:
    text = "\n\n".join([*filler, *footers])
    assert reply(text) is None, text
    assert new(text, subject="Newsletter") is None, text


# Someone else named as "him", "her", "them" or "my colleague", their address written in an
# earlier sentence or in the one after: they are suppressed, the writer is not.
THIRD_PERSON = [
    (
        "Bob Hansen (bob@client.test) left the company in June and his mail comes to me. "
        "Please remove him from your mailing list.",
        ("bob@client.test",),
    ),
    (
        "Bob Hansen (bob@client.test) has retired. Please take them off your list.",
        ("bob@client.test",),
    ),
    (
        "Jane Roe <jane@client.test>\n\nShe no longer works here, please remove her.",
        ("jane@client.test",),
    ),
    (
        "Please remove my colleague from your list. Her address is tina@client.test.",
        ("tina@client.test",),
    ),
    (
        "Frau Petra Vogel (p.vogel@client.test) ist seit März nicht mehr bei uns beschäftigt. "
        "Bitte streichen Sie sie aus Ihrem Verteiler.",
        ("p.vogel@client.test",),
    ),
    (
        "Marie Dubois (marie@client.test) a quitté la société en mars. "
        "Merci de la retirer de votre liste.",
        ("marie@client.test",),
    ),
    (
        "Luis Pérez (luis@client.test) ya no trabaja con nosotros. "
        "Por favor, elimínenlo de su lista.",
        ("luis@client.test",),
    ),
    (
        "Mario Rossi (mario@client.test) non lavora più con noi. "
        "Vi prego di rimuoverlo dalla lista.",
        ("mario@client.test",),
    ),
    (
        "Piet Jansen (piet@client.test) werkt hier niet meer. Wilt u hem van uw lijst verwijderen?",
        ("piet@client.test",),
    ),
    (
        "O João Silva (joao@client.test) já não trabalha connosco. "
        "Por favor, removam-no da vossa lista.",
        ("joao@client.test",),
    ),
]


@pytest.mark.parametrize(("text", "suppress"), THIRD_PERSON)
def test_a_third_person_whose_address_is_in_another_sentence_is_suppressed_alone(
    text: str, suppress: tuple[str, ...]
) -> None:
    got = reply(text)
    assert got is not None, text
    assert got.suppress == suppress, text
    assert OTHERS in got.evidence
    assert OTHERS_NO_ADDRESS not in got.evidence


def test_who_takes_over_a_recipient_or_a_signature_is_never_taken_for_the_one_who_left() -> None:
    got = reply(
        "Bob (bob@client.test) has left. Please remove him. "
        "Carla Diaz (carla@client.test) takes over his accounts."
    )
    assert got is not None and got.suppress == ("bob@client.test",)
    got = reply("Bob has left. Please contact carla@client.test instead and remove him.")
    assert got is not None and got.suppress == ()
    # Cc'd on the reply: the writer's new colleague, not the one to remove.
    got = read_removal(
        "Please copy in my colleague. Bob (cc.person@client.test) reads these now. "
        "Please remove him from your list.",
        subject="Re: x",
        sender=SENDER,
        reply_relation=True,
        recipients=(*OURS, "cc.person@client.test"),
    )
    assert got is not None and got.suppress == ()
    # After a blank line comes the writer's signature, not the person they meant.
    got = reply("Bob has left, please remove him.\n\nThanks,\nAna\nOffice | office@client.test")
    assert got is not None
    assert got.suppress == ()
    assert OTHERS_NO_ADDRESS in got.evidence


# Formal, subjunctive, imperative and infinitive requests, and "don't contact me again".
FORMAL_REQUESTS = {
    "en": [
        "Please do not contact me again.",
        "Kindly refrain from contacting me in the future.",
        "Never email me again.",
        "I do not wish to be contacted again.",
        "Please cease emailing this address.",
    ],
    "de": [
        "Ich bitte um Austragung aus Ihrem Verteiler.",
        "Bitte sehen Sie von weiteren Kontaktaufnahmen ab.",
        "Ich bitte Sie, mich künftig nicht mehr zu kontaktieren.",
        "Ich ersuche um sofortige Streichung aus Ihrer Liste.",
    ],
    "fr": [
        "Je vous prie de me retirer de votre fichier.",
        "Merci de ne plus me recontacter.",
        "Je souhaite que vous me retiriez de vos listes.",
        "Je ne souhaite plus être sollicité.",
        "Veuillez cesser tout envoi à cette adresse.",
    ],
    "es": [
        "Les ruego que me quiten de su lista y que no vuelvan a contactarme.",
        "Quítenme de la lista, por favor.",
        "Les pido que me den de baja.",
        "Solicito mi baja de su base de datos.",
        "Le agradecería que me saque de su lista de envíos.",
        "Por favor, no me contacten más.",
        "No vuelvan a escribirme.",
        "No deseo seguir recibiendo sus correos.",
    ],
    "it": [
        "Vi chiedo di cancellarmi dalla mailing list.",
        "Vi prego di non contattarmi più.",
        "Mi cancelli dalla vostra lista, grazie.",
        "Vi chiedo che mi rimuoviate dalla lista.",
        "Non desidero ricevere ulteriori comunicazioni.",
    ],
    "nl": [
        "Gelieve mij uit te schrijven.",
        "Neem geen contact meer met mij op.",
        "Ik wens niet langer benaderd te worden.",
        "Wilt u mij van uw lijst halen?",
    ],
    "pt": [
        "Peço que me retirem da vossa lista.",
        "Por favor, não voltem a contactar-me.",
        "Gostaria de deixar de receber os vossos e-mails.",
        "Não me contactem mais.",
        "Solicito a remoção do meu e-mail da vossa lista.",
    ],
}


@pytest.mark.parametrize(
    ("lang", "text"), [(lang, t) for lang, texts in FORMAL_REQUESTS.items() for t in texts]
)
def test_formal_subjunctive_and_infinitive_requests_are_found(lang: str, text: str) -> None:
    for got in (reply(text), new(text)):
        assert got is not None, f"{lang}: missed {text!r}"
        assert got.suppress == (SENDER,), f"{lang}: {text!r} -> {got}"
        assert not got.erasure


# The same verbs in everyday senses, or negated: not requests.
FORMAL_LOOKALIKES = [
    "It took me quite a while to find the mailing list.",
    "Could you email me again next week with the figures?",
    "Wir liegen in einer Entfernung von 20 km vom Werk.",
    "Je vais cesser de m'inquiéter pour le planning.",
    "Espero que no me quiten el descuento.",
    "No quiero que me quiten de la lista, me interesa.",
    "Vorrei togliermi un dubbio: quanto costa?",
    "Non voglio che mi cancelliate dalla lista.",
    "Kunt u me morgen van het station halen?",
    "Bob werkt hier niet meer, ik heb geen contact meer met hem.",
    "Você pode me tirar uma dúvida sobre o preço?",
]


@pytest.mark.parametrize("text", FORMAL_LOOKALIKES)
def test_removal_verbs_in_everyday_senses_are_not_requests(text: str) -> None:
    assert reply(text) is None, text


# Erasure as people cite the statute (with its full name, paragraph and ordinal marks) or ask
# for the deletion of what is held, in every language.
STATUTE_ERASURES = [
    (
        "en",
        "Pursuant to Article 17(1) of the General Data Protection Regulation, I request the "
        "deletion of all personal data you hold about me.",
    ),
    ("en", "Under Art. 17 UK GDPR please erase the data concerning me."),
    ("de", "Gemäß Art. 17 Abs. 1 DSGVO verlange ich die Löschung aller meiner Daten."),
    ("de", "Nach Artikel 17 der Datenschutz-Grundverordnung beantrage ich die Löschung."),
    (
        "fr",
        "Conformément à l'article 17 du Règlement général sur la protection des données, "
        "je demande la suppression de mes données personnelles.",
    ),
    ("fr", "Je vous demande l'effacement de l'ensemble des données me concernant."),
    (
        "es",
        "En virtud del artículo 17 del Reglamento General de Protección de Datos, solicito la "
        "supresión de todos los datos que tengan sobre mí.",
    ),
    ("es", "Solicito el borrado de mis datos personales."),
    (
        "it",
        "Ai sensi dell'art. 17 del Regolamento (UE) 2016/679 chiedo l'eliminazione dei miei dati.",
    ),
    ("it", "Chiedo la cancellazione di tutti i dati personali che mi riguardano."),
    (
        "nl",
        "Op grond van artikel 17 van de Algemene verordening gegevensbescherming verzoek ik om "
        "verwijdering van al mijn persoonsgegevens.",
    ),
    ("nl", "Ik verzoek u op grond van art. 17 AVG mijn gegevens te wissen."),
    ("pt", "Nos termos do n.º 1 do artigo 17.º do RGPD, solicito o apagamento dos meus dados."),
    (
        "pt",
        "Ao abrigo do artigo 17.º do Regulamento Geral sobre a Proteção de Dados, venho "
        "solicitar o apagamento de todos os dados pessoais que mantêm a meu respeito.",
    ),
]


@pytest.mark.parametrize(("lang", "text"), STATUTE_ERASURES)
def test_erasure_is_read_however_the_statute_is_cited(lang: str, text: str) -> None:
    for got in (new(text, subject="Pedido"), reply(text)):
        assert got is not None, f"{lang}: missed {text!r}"
        assert got.erasure, f"{lang}: {text!r} not read as erasure"
        assert got.suppress == (SENDER,)


def test_a_new_message_whose_subject_cites_article_17_is_an_erasure_request() -> None:
    got = new("Exmos. Senhores,", subject="Pedido de apagamento de dados (artigo 17.º do RGPD)")
    assert got is not None
    assert got.erasure
    assert ERASE in got.evidence


# Deleting my details FROM YOUR LIST is unsubscribing: a removal, not an erasure request.
LIST_DELETIONS = [
    ("en", "Please delete my details from your mailing list."),
    ("en", "Please erase my data from your newsletter list."),
    ("de", "Bitte löschen Sie meine Daten aus Ihrem Verteiler."),
    ("fr", "Merci de supprimer mes données de votre liste de diffusion."),
    ("es", "Por favor, borren mis datos de su lista de correo."),
    ("it", "Vi prego di cancellare i miei dati dalla vostra mailing list."),
    ("nl", "Wilt u mijn gegevens uit uw mailinglijst verwijderen? Wij hebben geen interesse."),
    ("nl", "Graag mijn gegevens verwijderen van de verzendlijst."),
    ("pt", "Por favor apaguem os meus dados da vossa lista de e-mails."),
]


@pytest.mark.parametrize(("lang", "text"), LIST_DELETIONS)
def test_deleting_my_details_from_the_list_is_a_removal_not_an_erasure(
    lang: str, text: str
) -> None:
    got = reply(text)
    assert got is not None, f"{lang}: missed {text!r}"
    assert got.suppress == (SENDER,)
    assert not got.erasure, f"{lang}: {text!r} read as erasure"
    assert PHRASE in got.evidence


def test_article_17_still_asks_for_erasure_when_the_list_is_named_too() -> None:
    got = new("Under Art. 17 GDPR, delete my data from your mailing list and everywhere else.")
    assert got is not None
    assert got.erasure
