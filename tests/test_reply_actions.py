"""What a person's reply leads to, on a real database (SQLite and PostgreSQL): the intent kept
with the enrollment, the agenda, `on_reply` enrolments planned by every etiquette rule,
removal requests that suppress exactly whom they name, erasure requests, `stop_on_reply:
domain`, and `forget`.

The classifier does not read intents yet, so each test hands the reply handler
(`replies.act_on`, the daemon's own entry point after classification) a real Classification
built here, with the raw message it came from; everything after that is the real thing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from world import cli

from sequencer import contacts, enrolment, replies, suppression
from sequencer.classify import Classification, Intent, Referral, Verdict
from sequencer.classify.removal_request import OTHERS_NO_ADDRESS
from sequencer.config import Settings, load_settings
from sequencer.etiquette import Etiquette
from sequencer.sequences import Sequence, load_all
from sequencer.states import State
from sequencer.store import db, queries
from sequencer.store.models import (
    AgendaItem,
    Enrollment,
    InboundMessage,
    SentMessage,
    Suppression,
)

SALES = "sales@vendor.test"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
JO, ANN, PAT = "jo@prospect.test", "ann@prospect.test", "pat@prospect.test"

OUTREACH = """mailbox: sales
on_reply:
  not_now: {enroll: later}
  referral: {enroll: intro}
steps:
  - wait: 0s
    subject: "Hello {{ contact.first_name }}"
    body: "Hi {{ contact.first_name }}, a short note."
  - wait: 3d
    breakup: true
    body: "Hi {{ contact.first_name }}, I'll stop here."
"""
PLAIN = """mailbox: sales
steps:
  - wait: 0s
    subject: "Hello {{ contact.first_name }}"
    body: "Hi {{ contact.first_name }}, a short note."
  - wait: 3d
    breakup: true
    body: "Hi {{ contact.first_name }}, I'll stop here."
"""
LATER = """mailbox: sales
window: {days: [mon, tue, wed, thu], hours: "09:00-11:30"}
steps:
  - wait: 0s
    subject: "As you asked, {{ contact.first_name }}"
    body: "Hi {{ contact.first_name }}, you asked me to write again about now."
  - wait: 3bd
    breakup: true
    body: "Hi {{ contact.first_name }}, I'll stop here."
"""
INTRO = """mailbox: sales
variables:
  referred_by: "a colleague"
steps:
  - wait: 0s
    subject: "{{ contact.referred_by }} suggested I write, {{ contact.first_name }}"
    body: "Hi {{ contact.first_name }}, {{ contact.referred_by }} pointed me to you."
  - wait: 3d
    breakup: true
    body: "Hi {{ contact.first_name }}, I'll stop here."
"""


@dataclass
class Env:
    cfg: Path
    settings: Settings
    sequences: dict[str, Sequence]
    uid: int = 0

    @property
    def etiquette(self) -> Etiquette:
        return Etiquette(self.settings)

    async def enroll(self, address: str, sequence: str = "outreach", **values: str) -> Enrollment:
        seq = self.sequences[sequence]
        person = contacts.contact(seq, address, {"first_name": "Jo", **values})
        done = await enrolment.enroll(self.etiquette, seq, [person], NOW)
        assert done.created, done
        return await Enrollment.get(id=done.created[0])

    async def reply(
        self, c: Classification, raw: bytes, at: datetime = NOW
    ) -> replies.Outcome | None:
        """The daemon's handler, from the point a message has been classified."""
        self.uid += 1
        return await replies.act_on(
            c,
            raw,
            "sales",
            1,
            self.uid,
            now=at,
            own_addresses={SALES},
            etiquette=self.etiquette,
            sequences=self.sequences,
        )


def _config(root: Path, database: str, top: str) -> Path:
    folder = root / "sequences"
    folder.mkdir(exist_ok=True)
    for name, text in (("outreach", OUTREACH), ("plain", PLAIN), ("later", LATER)):
        (folder / f"{name}.yaml").write_text(text)
    (folder / "intro.yaml").write_text(INTRO)
    cfg = root / "sequencer.yaml"
    cfg.write_text(
        f"""database: {database}
sequences: ./sequences
timezone: Europe/Berlin
country: DE
{top}
mailboxes:
  sales:
    address: {SALES}
    smtp: {{host: 127.0.0.1, port: 2525, security: none}}
    imap: {{host: 127.0.0.1, port: 1143, security: none, username: sales}}
"""
    )
    return cfg


MakeEnv = Callable[..., AbstractAsyncContextManager[Env]]


def _factory(root: Path, database: str) -> MakeEnv:
    @asynccontextmanager
    async def make(top: str = "") -> AsyncIterator[Env]:
        cfg = _config(root, database, top)
        settings = load_settings(cfg)
        seqs = load_all(settings.sequences, settings.mailboxes)
        async with db.connected(settings.database):
            yield Env(cfg, settings, seqs)

    return make


@pytest.fixture
def make_env(tmp_path: Path, database: str) -> MakeEnv:
    """On SQLite and on PostgreSQL."""
    return _factory(tmp_path, database)


@pytest.fixture
def sqlite_env(tmp_path: Path, sqlite_url: str) -> MakeEnv:
    """On SQLite only: for the command-line half, which reads what the daemon wrote."""
    return _factory(tmp_path, sqlite_url)


def message(
    sender: str,
    body: str,
    *,
    name: str | None = None,
    subject: str = "Re: Hello Jo",
    cc: str | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """A reply as a mail client writes it (new text above a quote), and the header facts a
    Classification of it carries."""
    msg = EmailMessage()
    msg["From"] = f"{name} <{sender}>" if name else sender
    msg["To"] = SALES
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = format_datetime(NOW)
    msg["Message-ID"] = make_msgid(domain="prospect.test")
    msg.set_content(
        f"{body}\n\nOn Tue, 1 Dec 2026, Sam Seller <{SALES}> wrote:\n> Hi Jo, a short note.\n"
    )
    facts = {"from_address": sender, "message_id": msg["Message-ID"], "subject": subject}
    return msg.as_bytes(), facts


def human(raw_facts: tuple[bytes, dict[str, Any]], **what: Any) -> tuple[Classification, bytes]:
    raw, facts = raw_facts
    return Classification(Verdict.HUMAN_REPLY, rules=("test",), **facts, **what), raw


def removal(raw_facts: tuple[bytes, dict[str, Any]], **what: Any) -> tuple[Classification, bytes]:
    raw, facts = raw_facts
    return Classification(Verdict.UNSUBSCRIBE_REQUEST, rules=("test",), **facts, **what), raw


async def test_not_now_enrolls_them_from_the_day_they_named_at_the_first_opening(
    make_env: MakeEnv,
) -> None:
    """A reply saying "try me after Easter": the sequence stops, the reply's intent and day
    are kept, and on_reply starts `later` no earlier than that day. 29 March 2027 is Easter
    Monday, a German public holiday, so the first step waits for Tuesday 30 March at 09:00,
    when the Mon-Thu window opens in Berlin."""
    async with make_env() as env:
        enr = await env.enroll(JO)
        c, raw = human(
            message(JO, "Not now, we are mid-budget. Try me after Easter.", name="Jo Park"),
            intent=Intent.NOT_NOW,
            follow_up_on=date(2027, 3, 29),
        )
        outcome = await env.reply(c, raw)
        assert outcome is not None and outcome.ended == (enr.id,)
        old = await Enrollment.get(id=enr.id)
        assert old.state == "replied"
        assert (old.reply_intent, old.follow_up_on) == ("not_now", date(2027, 3, 29))
        [new_id] = outcome.enrolled
        new = await Enrollment.get(id=new_id)
        assert (new.email, new.sequence, new.state) == (JO, "later", "active")
        assert new.variables["first_name"] == "Jo"
        assert new.next_at is not None
        assert new.next_at.astimezone(BERLIN) == datetime(2027, 3, 30, 9, 0, tzinfo=BERLIN)
        assert new.next_reasons[0] == "follow_up_on"
        assert "holiday:Easter Monday" in new.next_reasons
        [item] = await AgendaItem.all()
        assert (item.kind, item.email, item.sequence) == ("not_now", JO, "outreach")
        assert item.follow_up_on == date(2027, 3, 29)
        assert "enrolled jo@prospect.test in 'later': first step Tue 2027-03-30 09:00" in item.note
        assert item.excerpt == "Not now, we are mid-budget. Try me after Easter."


async def test_a_fault_while_acting_on_a_reply_leaves_nothing_half_done_and_the_retry_acts_once(
    make_env: MakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database fails at the last write of a not-now reply's handling (after the new
    enrolment and the agenda item were written): all of it is rolled back, so the retry (the
    daemon retries failed inbound messages) enrolls them once and writes one agenda item."""
    async with make_env() as env:
        enr = await env.enroll(JO)
        c, raw = human(
            message(JO, "Not now. Try me in March.", name="Jo Park"),
            intent=Intent.NOT_NOW,
            follow_up_on=date(2027, 3, 1),
        )
        real = queries.set_inbound_action
        calls = 0

        async def failing_once(row_id: int, action: str) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise OSError("database went away")
            await real(row_id, action)

        monkeypatch.setattr(queries, "set_inbound_action", failing_once)
        with pytest.raises(OSError, match="database went away"):
            await env.reply(c, raw)
        assert (await Enrollment.get(id=enr.id)).state == "active"
        assert await Enrollment.filter(sequence="later").count() == 0
        assert await AgendaItem.all().count() == 0
        outcome = await env.reply(c, raw)
        assert outcome is not None and len(outcome.enrolled) == 1
        assert (await Enrollment.get(id=enr.id)).state == "replied"
        assert await Enrollment.filter(sequence="later").count() == 1
        assert await AgendaItem.all().count() == 1
        assert (
            await env.reply(c, raw) is None
            or await Enrollment.filter(sequence="later").count() == 1
        )  # a replay of the same message changes nothing


async def test_without_on_reply_nothing_is_sent_after_a_reply_but_it_is_remembered(
    make_env: MakeEnv,
) -> None:
    async with make_env() as env:
        enr = await env.enroll(JO, "plain")
        c, raw = human(
            message(JO, "Try me in March."), intent=Intent.NOT_NOW, follow_up_on=date(2027, 3, 1)
        )
        outcome = await env.reply(c, raw)
        assert outcome is not None and outcome.enrolled == ()
        assert await Enrollment.filter(state="active").count() == 0
        assert (await Enrollment.get(id=enr.id)).follow_up_on == date(2027, 3, 1)
        [item] = await AgendaItem.all()
        assert item.kind == "not_now" and "no on_reply: nothing is sent" in item.note


async def test_a_not_now_without_a_date_goes_to_the_agenda_instead(make_env: MakeEnv) -> None:
    async with make_env() as env:
        await env.enroll(JO)
        c, raw = human(message(JO, "Not a good time. Maybe later."), intent=Intent.NOT_NOW)
        outcome = await env.reply(c, raw)
        assert outcome is not None and outcome.enrolled == ()
        assert await Enrollment.filter(state="active").count() == 0
        [item] = await AgendaItem.all()
        assert item.kind == "not_now" and item.follow_up_on is None
        assert "no date" in item.note


async def test_on_reply_never_overrides_suppression(make_env: MakeEnv) -> None:
    """Their whole domain was suppressed by hand after they were written to; their later
    "try me in March" is remembered, and nothing is enrolled."""
    async with make_env() as env:
        await env.enroll(JO)
        await queries.suppress("@prospect.test", "client asked", "", NOW, source="manual")
        await queries.stop_suppressed(["@prospect.test"], "suppressed by hand", NOW)
        c, raw = human(
            message(JO, "Try me in March."), intent=Intent.NOT_NOW, follow_up_on=date(2027, 3, 1)
        )
        outcome = await env.reply(c, raw)
        assert outcome is not None and outcome.enrolled == ()
        assert await Enrollment.filter(state="active").count() == 0
        [item] = await AgendaItem.all()
        assert "suppressed, not enrolled" in item.note


async def test_referrals_enroll_named_colleagues_and_leave_the_rest_to_the_agenda(
    make_env: MakeEnv,
) -> None:
    """Ann has a display name: enrolled in `intro` with first_name Ann and referred_by the
    replier's name. Pat has none and `intro` needs a first name: not enrolled, on the
    agenda. Bob is suppressed and Carl was written to before: both left alone."""
    bob, carl = "bob@prospect.test", "carl@prospect.test"
    async with make_env() as env:
        jo = await env.enroll(JO)
        await queries.suppress(bob, "unsubscribe", "earlier", NOW)
        carl_before = await env.enroll(carl, "plain")
        await queries.finish(carl_before.id, State.COMPLETED, "break-up sent", NOW)
        c, raw = human(
            message(JO, "Please talk to Ann, Pat, Bob or Carl instead.", name="Jo Park"),
            intent=Intent.REFERRAL,
            referral=(
                Referral(ANN, "Ann Lee"),
                Referral(PAT, None),
                Referral(bob, "Bob Roe"),
                Referral(carl, "Carl Doe"),
            ),
        )
        outcome = await env.reply(c, raw)
        assert outcome is not None
        assert (await Enrollment.get(id=jo.id)).state == "replied"
        [ann_id] = outcome.enrolled
        ann = await Enrollment.get(id=ann_id)
        assert (ann.email, ann.sequence, ann.state) == (ANN, "intro", "active")
        assert ann.variables["first_name"] == "Ann"
        assert ann.variables["referred_by"] == "Jo Park"
        assert await Enrollment.filter(email__in=[PAT, bob], state="active").count() == 0
        assert await Enrollment.filter(email=carl, state="active").count() == 0
        kept = (await Enrollment.get(id=jo.id)).referral
        assert kept[0] == {"address": ANN, "name": "Ann Lee"} and len(kept) == 4
        [item] = await AgendaItem.all()
        assert item.kind == "referral" and item.referral == kept
        assert "enrolled ann@prospect.test in 'intro'" in item.note
        assert "pat@prospect.test: no name given, and 'intro' needs first_name" in item.note
        assert "bob@prospect.test: suppressed, not enrolled" in item.note
        assert "carl@prospect.test: completed 'plain'" in item.note


@pytest.mark.parametrize("verdict", [Verdict.UNSUBSCRIBE_REQUEST, Verdict.HUMAN_REPLY])
async def test_a_removal_request_for_someone_else_suppresses_them_not_the_sender(
    make_env: MakeEnv, verdict: Verdict
) -> None:
    """Jo asks "please unsubscribe my colleague Pat and add me instead": Pat is suppressed
    and Pat's sequence stops; Jo is not suppressed, and Jo's own sequence stops as at any
    reply. The same when the reading is a human reply that names whom to remove."""
    async with make_env() as env:
        jo = await env.enroll(JO)
        pat = await env.enroll(PAT)
        c, raw = removal(
            message(JO, "Please unsubscribe my colleague Pat and add me instead."),
            suppress=(PAT,),
            intent=Intent.INTERESTED,
        )
        outcome = await env.reply(replace(c, verdict=verdict), raw)
        assert outcome is not None
        assert await Suppression.filter(email=PAT).exists()
        assert not await Suppression.filter(email=JO).exists()
        assert (await Enrollment.get(id=pat.id)).state == "unsubscribed"
        assert (await Enrollment.get(id=jo.id)).state == "replied"
        assert (await Enrollment.get(id=jo.id)).reply_intent == "interested"
        [item] = await AgendaItem.all()
        assert (item.kind, item.email) == ("interested", JO)


async def test_unsubscribe_my_colleague_without_an_address_never_suppresses_the_asker(
    make_env: MakeEnv,
) -> None:
    """Jo answers the thread we wrote to Pat: "please unsubscribe my colleague and add me
    instead" gives no address, so the colleague is Pat, whom the thread was written to: Pat
    is suppressed, Jo is not. When Jo says it in Jo's own thread, nobody can be named with
    certainty: Jo's sequence stops as at any reply and nobody is suppressed."""
    async with make_env() as env:
        pat = await env.enroll(PAT)
        jo = await env.enroll(JO)
        await SentMessage.create(
            enrollment=pat,
            step=1,
            email=PAT,
            mailbox="sales",
            message_id="<p1@vendor.test>",
            subject="Hello Pat",
            status="sent",
            created_at=NOW,
            sent_at=NOW,
        )
        rules = ("unsubscribe_text", OTHERS_NO_ADDRESS)
        raw, facts = message(JO, "Could you unsubscribe my colleague and add me instead?")
        c = Classification(
            Verdict.UNSUBSCRIBE_REQUEST,
            rules=rules,
            related_message_ids=("<p1@vendor.test>",),
            **facts,
        )
        await env.reply(c, raw)
        assert [s.email for s in await Suppression.all()] == [PAT]
        assert (await Enrollment.get(id=pat.id)).state == "unsubscribed"
        assert (await Enrollment.get(id=jo.id)).state == "replied"

        ann = await env.enroll(ANN)
        raw, facts = message(ANN, "Please take my colleague off your list.")
        await env.reply(Classification(Verdict.UNSUBSCRIBE_REQUEST, rules=rules, **facts), raw)
        assert not await Suppression.filter(email=ANN).exists()
        assert (await Enrollment.get(id=ann.id)).state == "replied"


async def test_a_removal_request_naming_nobody_suppresses_the_sender(make_env: MakeEnv) -> None:
    async with make_env() as env:
        jo = await env.enroll(JO)
        c, raw = removal(message(JO, "Remove"))
        await env.reply(c, raw)
        assert await Suppression.filter(email=JO).exists()
        assert (await Enrollment.get(id=jo.id)).state == "unsubscribed"
        assert await AgendaItem.all().count() == 0


async def test_our_own_address_is_never_suppressed_whatever_a_request_names(
    make_env: MakeEnv,
) -> None:
    async with make_env() as env:
        await env.enroll(JO)
        c, raw = removal(message(JO, "Stop emailing me."), suppress=(SALES.upper(), JO))
        await env.reply(c, raw)
        assert [s.email for s in await Suppression.all()] == [JO]


async def test_an_erasure_request_as_a_new_message_is_matched_by_sender_and_on_the_agenda(
    make_env: MakeEnv,
) -> None:
    """A GDPR request with no thread headers and a new subject: matched by the sender's
    address, the sequence stops, the address is suppressed, and `agenda` shows it."""
    async with make_env() as env:
        jo = await env.enroll(JO)
        c, raw = removal(
            message(
                JO,
                "Under Article 17 GDPR I request the erasure of my personal data.",
                subject="Data erasure request",
            ),
            suppress=(JO,),
            erasure=True,
        )
        outcome = await env.reply(c, raw)
        assert outcome is not None and outcome.enrollment_id == jo.id
        assert (await Enrollment.get(id=jo.id)).state == "unsubscribed"
        assert await Suppression.filter(email=JO).exists()
        [item] = await AgendaItem.all()
        assert (item.kind, item.email, item.sequence) == ("erasure", JO, "outreach")
        assert "sequencer forget jo@prospect.test" in item.note
        assert item.excerpt.startswith("Under Article 17 GDPR")


async def test_a_strangers_request_to_remove_an_enrolled_colleague_stops_them(
    make_env: MakeEnv,
) -> None:
    stranger = "it-admin@prospect.test"
    async with make_env() as env:
        pat = await env.enroll(PAT)
        c, raw = removal(
            message(stranger, "Pat has left; remove pat@prospect.test and erase the data."),
            suppress=(PAT,),
            erasure=True,
        )
        outcome = await env.reply(c, raw)
        assert outcome is not None and outcome.enrollment_id is None
        assert (await Enrollment.get(id=pat.id)).state == "unsubscribed"
        assert [s.email for s in await Suppression.all()] == [PAT]
        [item] = await AgendaItem.all()
        assert (item.kind, item.email) == ("erasure", PAT)


async def test_stop_on_reply_domain_stops_the_company_but_never_a_free_mail_domain(
    make_env: MakeEnv,
) -> None:
    bob, carl = "bob@gmail.com", "carl@gmail.com"
    async with make_env(top="stop_on_reply: domain") as env:
        jo, ann = await env.enroll(JO), await env.enroll(ANN)
        other = await env.enroll("sam@elsewhere.test")
        b, c_ = await env.enroll(bob), await env.enroll(carl)
        c, raw = human(message(JO, "Thanks, we'll pass for now."), intent=Intent.DECLINE)
        outcome = await env.reply(c, raw)
        assert outcome is not None and set(outcome.ended) == {jo.id, ann.id}
        assert (await Enrollment.get(id=ann.id)).state == "stopped"
        assert (await Enrollment.get(id=other.id)).state == "active"
        c, raw = human(message(bob, "Sounds good"), intent=Intent.INTERESTED)
        await env.reply(c, raw)
        assert (await Enrollment.get(id=b.id)).state == "replied"
        assert (await Enrollment.get(id=c_.id)).state == "active"


async def test_by_default_a_reply_stops_only_that_contact(make_env: MakeEnv) -> None:
    async with make_env() as env:
        await env.enroll(JO)
        ann = await env.enroll(ANN)
        c, raw = human(message(JO, "No thanks."), intent=Intent.DECLINE)
        await env.reply(c, raw)
        assert (await Enrollment.get(id=ann.id)).state == "active"
        assert await AgendaItem.all().count() == 0  # a decline needs nobody


async def test_forget_erases_them_and_a_hash_keeps_them_suppressed(make_env: MakeEnv) -> None:
    async with make_env() as env:
        jo = await env.enroll(JO)
        await queries.record_pending(jo, 1, make_msgid(domain="vendor.test"), "Hello Jo", NOW)
        await SentMessage.filter(enrollment_id=jo.id).update(data=b"the bytes we sent")
        c, raw = removal(message(JO, "Erase my data."), suppress=(JO,), erasure=True)
        await env.reply(c, raw)
        # Ann was referred by Jo: her sequence names Jo, so it stops when Jo is forgotten.
        ann_id = (await env.enroll(ANN, "intro", referred_by="Jo", referred_by_email=JO)).id
        done = await queries.forget(JO, NOW)
        assert (done.enrollments, done.sent_messages, done.inbound_messages) == (1, 1, 1)
        assert (done.agenda_items, done.suppressions) == (1, 1)
        assert await Enrollment.filter(email=JO).count() == 0
        assert await SentMessage.filter(email=JO).count() == 0
        assert await InboundMessage.filter(from_address=JO).count() == 0
        assert await AgendaItem.all().count() == 0
        ann = await Enrollment.get(id=ann_id)
        assert ann.state == "stopped" and JO not in json.dumps(ann.variables)
        [entry] = await Suppression.all()
        assert entry.email == suppression.hashed(JO) and entry.source == "forget"
        assert JO not in entry.detail
        # Suppressed still, for enrolment and for the check before each send.
        assert (await queries.suppressed([JO.upper()])).get(JO.upper()) == entry
        seq = env.sequences["outreach"]
        again = await enrolment.enroll(
            env.etiquette, seq, [contacts.contact(seq, JO, {"first_name": "Jo"})], NOW, again=True
        )
        assert again.created == [] and JO in again.blocked


async def _cli_json(cfg: Path, *args: str) -> Any:
    res = await asyncio.to_thread(cli, cfg, *args)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


async def test_agenda_lists_what_needs_the_salesperson_newest_first(
    sqlite_env: MakeEnv,
) -> None:
    """`agenda --json` keys, order, the 14-day horizon for not-now dates (today is the real
    date: the items are placed around it), `--all`, the 80-column text, and `done`."""
    today = datetime.now(UTC)
    async with sqlite_env() as env:
        for who in (JO, ANN, PAT):
            await env.enroll(who)
        c, raw = human(
            message(JO, "Yes, let's talk Thursday at 10 [bold]?"), intent=Intent.INTERESTED
        )
        await env.reply(c, raw, at=today - timedelta(days=400))
        c, raw = human(
            message(ANN, "Try me in a few years."),
            intent=Intent.NOT_NOW,
            follow_up_on=today.date() + timedelta(days=3 * 365),
        )
        await env.reply(c, raw, at=today - timedelta(days=500))
        c, raw = human(
            message(PAT, "Ask Dana, she owns this. " + "Long words " * 60),
            intent=Intent.REFERRAL,
            referral=(Referral("dana@prospect.test", "Dana Ray"),),
        )
        await env.reply(c, raw, at=today)
    shown = await _cli_json(env.cfg, "agenda", "--json")
    assert [(i["kind"], i["email"]) for i in shown] == [("referral", PAT), ("interested", JO)]
    assert all(
        list(i)
        == [
            "id",
            "kind",
            "email",
            "sequence",
            "received_at",
            "follow_up_on",
            "referral",
            "excerpt",
        ]
        for i in shown
    )
    assert shown[0]["referral"] == [{"address": "dana@prospect.test", "name": "Dana Ray"}]
    assert len(shown[0]["excerpt"]) <= 300 and shown[0]["excerpt"].startswith("Ask Dana")
    later = await _cli_json(env.cfg, "agenda", "--json", "--all")
    assert [i["kind"] for i in later] == ["referral", "interested", "not_now"]
    text = await asyncio.to_thread(cli, env.cfg, "agenda")
    assert text.returncode == 0, text.stderr
    assert "interested" in text.stdout and "[bold]?" in text.stdout
    assert max(len(line) for line in text.stdout.splitlines()) <= 80
    done = await asyncio.to_thread(cli, env.cfg, "agenda", "done", str(shown[0]["id"]))
    assert done.returncode == 0 and f"cleared {shown[0]['id']}: referral" in done.stdout
    assert [i["kind"] for i in await _cli_json(env.cfg, "agenda", "--json")] == ["interested"]
    again = await asyncio.to_thread(cli, env.cfg, "agenda", "done", str(shown[0]["id"]))
    assert again.returncode == 2 and f"no agenda item {shown[0]['id']}" in again.stderr


async def test_status_json_shows_what_the_reply_asked_for(
    sqlite_env: MakeEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # the text check reads one unwrapped line
    async with sqlite_env() as env:
        await env.enroll(JO)
        c, raw = human(
            message(JO, "Talk to Ann."), intent=Intent.REFERRAL, referral=(Referral(ANN, None),)
        )
        await env.reply(c, raw)
    [row] = [
        r for r in await _cli_json(env.cfg, "status", JO, "--json") if r["sequence"] == "outreach"
    ]
    assert row["state"] == "replied"
    assert row["reply_intent"] == "referral" and row["follow_up_on"] is None
    assert row["referral"] == [{"address": ANN, "name": None}]
    text = await asyncio.to_thread(cli, env.cfg, "status", JO)
    assert "intent referral" in text.stdout and "referral: ann@prospect.test" in text.stdout


async def test_forget_asks_first_then_erases_in_one_go_and_says_what(sqlite_env: MakeEnv) -> None:
    async with sqlite_env() as env:
        await env.enroll(JO)
        c, raw = human(message(JO, "Sounds great"), intent=Intent.INTERESTED)
        await env.reply(c, raw)
    import subprocess
    import sys

    base = [sys.executable, "-m", "sequencer", "forget", JO, "--config", str(env.cfg)]
    refused = await asyncio.to_thread(
        subprocess.run, base, input="n\n", capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1 and "nothing erased" in refused.stderr
    assert (await _cli_json(env.cfg, "status", "--json"))[0]["email"] == JO
    res = await asyncio.to_thread(cli, env.cfg, "forget", JO, "--yes")
    assert res.returncode == 0, res.stderr
    assert "erased 1 enrollment(s), 0 sent message(s), 1 inbound message(s), 1 agenda" in res.stdout
    assert await _cli_json(env.cfg, "status", "--json") == []
    [entry] = await _cli_json(env.cfg, "suppress", "list", "--json")
    assert entry["hashed"] is True and entry["email"] == suppression.hashed(JO)
    listed = await asyncio.to_thread(cli, env.cfg, "suppress", "list")
    assert "(hashed: forgotten)" in listed.stdout and JO not in listed.stdout
    blocked = await asyncio.to_thread(
        cli, env.cfg, "enroll", "outreach", JO, "--var", "first_name=Jo"
    )
    assert blocked.returncode == 2 and "asked to be forgotten" in blocked.stderr


async def test_check_reports_an_on_reply_target_that_does_not_exist(sqlite_env: MakeEnv) -> None:
    async with sqlite_env() as env:
        pass
    (env.cfg.parent / "sequences" / "later.yaml").unlink()
    res = await asyncio.to_thread(cli, env.cfg, "check")
    assert res.returncode == 2
    assert "outreach.yaml:3: on_reply.not_now.enroll: no sequence 'later'" in res.stderr


def test_classify_reads_fiscal_year_start_from_config_and_shows_what_a_reply_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`classify --config F` gives the classifier the fiscal year (here through a wrapper of
    the real classifier that also adds an intent, as the intent rules will), and the text
    output names the intent, the day, the referral and whom to remove; a bad
    fiscal_year_start is an error with file and line."""
    from typer.testing import CliRunner

    import sequencer.classify
    from sequencer.cli import app

    real = sequencer.classify.classify
    given: list[tuple[int, int]] = []

    def reading(raw: bytes, *, fiscal_year_start: tuple[int, int] = (1, 1)) -> Classification:
        given.append(fiscal_year_start)
        return replace(
            real(raw, fiscal_year_start=fiscal_year_start),
            intent=Intent.NOT_NOW,
            follow_up_on=date(2027, 4, 1),
            referral=(Referral(ANN, "Ann [Lee]"),),
            suppress=(PAT,),
        )

    monkeypatch.setattr(sequencer.classify, "classify", reading)
    raw, _ = message(JO, "Try me in Q1 of our next fiscal year.")
    eml = tmp_path / "reply.eml"
    eml.write_bytes(raw)
    cfg = tmp_path / "sequencer.yaml"
    cfg.write_text('fiscal_year_start: "04-01"\n')
    res = CliRunner().invoke(app, ["classify", str(eml), "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert given == [(4, 1)]
    assert "intent=not_now follow_up_on=2027-04-01" in res.output
    assert "referral=Ann [Lee] <ann@prospect.test> suppress=pat@prospect.test" in res.output
    res = CliRunner().invoke(app, ["classify", str(eml)])
    assert given[-1] == (1, 1)  # no --config: calendar quarters, no settings file read
    cfg.write_text("timezone: UTC\nfiscal_year_start: 13-01\n")
    res = CliRunner().invoke(app, ["classify", str(eml), "--config", str(cfg)])
    assert res.exit_code == 2
    assert f"{cfg}:2: fiscal_year_start: '13-01' is not a month and day" in res.output
