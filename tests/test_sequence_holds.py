"""A sequence file renamed, deleted or broken fails nobody: its contacts are held until it
is back (on real servers: aiosmtpd, pymap, SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from conftest import ImapServer
from world import status, world

from sequencer.devservers import SmtpSink
from sequencer.sequences import load_each
from sequencer.states import Hold

pytestmark = pytest.mark.e2e
JO = "jo@prospect.test"


async def test_a_renamed_sequence_holds_its_contacts_until_it_is_back(
    tmp_path: Path,
    smtp: SmtpSink,
    pymap: ImapServer,
    database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with world(tmp_path, smtp, pymap, database, monkeypatch) as w:
        w.daemon._reload = lambda: load_each(w.settings.sequences, w.settings.mailboxes)
        await w.enroll(JO)
        assert await w.tick() == 1
        source = w.settings.sequences / "follow-up.yaml"
        renamed = source.with_name("follow-up-old.yaml")
        source.rename(renamed)
        await w.daemon.reload()
        assert await w.tick(timedelta(days=2)) == 0
        enr = await w.enrollment(JO)
        assert (enr.state, enr.hold) == ("active", Hold.SEQUENCE_MISSING)
        row = (await status(tmp_path / "sequencer.yaml", JO))[0]
        assert (row["state"], row["hold"]) == ("active", "sequence_missing")
        assert await w.tick(timedelta(days=3)) == 0  # still nothing, still not failed
        renamed.rename(source)
        await w.daemon.reload()
        assert await w.tick(timedelta(minutes=1)) == 1
        enr = await w.enrollment(JO)
        assert (enr.state, enr.hold, enr.steps_sent) == ("active", None, 2)
        assert len(w.sent_to(JO)) == 2
