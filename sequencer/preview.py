"""Pure preview: every step of a sequence as one contact would receive it, and when.

Owns what `sequencer preview` tells a salesperson before anything is sent: each step rendered,
its exact send time in the contact's and the sender's zones, and why it goes then rather than
earlier, in words. The times come from the same `etiquette.timeline` the enrolment uses, so the
preview cannot drift from what the daemon will do (assuming no reply, and a mailbox with room
under its daily limit).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sequencer import render
from sequencer.errors import EnrollError, SequenceError, TemplateError
from sequencer.etiquette import Etiquette, Promise, check_promises, timeline
from sequencer.schedule import Place, Window
from sequencer.sequences import Sequence


@dataclass(frozen=True)
class PreviewStep:
    step: int  # 1-based
    at: datetime  # UTC
    contact_zone: ZoneInfo
    sender_zone: ZoneInfo
    wait: str
    subject: str
    body: str
    breakup: bool
    reasons: tuple[str, ...]
    promised: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "send_at": self.at.astimezone(UTC).isoformat(),
            "local_send_at": self.at.astimezone(self.contact_zone).isoformat(),
            "sender_send_at": self.at.astimezone(self.sender_zone).isoformat(),
            "wait": self.wait,
            "subject": self.subject,
            "body": self.body,
            "breakup": self.breakup,
            "promised": self.promised,
            "reasons": list(self.reasons),
        }


def preview(
    etiquette: Etiquette,
    seq: Sequence,
    values: Mapping[str, str],
    now: datetime,
    promises: Mapping[int, Promise] | None = None,
) -> list[PreviewStep]:
    """Render and time every step for a contact enrolled at `now`. Raises TemplateError
    (naming the step) when a template cannot render with these values, and EnrollError for
    promises `enroll` would refuse."""
    box = etiquette.settings.mailboxes.get(seq.mailbox)
    sender = {"name": box.display_name, "address": box.address} if box else {}
    contact_zone = etiquette.place(values).zone
    sender_zone = etiquette.mailbox_zone(seq.mailbox)
    out = []
    first_subject = ""
    try:
        planned = timeline(etiquette, seq, values, now, promises=promises)
    except ValueError as exc:  # a window that never opens: `check` names the cause
        raise SequenceError([f"{seq.path}: cannot plan the steps: {exc}"]) from None
    problems = check_promises(seq, promises or {}, now, planned)
    if problems:
        raise EnrollError(problems)  # the promise enroll would refuse, refused here too
    for item in planned:
        step = seq.steps[item.step - 1]
        try:
            if item.step == 1:
                first_subject = render.render(step.subject or "", values, sender).strip()
                subject = first_subject
            else:
                subject = render.reply_subject(first_subject)
            body = render.render(step.body, values, sender)
        except TemplateError as exc:
            raise TemplateError(f"{seq.path}: step {item.step}: {exc}") from None
        out.append(
            PreviewStep(
                step=item.step,
                at=item.planned.at.astimezone(UTC),
                contact_zone=contact_zone,
                sender_zone=sender_zone,
                wait=str(step.wait),
                subject=subject,
                body=body,
                breakup=step.breakup,
                reasons=item.planned.reasons,
                promised=item.promised,
            )
        )
    return out


def explain(
    reason: str, *, place: Place, window: Window | None, min_gap: timedelta, zone_name: str
) -> str:
    """One reason code in words a salesperson reads at a glance."""
    if reason.startswith("holiday:"):
        where = (place.country or "") + (f"-{place.subdivision}" if place.subdivision else "")
        return f"skips {reason.removeprefix('holiday:')} (a public holiday in {where})"
    words = {
        "window": f"moved into the sending window ({window}, {zone_name} time)",
        "weekend": "skips the weekend",
        "min_gap": f"keeps at least {_span(min_gap)} after the previous email to this address",
        "promise": "promised: sent exactly then; no window, holiday, gap or pace rule moves it",
        "promise_missed": "its promise had passed when its turn came: planned by the rules",
        "out_of_office": "waits for the contact's return from leave",
        "follow_up_on": "waits for the day their reply asked to be contacted again",
    }
    return words.get(reason, reason)


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def local(at: datetime, zone: ZoneInfo) -> str:
    """`Tue 2026-12-01 09:00 EST`: the weekday matters to a reader more than the offset."""
    wall = at.astimezone(zone)
    return f"{wall:%a %Y-%m-%d %H:%M} {wall.tzname()}"
