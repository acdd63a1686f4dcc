"""The Sent folder edge (aioimaplib): copies of what we send, and looking sends up.

Owns a second IMAP connection per mailbox (the watcher's is busy idling on the inbox): finding
the Sent folder (configured `imap.sent_folder`, else the one marked SPECIAL-USE `\\Sent`, else
a folder with a usual name, else a new `Sent`), appending a copy of each sent message so the
salesperson's own mail client shows the whole thread, and answering "is this Message-ID in
Sent?", which settles an uncertain send where the server files submissions itself (Gmail,
Microsoft 365), and keeps a copy from being appended twice after a crash.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime

import aioimaplib
import structlog

from sequencer.clock import SystemClock
from sequencer.config import Mailbox
from sequencer.errors import InboxError
from sequencer.inbox import open_imap, quietly, response_text, search_uids
from sequencer.oauth import TokenSource

log = structlog.get_logger("sequencer.sentbox")

_LIST_LINE = re.compile(rb'^\((?P<attrs>[^)]*)\) (?:"[^"]*"|NIL) (?P<name>.+)$')
_USUAL_NAMES = ("Sent", "Sent Items", "Sent Messages", "Sent Mail", "INBOX.Sent", "INBOX/Sent")


class SentFolder:
    def __init__(self, mailbox: Mailbox, tokens: TokenSource | None = None) -> None:
        self.mailbox = mailbox
        if tokens is None and mailbox.imap.auth == "oauth2":
            tokens = TokenSource(mailbox, SystemClock())
        self.tokens = tokens
        self.folder: str | None = mailbox.imap.sent_folder
        self._imap: aioimaplib.IMAP4 | None = None
        self._lost = False
        self._lock = asyncio.Lock()

    def _connection_lost(self, exc: Exception | None) -> None:
        self._lost = True  # reconnect before the next command, never wait out a timeout

    def _where(self) -> str:
        i = self.mailbox.imap
        return f"IMAP {i.host}:{i.port} (mailbox '{self.mailbox.name}', Sent folder)"

    async def _connect(self) -> aioimaplib.IMAP4:
        if self._imap is not None and not self._lost:
            return self._imap
        await self._drop()
        self._lost = False
        imap = await open_imap(self.mailbox, self._where(), self._connection_lost, self.tokens)
        try:
            if self.folder is None:
                self.folder = await self._find(imap)
        except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
            await quietly(imap.logout())
            raise InboxError(f"{self._where()}: {exc or type(exc).__name__}") from None
        self._imap = imap
        return imap

    async def _find(self, imap: aioimaplib.IMAP4) -> str:
        """The SPECIAL-USE \\Sent folder, else one with a usual name, else a new `Sent`."""
        resp = await imap.list('""', "*")
        names: list[str] = []
        for line in resp.lines:
            m = _LIST_LINE.match(bytes(line)) if isinstance(line, (bytes, bytearray)) else None
            if m is None:
                continue
            name = _unquote(m.group("name").decode(errors="replace"))
            if b"\\sent" in m.group("attrs").lower().split():
                return name
            names.append(name)
        for usual in _USUAL_NAMES:
            for name in names:
                if name.lower() == usual.lower():
                    return name
        resp = await imap.create(aioimaplib.quoted("Sent"))
        if resp.result != "OK" and b"ALREADYEXISTS" not in b" ".join(
            bytes(x) for x in resp.lines if isinstance(x, (bytes, bytearray))
        ):
            raise InboxError(
                f"{self._where()}: cannot create a Sent folder: {response_text(resp.lines)}"
            )
        log.info("sentbox.created", mailbox=self.mailbox.name, folder="Sent")
        return "Sent"

    async def append(self, data: bytes, date: datetime) -> None:
        """Append a copy, marked read (the salesperson wrote it)."""
        async with self._lock:
            imap = await self._connect()
            assert self.folder is not None
            try:
                resp = await imap.append(
                    data, mailbox=aioimaplib.quoted(self.folder), flags="(\\Seen)", date=date
                )
            except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
                await self._drop()
                raise InboxError(f"{self._where()}: append failed: {exc}") from None
            if resp.result != "OK":
                await self._drop()
                raise InboxError(f"{self._where()}: append refused: {response_text(resp.lines)}")

    async def contains(self, message_id: str) -> bool:
        """Whether a message with this Message-ID is in the Sent folder now."""
        async with self._lock:
            imap = await self._connect()
            assert self.folder is not None
            try:
                # SELECT, not EXAMINE: aioimaplib allows SEARCH only after SELECT. We only
                # search and append; nothing is flagged, moved or deleted.
                resp = await imap.select(aioimaplib.quoted(self.folder))
                if resp.result != "OK":
                    raise InboxError(f"{self._where()}: cannot open: {response_text(resp.lines)}")
                resp = await imap.uid_search("HEADER", "Message-ID", aioimaplib.quoted(message_id))
            except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
                await self._drop()
                raise InboxError(f"{self._where()}: search failed: {exc}") from None
            if resp.result != "OK":
                await self._drop()
                raise InboxError(f"{self._where()}: search refused: {response_text(resp.lines)}")
            return bool(search_uids(resp.lines))

    async def _drop(self) -> None:
        imap, self._imap = self._imap, None
        if imap is not None:
            await quietly(imap.logout(), seconds=1)

    async def close(self) -> None:
        async with self._lock:
            await self._drop()


def _unquote(name: str) -> str:
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        return name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return name
