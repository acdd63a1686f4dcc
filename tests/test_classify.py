"""Tests for sequencer.classify, mostly table-driven over real and hand-written mail.

tests/corpus/ is a copy of /work/shared/corpora (609 public messages, each folder with its
SOURCE.md and labels.csv). tests/corpus/label_review.csv re-labels the files whose corpus
label contradicts the message's own words under the corpora's stated convention (hard =
the text says the address is bad); every row quotes the evidence, and the quality report
prints the numbers against the raw labels too. tests/mail/ holds synthetic fixtures.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sequencer.classify import Classification, Verdict, classify

TESTS = Path(__file__).parent
CORPUS = TESTS / "corpus"
MAIL = TESTS / "mail"
BODY_ONLY = frozenset({"email_reply_trimmer", "mail-parser-reply"})
CLASSES = (
    "bounce-hard",
    "bounce-soft",
    "auto_reply",
    "human_reply",
    "unsubscribe_request",
    "other",
)


@dataclass(frozen=True)
class Case:
    path: Path
    label: str  # "corpus/<path>" or "mail/<path>": how failures are reported
    category: str  # corpus category after review (bounce-hard, auto-reply, ...)
    raw_category: str  # the category labels.csv gives
    subkind: str
    source: str
    verdict: Verdict
    kind: str | None
    hard: bool | None
    return_date: date | None

    @property
    def expected_class(self) -> str:
        return _class_of(self.verdict, self.hard)


def _class_of(verdict: Verdict, hard: bool | None) -> str:
    if verdict is Verdict.BOUNCE:
        return "bounce-hard" if hard else "bounce-soft"
    return str(verdict)


def _expect(category: str, subkind: str) -> tuple[Verdict, str | None, bool | None]:
    """The corpus README's mapping from categories to verdicts."""
    if category == "bounce-hard":
        return Verdict.BOUNCE, None, True
    if category == "bounce-soft":
        return Verdict.BOUNCE, "delay" if subkind.startswith("delay-warning") else None, False
    if category == "auto-reply":
        return Verdict.AUTO_REPLY, "left_company" if "no-longer" in subkind else None, None
    if category == "human-reply":
        return Verdict.HUMAN_REPLY, None, None
    if category == "unsubscribe-request":
        return Verdict.UNSUBSCRIBE_REQUEST, None, None
    if category == "other" and "challenge" in subkind:
        return Verdict.AUTO_REPLY, "challenge", None
    return Verdict.OTHER, None, None


@functools.cache
def _cases() -> tuple[Case, ...]:
    with (CORPUS / "label_review.csv").open(encoding="utf-8") as fh:
        review = {row["path"]: row for row in csv.DictReader(fh)}
    cases: list[Case] = []
    with (CORPUS / "labels.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            reviewed = review.get(row["path"], row)
            verdict, kind, hard = _expect(reviewed["category"], reviewed["subkind"])
            cases.append(
                Case(
                    CORPUS / row["path"],
                    f"corpus/{row['path']}",
                    reviewed["category"],
                    row["category"],
                    reviewed["subkind"],
                    row["source"],
                    verdict,
                    kind,
                    hard,
                    None,
                )
            )
    with (MAIL / "labels.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            hard = {"True": True, "False": False}.get(row["hard"])
            category = {"bounce": f"bounce-{'hard' if hard else 'soft'}"}.get(
                row["verdict"], row["verdict"].replace("_", "-")
            )
            cases.append(
                Case(
                    MAIL / row["path"],
                    f"mail/{row['path']}",
                    category,
                    category,
                    row["note"],
                    "hand-written",
                    Verdict(row["verdict"]),
                    row["kind"] or None,
                    hard,
                    date.fromisoformat(row["return_date"]) if row["return_date"] else None,
                )
            )
    return tuple(cases)


def _wrap_body(body: bytes) -> bytes:
    """A minimal reply envelope around the body-only human replies."""
    return (
        b"From: Jo Prospect <jo@prospect.test>\n"
        b"To: Sam Seller <sam@vendor.test>\n"
        b"Subject: Re: Quick question\n"
        b"Date: Tue, 24 Nov 2026 10:00:00 +0000\n"
        b"Message-ID: <reply.1@prospect.test>\n"
        b"In-Reply-To: <s1.abc@vendor.test>\n"
        b"MIME-Version: 1.0\n"
        b"Content-Type: text/plain; charset=utf-8\n"
        b"Content-Transfer-Encoding: 8bit\n\n" + body
    )


def _raw(case: Case) -> bytes:
    data = case.path.read_bytes()
    return _wrap_body(data) if case.source in BODY_ONLY else data


@functools.cache
def _results() -> dict[str, Classification]:
    return {case.label: classify(_raw(case)) for case in _cases()}


def _case(label: str) -> Case:
    return next(c for c in _cases() if c.label == label)


def _describe(case: Case, got: Classification) -> str:
    return (
        f"  {case.label}  (subject: {got.subject[:60]!r})\n"
        f"      expected {case.expected_class} kind={case.kind} ({case.subkind[:70]})\n"
        f"      got {_class_of(got.verdict, got.hard)} kind={got.kind} rules={got.rules} "
        f"recipients={got.recipients}"
    )


def _report(title: str, failing: list[Case]) -> str:
    """Per-class precision/recall (reviewed labels, and recall on raw labels) and failures."""
    got = {label: _class_of(c.verdict, c.hard) for label, c in _results().items()}
    lines = [title, "", f"{'class':22} {'precision':>9} {'recall':>7} {'n':>5} {'raw recall':>11}"]
    for cls in CLASSES:
        expected = [c for c in _cases() if c.expected_class == cls]
        predicted = [c for c in _cases() if got[c.label] == cls]
        hits = sum(1 for c in expected if got[c.label] == cls)
        raw = [c for c in _cases() if _raw_class(c) == cls]
        raw_hits = sum(1 for c in raw if got[c.label] == cls)
        lines.append(
            f"{cls:22} {_pct(hits, len(predicted)):>9} {_pct(hits, len(expected)):>7} "
            f"{len(expected):>5} {_pct(raw_hits, len(raw)):>11}"
        )
    lines += ["", f"{len(failing)} failing:"]
    lines += [_describe(c, _results()[c.label]) for c in failing]
    return "\n".join(lines)


def _raw_class(case: Case) -> str:
    verdict, _, hard = _expect(case.raw_category, case.subkind)
    return _class_of(verdict, hard)


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _by_class(cls: str) -> list[Case]:
    return [c for c in _cases() if c.expected_class == cls]


# ---------------------------------------------------------------------------------------------
# Quality bars for this stage, in aggregate over the corpora and the hand-written mail.


def test_hard_bounce_recall_at_least_99_percent() -> None:
    results = _results()
    hard = _by_class("bounce-hard")
    missed = [
        c
        for c in hard
        if not (results[c.label].verdict is Verdict.BOUNCE and results[c.label].hard)
    ]
    assert len(missed) <= 0.01 * len(hard), _report("hard-bounce recall below 99%", missed)


def test_hard_bounce_recipient_found_for_98_percent() -> None:
    results = _results()
    hard = _by_class("bounce-hard")
    empty = [c for c in hard if not results[c.label].recipients]
    assert len(empty) <= 0.02 * len(hard), _report("hard bounces without a recipient", empty)


def test_no_human_reply_is_taken_for_a_robot_or_a_removal() -> None:
    results = _results()
    wrong = {Verdict.AUTO_REPLY, Verdict.BOUNCE, Verdict.UNSUBSCRIBE_REQUEST}
    misfiled = [c for c in _by_class("human_reply") if results[c.label].verdict in wrong]
    assert not misfiled, _report("human replies filed as auto_reply/bounce/unsubscribe", misfiled)


def test_no_soft_bounce_is_called_hard() -> None:
    results = _results()
    misfiled = [c for c in _by_class("bounce-soft") if results[c.label].hard]
    assert not misfiled, _report("soft bounces called hard", misfiled)


def test_delay_warnings_are_bounces_of_kind_delay() -> None:
    results = _results()
    delays = [c for c in _cases() if c.kind == "delay"]
    wrong = [
        c for c in delays if (results[c.label].kind, results[c.label].hard) != ("delay", False)
    ]
    assert len(delays) >= 18
    assert not wrong, _report("delay warnings not kind=delay", wrong)


def test_auto_reply_recall_at_least_97_percent() -> None:
    results = _results()
    autos = _by_class("auto_reply")
    missed = [c for c in autos if results[c.label].verdict is not Verdict.AUTO_REPLY]
    wrong_kind = [c for c in autos if c.kind and results[c.label].kind != c.kind]
    assert len(missed) <= 0.03 * len(autos), _report("auto-reply recall below 97%", missed)
    assert not wrong_kind, _report("auto-replies of the wrong kind", wrong_kind)


def test_removal_request_recall_at_least_95_percent() -> None:
    results = _results()
    requests = _by_class("unsubscribe_request")
    missed = [c for c in requests if results[c.label].verdict is not Verdict.UNSUBSCRIBE_REQUEST]
    assert requests
    assert len(missed) <= 0.05 * len(requests), _report("removal-request recall below 95%", missed)


def test_every_hand_written_unsubscribe_request_is_found() -> None:
    results = _results()
    requests = [c for c in _by_class("unsubscribe_request") if c.label.startswith("mail/")]
    missed = [c for c in requests if results[c.label].verdict is not Verdict.UNSUBSCRIBE_REQUEST]
    assert len(requests) >= 8
    assert not missed, _report("unsubscribe requests missed", missed)


@pytest.mark.parametrize(
    "case", [c for c in _cases() if c.label.startswith("mail/")], ids=lambda c: c.label
)
def test_hand_written_mail(case: Case) -> None:
    got = classify(_raw(case))
    assert got.verdict is case.verdict, _describe(case, got)
    if case.kind:
        assert got.kind == case.kind, _describe(case, got)
    if case.hard is not None:
        assert got.hard is case.hard, _describe(case, got)
    if case.return_date:
        assert got.return_date == case.return_date


def test_the_review_only_touches_files_that_exist_and_quotes_evidence() -> None:
    with (CORPUS / "label_review.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert rows
    for row in rows:
        assert (CORPUS / row["path"]).is_file(), row["path"]
        assert row["category"] in {"bounce-hard", "bounce-soft"}
        assert '"' in row["evidence"], row["path"]


# ---------------------------------------------------------------------------------------------
# Line endings.

TWINS = sorted(CORPUS.glob("*/sisimai-set-of-emails/cr*-*.eml"))


@pytest.mark.parametrize("path", TWINS, ids=lambda p: p.name)
def test_crlf_and_cr_twins_match_their_lf_twin(path: Path) -> None:
    lf_twin = path.with_name(path.name.split("-", 1)[1])
    assert lf_twin.is_file()
    assert classify(path.read_bytes()) == classify(lf_twin.read_bytes())


@pytest.mark.parametrize("path", sorted(MAIL.glob("*.eml")), ids=lambda p: p.name)
def test_line_endings_do_not_change_the_answer(path: Path) -> None:
    lf = path.read_bytes()
    expected = classify(lf)
    assert classify(lf.replace(b"\n", b"\r\n")) == expected
    assert classify(lf.replace(b"\n", b"\r")) == expected


# ---------------------------------------------------------------------------------------------
# Traps the corpora README names, and the rules added for particular corpus messages.


@pytest.mark.parametrize(
    ("label", "verdict", "kind", "hard"),
    [
        # Bounces that carry Auto-Submitted: auto-replied are bounces first.
        (
            "corpus/bounce-hard/Mail-DeliveryStatus-BounceParser/non-autoreply.msg",
            "bounce",
            "user_unknown",
            True,
        ),
        (
            "corpus/bounce-soft/sisimai-set-of-emails/rb-issue-368-bug.eml",
            "bounce",
            "mailbox_full",
            False,
        ),
        # Challenge-response messages shaped like DSNs are auto-replies, not bounces.
        (
            "corpus/other/Mail-DeliveryStatus-BounceParser/boxbe-cr.msg",
            "auto_reply",
            "challenge",
            None,
        ),
        (
            "corpus/other/Mail-DeliveryStatus-BounceParser/boxbe-cr2.msg",
            "auto_reply",
            "challenge",
            None,
        ),
        (
            "corpus/other/Mail-DeliveryStatus-BounceParser/whitelist.msg",
            "auto_reply",
            "challenge",
            None,
        ),
        (
            "corpus/other/Mail-DeliveryStatus-BounceParser/bluebottle.msg",
            "auto_reply",
            "challenge",
            None,
        ),
        # A "re:" subject does not make an Auto-Submitted message human.
        ("corpus/auto-reply/discourse/auto_reply.eml", "auto_reply", None, None),
        # "This inbox is no longer in use" ends the sequence.
        (
            "corpus/auto-reply/sisimai-set-of-emails/rfc3834-06.eml",
            "auto_reply",
            "left_company",
            None,
        ),
        # Successful-delivery reports, read receipts, complaints, non-replies: other.
        ("corpus/other/sisimai-set-of-emails/rfc3464-28.eml", "other", None, None),
        ("corpus/other/sisimai-set-of-emails/lhost-amazonses-12.eml", "other", None, None),
        ("corpus/other/flanker/disposition-notification.eml", "other", None, None),
        ("corpus/other/sisimai-set-of-emails/is-not-bounce-01.eml", "other", None, None),
        ("corpus/other/sisimai-set-of-emails/is-not-bounce-02.eml", "other", None, None),
        ("corpus/other/discourse/auto_generated_header.eml", "other", None, None),
    ],
    ids=lambda v: v.rsplit("/", 1)[-1] if isinstance(v, str) and "/" in v else None,
)
def test_corpus_traps(label: str, verdict: str, kind: str | None, hard: bool | None) -> None:
    got = _results()[label]
    assert (got.verdict, got.kind if kind else None, got.hard) == (Verdict(verdict), kind, hard)


@pytest.mark.parametrize(
    ("rule", "label"),
    [
        ("arf_complaint", "corpus/other/flanker/complaints-yahoo.eml"),
        ("arf_complaint", "corpus/other/PHP-Bounce-Handler/fbl-hotmail.txt"),  # no ARF part
        ("read_receipt", "corpus/other/flanker/disposition-notification.eml"),
        ("challenge_response", "corpus/other/Mail-DeliveryStatus-BounceParser/boxbe-cr.msg"),
        ("dsn_report", "corpus/bounce-hard/sisimai-set-of-emails/lhost-postfix-02.eml"),
        ("dsn_success", "corpus/other/sisimai-set-of-emails/rfc3464-28.eml"),
        ("ses_notification", "corpus/bounce-hard/sisimai-set-of-emails/lhost-amazonses-09.eml"),
        ("bounce_text", "corpus/bounce-hard/flufl.bounce/qmail_05.txt"),
        ("bounce_text", "corpus/bounce-hard/Mail-DeliveryStatus-BounceParser/warning-5.msg"),
        ("auto_submitted", "corpus/auto-reply/sisimai-set-of-emails/rfc3834-01.eml"),
        ("auto_generated", "corpus/other/discourse/auto_generated_header.eml"),
        ("autoreply_header", "corpus/auto-reply/bounce_email-gem/tt_1234211024.txt"),
        ("precedence", "corpus/auto-reply/Mail-DeliveryStatus-BounceParser/polish-autoreply.msg"),
        ("ooo_subject", "corpus/auto-reply/bounce_email-gem/tt_1234210666.txt"),
        # Lotus Notes "AUTO: ... is out of the office": the subject marker, colon and all.
        ("ooo_subject", "corpus/auto-reply/Mail-DeliveryStatus-BounceParser/warning-6.msg"),
        ("ooo_subject", "mail/ooo-de-notes-subject-only.eml"),
        ("ooo_text", "mail/ooo-en-text-only.eml"),
        ("list_mail", "corpus/other/discourse/auto_generated_precedence.eml"),
        ("not_a_reply", "corpus/other/bounce_email-gem/tt_1234241664.txt"),
        ("human_text", "corpus/human-reply/talon/outlook.eml"),
        ("calendar_accept", "mail/calendar-accept.eml"),
        ("unsubscribe_text", "mail/unsub-en.eml"),
    ],
    ids=lambda v: v.rsplit("/", 1)[-1],
)
def test_each_rule_decides_its_example(rule: str, label: str) -> None:
    assert _results()[label].rules[0] == rule


@pytest.mark.parametrize(
    ("label", "kind", "hard"),
    [
        # Words beat codes: 5.1.1 with "[SUSPEND]" / "max message size" is soft.
        (
            "corpus/bounce-soft/Mail-DeliveryStatus-BounceParser/att-via-sendmail.unknown.msg",
            "other",
            False,
        ),
        # A size limit is the recipient side's policy: the next, smaller message may pass.
        ("corpus/bounce-soft/Mail-DeliveryStatus-BounceParser/quota-4.msg", "policy", False),
        (
            "corpus/bounce-soft/Mail-DeliveryStatus-BounceParser/message-too-large.msg",
            "policy",
            False,
        ),
        # 552 5.2.2 mailbox full; the human-readable part saying "Not enough disk space".
        ("corpus/bounce-soft/flanker/bounce-mailbox-full.eml", "mailbox_full", False),
        ("corpus/bounce-soft/sisimai-set-of-emails/rfc3464-01.eml", "mailbox_full", False),
        # 550 5.7.1 policy words are soft; "550 5.7.1 No such user" is hard.
        (
            "corpus/bounce-soft/Mail-DeliveryStatus-BounceParser/spam-rejection-uribl.msg",
            "policy",
            False,
        ),
        (
            "corpus/bounce-hard/Mail-DeliveryStatus-BounceParser/gmail-via-sendmail.unknown.msg",
            "user_unknown",
            True,
        ),
        # "User unknown" refused after DATA is a filter (Sisimai's convention).
        ("corpus/bounce-soft/sisimai-set-of-emails/lhost-courier-02.eml", "policy", False),
        ("corpus/bounce-soft/sisimai-set-of-emails/rhost-nttdocomo-02.eml", "policy", False),
        # "550 : User unknown" with the address left out: a Japanese carrier's filter.
        ("corpus/bounce-soft/sisimai-set-of-emails/rhost-gsuite-08.eml", "policy", False),
        ("corpus/bounce-hard/sisimai-set-of-emails/rhost-gsuite-09.eml", "user_unknown", True),
        # Sender-side refusals (5.1.8) and a local delivery program failing are soft.
        ("corpus/bounce-soft/sisimai-set-of-emails/lhost-office365-05.eml", "policy", False),
        ("corpus/bounce-soft/sisimai-set-of-emails/lhost-postfix-01.eml", "other", False),
        # Mailbox disabled (5.2.1) contradicts "User Unknown"; Exchange Online's 5.4.1
        # "Recipient address rejected: Access denied" means the directory lacks the address.
        (
            "corpus/bounce-soft/Mail-DeliveryStatus-BounceParser/user-unknown-disabled.msg",
            "other",
            False,
        ),
        ("corpus/bounce-hard/sisimai-set-of-emails/rhost-microsoft-02.eml", "user_unknown", True),
        # Host unknown, null MX, has moved.
        ("corpus/bounce-hard/sisimai-set-of-emails/lhost-v5sendmail-02.eml", "user_unknown", True),
        ("corpus/bounce-hard/sisimai-set-of-emails/lhost-mailru-05.eml", "user_unknown", True),
        (
            "corpus/bounce-hard/Mail-DeliveryStatus-BounceParser/me-user-unknown.msg",
            "user_unknown",
            True,
        ),
        # Providers' own "no such account" words beat the after-DATA heuristic and 5.0.0
        # (Sisimai's Rhost tables): Yahoo refuses at DATA, MessageLabs says "542 ... Rejected".
        ("corpus/bounce-hard/sisimai-set-of-emails/rhost-yahooinc-03.eml", "user_unknown", True),
        ("corpus/bounce-hard/sisimai-set-of-emails/rhost-messagelabs-03.eml", "user_unknown", True),
        # Postfix's "Recipient address rejected: User unknown" is hard even under 5.2.1, and a
        # link's "#filtered" fragment is not a reason; sendmail-style "5.2.1 <a>... User
        # Unknown" stays soft (Sisimai: filtered), as does a link-only reason naming Spamhaus.
        ("corpus/bounce-hard/sisimai-set-of-emails/lhost-dragonfly-09.eml", "user_unknown", True),
        ("corpus/bounce-soft/sisimai-set-of-emails/lhost-amazonworkmail-02.eml", "other", False),
        ("corpus/bounce-soft/sisimai-set-of-emails/rhost-godaddy-02.eml", "policy", False),
        # Mixed recipients: hard for the unknown one only.
        ("corpus/bounce-hard/sisimai-set-of-emails/lhost-exim-02.eml", "user_unknown", True),
    ],
    ids=lambda v: v.rsplit("/", 1)[-1] if isinstance(v, str) and "/" in v else None,
)
def test_bounce_reasons(label: str, kind: str, hard: bool) -> None:
    got = _results()[label]
    assert (got.verdict, got.kind, got.hard) == (Verdict.BOUNCE, kind, hard), got.rules


# Refusals for the sender's standing: kind policy, never hard, reputation=True. Each file is
# the example that needed its words in classify._REPUTATION.
REPUTATION = [
    "corpus/bounce-soft/sisimai-set-of-emails/rhost-godaddy-02.eml",  # Spamhaus link only
    "corpus/bounce-soft/sisimai-set-of-emails/lhost-gmail-04.eml",  # blocked using cbl.abuseat
    "corpus/bounce-soft/bounce_email-gem/tt_bounce_06.txt",  # "blocked by ROTA DNSBL"
    "corpus/bounce-soft/sisimai-set-of-emails/lhost-amazonses-14.eml",  # Client host rejected
    "corpus/bounce-soft/sisimai-set-of-emails/rhost-franceptt-06.eml",  # Client host blocked
    "corpus/bounce-soft/sisimai-set-of-emails/rhost-microsoft-01.eml",  # banned sending IP
    "corpus/bounce-soft/sisimai-set-of-emails/rhost-microsoft-05.eml",  # 4.7.650 IP reputation
    "corpus/bounce-soft/sisimai-set-of-emails/rhost-microsoft-04.eml",  # DMARC 5.7.509
    "corpus/bounce-soft/sisimai-set-of-emails/rhost-apple-02.eml",  # DMARC policy
    "corpus/bounce-soft/sisimai-set-of-emails/rhost-tencent-03.eml",  # DMARC check failed
    "corpus/bounce-soft/sisimai-set-of-emails/lhost-dragonfly-01.eml",  # 5.7.26 unauthenticated
    "corpus/bounce-soft/sisimai-set-of-emails/lhost-exim-29.eml",  # Bad SPF records
    "corpus/bounce-soft/sisimai-set-of-emails/lhost-office365-03.eml",  # per its SPF record
    "corpus/bounce-soft/sisimai-set-of-emails/rhost-google-03.eml",  # 5.7.26 SPF hard fail
    "corpus/bounce-soft/sisimai-set-of-emails/rhost-google-06.eml",  # no PTR record
    "corpus/bounce-soft/sisimai-set-of-emails/lhost-courier-03.eml",  # Sender ID (PRA)
    "corpus/bounce-soft/sisimai-set-of-emails/rhost-yahooinc-02.eml",  # [TSS04]
    "corpus/bounce-soft/sisimai-set-of-emails/rhost-tencent-01.eml",  # Blocked IP
    "corpus/bounce-soft/sisimai-set-of-emails/rhost-cox-01.eml",  # sender rejected, CDRBL
    "corpus/bounce-soft/sisimai-set-of-emails/rhost-mimecast-01.eml",  # Host network not allowed
    "corpus/bounce-soft/Mail-DeliveryStatus-BounceParser/junkemailfilter.msg",  # IP not allowed
    "corpus/bounce-soft/Mail-DeliveryStatus-BounceParser/spam-rejection-uribl.msg",  # URIBL
    "corpus/bounce-soft/sisimai-set-of-emails/lhost-office365-05.eml",  # 5.1.8 sender rejected
    "mail/bounce-gmail-reputation.eml",  # Gmail 5.7.1 "likely unsolicited mail"
    "mail/bounce-m365-blocklist.eml",  # Outlook.com S3150 "on our block list"
    "mail/bounce-yahoo-tss04.eml",  # Yahoo [TSS04]
]
# Refusals on the recipient's side: kind policy, reputation=False.
RECIPIENT_POLICY = [
    "corpus/bounce-soft/sisimai-set-of-emails/lhost-exchange2007-04.eml",  # AuthRequired group
    "corpus/bounce-soft/sisimai-set-of-emails/rhost-facebook-03.eml",  # recipient preferences
    "corpus/bounce-soft/Mail-DeliveryStatus-BounceParser/relaying-denied.msg",
    "corpus/bounce-soft/Mail-DeliveryStatus-BounceParser/rcpthosts.msg",
    "corpus/bounce-soft/Mail-DeliveryStatus-BounceParser/message-too-large.msg",  # size limit
    "corpus/bounce-soft/sisimai-set-of-emails/lhost-exchange2007-03.eml",  # size limit
    "corpus/bounce-soft/Mail-DeliveryStatus-BounceParser/spam-rejection30.msg",  # content: spam
    "mail/bounce-m365-group-internal-only.eml",  # group accepts its organization only
]


@pytest.mark.parametrize("label", REPUTATION, ids=lambda v: v.rsplit("/", 1)[-1])
def test_sender_reputation_refusals_are_policy_with_reputation(label: str) -> None:
    got = _results()[label]
    assert (got.verdict, got.kind, got.hard, got.reputation) == (
        Verdict.BOUNCE,
        "policy",
        False,
        True,
    ), _describe(_case(label), got)
    assert got.rules[-1] == "reputation"
    assert got.to_json()["reputation"] is True


@pytest.mark.parametrize("label", RECIPIENT_POLICY, ids=lambda v: v.rsplit("/", 1)[-1])
def test_recipient_side_policy_is_not_reputation(label: str) -> None:
    got = _results()[label]
    assert (got.verdict, got.kind, got.hard, got.reputation) == (
        Verdict.BOUNCE,
        "policy",
        False,
        False,
    ), _describe(_case(label), got)
    assert "reputation" not in got.rules


def test_reputation_is_only_ever_set_on_soft_policy_bounces() -> None:
    flagged = [c for c in _cases() if _results()[c.label].reputation]
    wrong = [
        c
        for c in flagged
        if (_results()[c.label].kind, _results()[c.label].hard) != ("policy", False)
    ]
    assert not wrong, _report("reputation outside soft policy bounces", wrong)
    hard = [c for c in flagged if c.expected_class == "bounce-hard"]
    assert not hard, _report("hard bounces flagged as reputation", hard)


def test_mixed_recipients_mark_only_the_unknown_one_bad() -> None:
    got = _results()["corpus/bounce-hard/sisimai-set-of-emails/lhost-exim-02.eml"]
    assert got.recipients == ("kijitora@example.jp",)


def test_mixed_5_2_1_user_unknown_is_not_hard_at_rcpt() -> None:
    # lhost-postfix-02.eml: "550 5.2.1 <filtered@...>... User Unknown (in reply to RCPT TO)"
    # beside a 5.1.1: only the 5.1.1 address is bad.
    got = _results()["corpus/bounce-hard/sisimai-set-of-emails/lhost-postfix-02.eml"]
    assert got.recipients == ("userunknown@example.co.jp",)


def test_recipient_from_the_quoted_original_when_the_bounce_names_none() -> None:
    # lhost-verizon-01.eml: "No valid recipients for this MM", then "Original Message: ...
    # To: 0000000000@vzwpix.com".
    got = _results()["corpus/bounce-hard/sisimai-set-of-emails/lhost-verizon-01.eml"]
    assert (got.hard, got.recipients) == (True, ("0000000000@vzwpix.com",))


def test_arf_complaint_names_the_complained_about_recipient() -> None:
    got = _results()["corpus/other/sisimai-set-of-emails/arf-14.eml"]
    assert (got.verdict, got.kind, got.rules) == (Verdict.OTHER, None, ("arf_complaint",))
    assert got.recipients == ("kijitora@y.example.com",)  # Original-Rcpt-To wins
    yahoo = _results()["corpus/other/flanker/complaints-yahoo.eml"]
    assert yahoo.recipients == ("user@yahoo.com",)  # the attached original's To


# ---------------------------------------------------------------------------------------------
# The hand-written scenarios the product depends on.


def test_quoted_unsubscribe_footer_is_a_human_reply() -> None:
    got = _results()["mail/human-apple-quotes-unsubscribe.eml"]
    assert got.verdict is Verdict.HUMAN_REPLY
    # Same with "|"-quoted footers (email_reply_trimmer/embedded_email_4.txt).
    got = _results()["corpus/human-reply/email_reply_trimmer/embedded_email_4.txt"]
    assert got.verdict is Verdict.HUMAN_REPLY


def test_human_reply_quoting_an_out_of_office_is_human() -> None:
    assert _results()["mail/human-quotes-ooo.eml"].verdict is Verdict.HUMAN_REPLY
    assert _results()["mail/human-gmail-reply.eml"].verdict is Verdict.HUMAN_REPLY


@pytest.mark.parametrize(
    ("body", "verdict"),
    [
        # tests/mail/human-trap-newsletter-question.eml, human-trap-not-unsubscribing.eml,
        # human-trap-dont-stop.eml, human-trap-fr-ne-pas-desabonner.eml: negated or asked
        # and answered "no", a removal phrase is not a request.
        ("Unsubscribe me from the newsletter? No, the call is fine.", "human_reply"),
        ("No need to remove me from anything, I'm interested.", "human_reply"),
        ("Don't stop emailing me, these are useful.", "human_reply"),
        ("Bitte nicht abmelden, wir sprechen Donnerstag.", "human_reply"),
        # ...while the clause rule keeps these requests.
        ("No, please remove me from your list.", "unsubscribe_request"),
        ("Not interested - remove me.", "unsubscribe_request"),
        ("Could you take me off your list? Thanks.", "unsubscribe_request"),
        ("Not interested, so please unsubscribe me.", "unsubscribe_request"),
    ],
)
def test_negated_or_declined_removal_phrases(body: str, verdict: str) -> None:
    got = classify(_wrap_body(body.encode()))
    assert got.verdict is Verdict(verdict), got.rules


def test_calendar_accept_is_a_human_reply() -> None:
    got = _results()["mail/calendar-accept.eml"]
    assert (got.verdict, got.rules) == (Verdict.HUMAN_REPLY, ("calendar_accept",))


def test_postfix_511_bounce_names_recipient_and_original_message() -> None:
    got = _results()["mail/bounce-postfix-511.eml"]
    assert (got.verdict, got.kind, got.hard) == (Verdict.BOUNCE, "user_unknown", True)
    assert got.recipients == ("jo@prospect.test",)
    assert "<s1.abc@vendor.test>" in got.related_message_ids
    assert got.message_id == "<20261124081231.4ZkB7x0c2Sz4wQ@mail.vendor.test>"
    assert got.message_id not in got.related_message_ids
    assert got.to_json() == {
        "verdict": "bounce",
        "kind": "user_unknown",
        "hard": True,
        "recipients": ["jo@prospect.test"],
        "return_date": None,
        "alternatives": [],
        "reputation": False,
        "rules": ["dsn_report", "reason_user_unknown"],
        "intent": None,
        "follow_up_on": None,
        "referral": [],
        "suppress": [],
        "erasure": False,
    }


def test_lotus_notes_return_date_reads_day_first_when_month_first_is_far_off() -> None:
    # warning-6.msg (sent 4 Jan 2010): "AUTO: ... is out of the office. (returning 05/01/2010)"
    got = _results()["corpus/auto-reply/Mail-DeliveryStatus-BounceParser/warning-6.msg"]
    assert (got.kind, got.return_date) == ("out_of_office", date(2010, 1, 5))


def test_returned_message_ids_are_found_in_text_rfc822_headers_and_plain_text() -> None:
    assert "<s1.mf2@vendor.test>" in _results()["mail/bounce-mailbox-full.eml"].related_message_ids
    # qmail quotes the original in the text body: "Message-ID: <...>" lines count.
    got = _results()["corpus/bounce-hard/flufl.bounce/qmail_05.txt"]
    assert got.related_message_ids


HEADERS = (
    b"From: =?UTF-8?Q?J=C3=B6rg_Prospekt?= <Joerg.Prospekt@Kunde.TEST>\n"
    b"To: sam@vendor.test\n"
    b"Subject: =?UTF-8?Q?AW:_K=C3=BChllager?= in\n Hamburg\n"
    b"Date: Tue, 24 Nov 2026 10:00:00 +0100\n"
    b"Message-ID: <m1@kunde.test>\n"
    b"In-Reply-To: <s2@vendor.test>\n"
    b"References: <s1@vendor.test>\n <s2@vendor.test> <m1@kunde.test>\n"
    b"Content-Type: text/plain; charset=utf-8\n\n"
    b"Ja, gerne. Passt Donnerstag?\n"
)


def test_header_facts() -> None:
    got = classify(HEADERS)
    assert got.verdict is Verdict.HUMAN_REPLY
    assert got.message_id == "<m1@kunde.test>"
    assert got.from_address == "joerg.prospekt@kunde.test"
    assert got.subject == "AW: Kühllager in Hamburg"
    # In-Reply-To first, then References, without duplicates or the message's own id.
    assert got.related_message_ids == ("<s2@vendor.test>", "<s1@vendor.test>")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("I'm back on 3 December.", date(2026, 12, 3)),
        ("I am out of the office, returning on Monday 12/07/2026.", date(2026, 12, 7)),
        ("Away until 2026-12-03 with no email.", date(2026, 12, 3)),
        ("Ich bin ab dem 03.12. wieder im Büro, zurück am 03.12.", date(2026, 12, 3)),
        ("Je serai de retour le 3 décembre.", date(2026, 12, 3)),
        ("Estoy de vacaciones hasta el 5 de enero.", date(2027, 1, 5)),  # next year
        ("Back on December 3rd, 2026.", date(2026, 12, 3)),
        ("I'm away and will reply when I can.", None),
        ("Back on 03/04/2027.", None),  # 3 April or 4 March, both far off: unsure
        ("Back on 01/02/2027.", date(2027, 1, 2)),  # 2 January is soon, 1 February is not
    ],
)
def test_return_dates(body: str, expected: date | None) -> None:
    raw = (
        "From: Jo <jo@prospect.test>\nTo: sam@vendor.test\nSubject: Out of office\n"
        "Date: Tue, 24 Nov 2026 10:00:00 +0100\nAuto-Submitted: auto-replied\n"
        f"Content-Type: text/plain; charset=utf-8\n\n{body}\n"
    ).encode()
    got = classify(raw)
    assert (got.verdict, got.kind) == (Verdict.AUTO_REPLY, "out_of_office")
    assert got.return_date == expected


# ---------------------------------------------------------------------------------------------
# Hostile input.


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff garbage",
        b"\r\r\r\n\n",
        b"Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: message/rfc822\n\n--x",
        b"Subject: =?utf-8?B?////?=\nFrom: <<<@@@>>>\n"
        b"Content-Type: text/plain; charset=nope\n\n\xff",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
        b"--b\nContent-Type: message/delivery-status\n\nAction: failed\nStatus: 5.1.1\n--b--",
    ],
)
def test_broken_mime_never_raises(raw: bytes) -> None:
    got = classify(raw)
    assert isinstance(got, Classification)
    if raw in (b"", b"\x00\xff garbage"):
        assert got.verdict is Verdict.OTHER


def test_deep_nesting_is_bounded() -> None:
    depth = 500
    raw = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(depth)
    )
    assert isinstance(classify(raw), Classification)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_classify_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    got = classify(raw)
    assert isinstance(got.verdict, Verdict)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=400), st.sampled_from(["", "Auto-Submitted: auto-replied\n"]))
def test_classify_never_raises_on_text_bodies(body: str, extra: str) -> None:
    raw = f"From: a@b.test\nSubject: Re: x\n{extra}\n{body}".encode("utf-8", "surrogatepass")
    assert isinstance(classify(raw).verdict, Verdict)


def test_left_company_notice_names_the_alternative_contact() -> None:
    got = _results()["mail/left-company.eml"]
    assert (got.kind, got.alternatives) == ("left_company", ("purchasing@prospect.test",))
    assert got.to_json()["alternatives"] == ["purchasing@prospect.test"]


def test_left_company_alternatives_leave_out_sender_and_recipients() -> None:
    raw = (
        b"From: Ann <ann@acme.test>\r\nTo: sam@vendor.test\r\nSubject: Automatic reply\r\n"
        b"Auto-Submitted: auto-replied\r\nMessage-ID: <lc2@acme.test>\r\n\r\n"
        b"Ann (ann@acme.test) has left the company. Your message to sam@vendor.test was not"
        b" read. For sales, write to Bea.Smith@Acme.test or orders@acme.test.\r\n"
    )
    got = classify(raw)
    assert got.kind == "left_company"
    assert got.alternatives == ("bea.smith@acme.test", "orders@acme.test")
