"""Issue 12's quality bars on hand-written replies to a sales follow-up (tests/mail/replies.csv).

What a salesperson would notice: a removal request that slips through means more mail to someone
who said stop, a reply read as a removal request silences a prospect who wanted to talk, a wrong
`follow_up_on` brings the contact back at the wrong time, and a lost referral loses the person
to write to. Each failure lists the misread files with what was expected and what came out, so
whoever writes the rules sees which messages to read (and should fix the rule, not the message).
"""

from __future__ import annotations

import csv
import functools
import os
import re
from collections import Counter
from dataclasses import dataclass
from datetime import date
from email import message_from_bytes
from email.utils import parsedate_to_datetime
from pathlib import Path

from sequencer.classify import Classification, Intent, Verdict, classify

# Another directory labelled the same way (its own replies.csv) can be measured with
# SEQUENCER_REPLIES_DIR=/path; the size and coverage minimums hold for tests/mail only.
HERE = Path(__file__).parent / "mail"
MAIL = Path(os.environ.get("SEQUENCER_REPLIES_DIR") or HERE)
LANGUAGES = {"en", "de", "fr", "es", "it", "nl", "pt"}


@dataclass(frozen=True)
class Label:
    path: str
    verdict: Verdict
    intent: Intent | None
    follow_up: tuple[date, date] | None  # inclusive period the reply named
    suppress: frozenset[str]
    referral: frozenset[str]
    names: dict[str, str]  # referred address -> name, where the reply gives one
    erasure: bool
    note: str

    @property
    def language(self) -> str:
        """The language code in the file name: removal-<lang>-..., reply-<intent>-<lang>-..."""
        parts = self.path.split("-")
        return parts[1] if parts[0] == "removal" else parts[2]


def _names(cell: str) -> dict[str, str]:
    """`address=Name; address=Name` -> {address: Name}."""
    pairs = (item.split("=", 1) for item in cell.split(";") if item.strip())
    return {address.strip(): name.strip() for address, name in pairs}


def _labels() -> tuple[Label, ...]:
    return load_labels(MAIL)


@functools.cache
def load_labels(folder: Path) -> tuple[Label, ...]:
    """The labels of `folder`/replies.csv (bench/classify.py reads them too)."""
    with (folder / "replies.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    labels = []
    for row in rows:
        period = None
        if row["follow_up_from"] or row["follow_up_to"]:
            period = (
                date.fromisoformat(row["follow_up_from"]),
                date.fromisoformat(row["follow_up_to"]),
            )
        labels.append(
            Label(
                path=row["path"],
                verdict=Verdict(row["verdict"]),
                intent=Intent(row["intent"]) if row["intent"] else None,
                follow_up=period,
                suppress=frozenset(row["suppress"].split()),
                referral=frozenset(row["referral"].split()),
                names=_names(row.get("referral_names") or ""),
                erasure={"true": True, "false": False}[row["erasure"]],
                note=row["note"],
            )
        )
    return tuple(labels)


@functools.cache
def _results() -> dict[str, Classification]:
    return {label.path: classify((MAIL / label.path).read_bytes()) for label in _labels()}


def _of(verdict: Verdict) -> list[Label]:
    return [label for label in _labels() if label.verdict is verdict]


def _got(c: Classification) -> str:
    """What came out, in the terms the labels use, with the rules that decided."""
    parts = [f"verdict={c.verdict}", f"intent={c.intent}"]
    if c.follow_up_on:
        parts.append(f"follow_up_on={c.follow_up_on}")
    if c.suppress:
        parts.append(f"suppress={' '.join(c.suppress)}")
    if c.referral:
        parts.append("referral=" + " ".join(f"{r.address}({r.name})" for r in c.referral))
    if c.erasure:
        parts.append("erasure")
    return ", ".join(parts) + f"; rules={','.join(c.rules)}"


def _report(title: str, total: int, misread: list[tuple[Label, str]]) -> str:
    lines = [f"{title}: {len(misread)} of {total} misread"]
    lines += [
        f"  {label.path}: expected {want}; got {_got(_results()[label.path])}  [{label.note}]"
        for label, want in misread
    ]
    return "\n".join(lines)


def _date_of(path: str) -> date:
    msg = message_from_bytes((MAIL / path).read_bytes())
    return parsedate_to_datetime(str(msg["Date"])).date()


# ---------------------------------------------------------------------------------------------
# The labels themselves: a mistake here would make every figure below meaningless.


def test_the_labels_are_complete_and_consistent() -> None:
    labels = _labels()
    paths = [label.path for label in labels]
    assert len(paths) == len(set(paths)), "a file is labelled twice in replies.csv"
    verdict_labels: set[str] = set()
    if (MAIL / "labels.csv").is_file():
        with (MAIL / "labels.csv").open(encoding="utf-8") as fh:
            verdict_labels = {row["path"] for row in csv.DictReader(fh)}
    unlabelled = {p.name for p in MAIL.glob("*.eml")} - verdict_labels - set(paths)
    assert not unlabelled, f"messages in tests/mail with no label: {sorted(unlabelled)}"
    assert not set(paths) & verdict_labels, "a file is labelled in both CSVs"
    address = re.compile(r"^[a-z0-9._+-]+@[a-z0-9.-]+\.(test|example)$")
    for label in labels:
        where = f"replies.csv, {label.path}"
        assert (MAIL / label.path).is_file(), f"{where}: no such file"
        assert label.language in LANGUAGES, f"{where}: language not in the file name"
        assert all(address.match(a) for a in label.suppress | label.referral), where
        if label.verdict is Verdict.UNSUBSCRIBE_REQUEST:
            assert label.suppress, f"{where}: a removal request must name whom to suppress"
            assert label.follow_up is None and not label.referral, where
        else:
            assert label.verdict is Verdict.HUMAN_REPLY, where
            assert label.intent is not None, f"{where}: a human reply needs an intent"
            assert not label.suppress and not label.erasure, where
            assert bool(label.referral) == (label.intent is Intent.REFERRAL), where
        assert set(label.names) <= label.referral, f"{where}: a name for an unlisted address"
        if label.follow_up:
            start, end = label.follow_up
            assert label.intent is Intent.NOT_NOW, f"{where}: a period only for not_now"
            assert _date_of(label.path) < start <= end, f"{where}: period not after the Date"
    if MAIL != HERE:
        return
    removals = _of(Verdict.UNSUBSCRIBE_REQUEST)
    assert len(removals) >= 20
    assert {label.language for label in removals} == LANGUAGES
    for intent in Intent:
        these = [label for label in labels if label.intent is intent]
        assert len(these) >= 12, f"only {len(these)} {intent} replies"
        assert len({label.language for label in these}) >= 5, f"{intent}: too few languages"


# ---------------------------------------------------------------------------------------------
# Removal requests: recall 100%, and nobody else silenced.


def test_every_removal_request_is_found_and_suppresses_exactly_whom_it_asks() -> None:
    results = _results()
    removals = _of(Verdict.UNSUBSCRIBE_REQUEST)
    misread = [
        (label, f"unsubscribe_request suppress={' '.join(sorted(label.suppress))}")
        for label in removals
        if results[label.path].verdict is not Verdict.UNSUBSCRIBE_REQUEST
        or frozenset(results[label.path].suppress) != label.suppress
    ]
    assert not misread, _report("removal requests (recall must be 100%)", len(removals), misread)


def test_no_human_reply_or_referral_is_read_as_a_removal_request() -> None:
    results = _results()
    replies = _of(Verdict.HUMAN_REPLY)
    misread = [
        (label, f"human_reply ({label.intent})")
        for label in replies
        if results[label.path].verdict is Verdict.UNSUBSCRIBE_REQUEST
        or results[label.path].suppress
    ]
    assert not misread, _report("human replies read as removal requests", len(replies), misread)


def test_every_human_reply_is_read_as_a_human_reply() -> None:
    results = _results()
    replies = _of(Verdict.HUMAN_REPLY)
    misread = [
        (label, "human_reply")
        for label in replies
        if results[label.path].verdict is not Verdict.HUMAN_REPLY
    ]
    assert not misread, _report("human replies given another verdict", len(replies), misread)


def test_erasure_is_flagged_for_article_17_requests_only() -> None:
    results = _results()
    misread = [
        (label, f"erasure={label.erasure}")
        for label in _labels()
        if results[label.path].erasure is not label.erasure
    ]
    assert not misread, _report("erasure flag", len(_labels()), misread)


# ---------------------------------------------------------------------------------------------
# What a human reply means.


def test_intent_accuracy_at_least_90_percent() -> None:
    results = _results()
    replies = _of(Verdict.HUMAN_REPLY)
    misread = [
        (label, f"intent={label.intent}")
        for label in replies
        if results[label.path].intent is not label.intent
    ]
    confusion = Counter(
        (str(label.intent), str(results[label.path].intent)) for label, _ in misread
    )
    summary = ", ".join(f"{want}->{got}: {n}" for (want, got), n in sorted(confusion.items()))
    accuracy = 1 - len(misread) / len(replies)
    assert len(misread) <= 0.10 * len(replies), _report(
        f"intent accuracy {accuracy:.1%} < 90% ({summary})", len(replies), misread
    )


def test_follow_up_on_falls_in_the_period_the_reply_named_and_only_then() -> None:
    """A labelled period must contain follow_up_on; no period labelled means no date at all
    (a date invented for "maybe later" would bring the contact back uninvited)."""
    results = _results()
    misread = []
    for label in _labels():
        got = results[label.path].follow_up_on
        if label.follow_up:
            start, end = label.follow_up
            if got is None or not start <= got <= end:
                misread.append((label, f"follow_up_on in {start}..{end}"))
        elif got is not None:
            misread.append((label, "follow_up_on=None"))
    assert not misread, _report("follow_up_on", len(_labels()), misread)


def test_referrals_name_the_people_pointed_to() -> None:
    """Exactly the referred addresses (none where the label has none), and the name where the
    reply gives one."""
    results = _results()
    misread = []
    for label in _labels():
        got = {r.address: r.name for r in results[label.path].referral}
        names_ok = all(
            " ".join((got.get(address) or "").split()).casefold() == name.casefold()
            for address, name in label.names.items()
        )
        if set(got) != label.referral or not names_ok:
            want = " ".join(
                f"{a}({label.names[a]})" if a in label.names else a for a in sorted(label.referral)
            )
            misread.append((label, f"referral={want or 'none'}"))
    assert not misread, _report("referrals", len(_labels()), misread)
