"""Pure: the one line `systemctl status sequencer` shows (systemd's STATUS=), e.g.
"42 active · next send 09:00 Europe/London (sales) · held: jo (IMAP login refused)".

What a person checking on the service wants at a glance: is it working on anyone, when does
the next email go, and is any mailbox stuck (and why). Times are the sending mailbox's local
time, as its owner thinks of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from sequencer.holds import SHORT
from sequencer.states import Hold

SEPARATOR = " · "


def when(at: datetime, now: datetime, zone: ZoneInfo) -> str:
    """'now', '09:00 Europe/London' today, or 'Tue 8 Dec 09:00 Europe/London' later."""
    if at <= now:
        return "now"
    local = at.astimezone(zone)
    clock = f"{local:%H:%M} {zone.key}"
    if local.date() == now.astimezone(zone).date():
        return clock
    return f"{local:%a} {local.day} {local:%b} {clock}"


def status_line(
    *,
    active: int,
    next_sends: Mapping[str, datetime],
    held: Mapping[str, Hold],
    zones: Mapping[str, ZoneInfo],
    now: datetime,
) -> str:
    """`next_sends` is each mailbox's earliest planned send (pacing already applied); held
    mailboxes send nothing, so their times are left out of "next send"."""
    parts = [f"{active} active"]
    sending = {box: at for box, at in next_sends.items() if box not in held}
    if sending:
        box = min(sending, key=lambda b: (sending[b], b))
        parts.append(f"next send {when(sending[box], now, zones[box])} ({box})")
    elif active:
        parts.append("nothing to send")
    if held:
        parts.append("held: " + ", ".join(f"{box} ({SHORT[held[box]]})" for box in sorted(held)))
    return SEPARATOR.join(parts)
