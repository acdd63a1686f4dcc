"""The SMTP edge (aiosmtplib). Owns one reusable connection per mailbox and the one place
where SMTP failures are mapped to what they mean for us:

- 5xx on RCPT: the address is bad (RecipientRefused, permanent);
- 5xx on DATA: this message was refused (permanent for this step);
- 535 and friends: wrong credentials (AuthenticationError: a mailbox problem, retried);
- 4xx, timeouts, refused or dropped connections: transient, retried with backoff.
"""

from __future__ import annotations

import asyncio

import aiosmtplib

from sequencer.config import Mailbox
from sequencer.errors import AuthenticationError, DeliveryError, RecipientRefused


class Sender:
    """Sends for one mailbox, one message at a time, over a connection kept open."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self._smtp: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()

    def _where(self) -> str:
        s = self.mailbox.smtp
        return f"SMTP {s.host}:{s.port} (mailbox '{self.mailbox.name}')"

    async def _connect(self) -> aiosmtplib.SMTP:
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
        s = self.mailbox.smtp
        password = s.password(f"mailboxes.{self.mailbox.name}.smtp")
        smtp = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",
            timeout=s.timeout,
            username=s.username if password is not None else None,
            password=password,
        )
        try:
            await smtp.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise AuthenticationError(
                f"{self._where()}: login refused for user '{s.username}' ({exc.code}): "
                "check the username and the password source",
                transient=True,
                code=exc.code,
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"{self._where()}: server refused the session: {exc.code} {exc.message}",
                transient=True,
                code=exc.code,
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{self._where()}: cannot connect: {exc}", transient=True) from None
        self._smtp = smtp
        return smtp

    async def send(self, to: str, data: bytes) -> str:
        """Send one message; returns the server's reply. Raises DeliveryError."""
        async with self._lock:
            smtp = await self._connect()
            try:
                _, reply = await smtp.sendmail(self.mailbox.address, [to], data)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                refusal = exc.recipients[0]
                await self._drop()
                cls = RecipientRefused if refusal.code >= 500 else DeliveryError
                raise cls(
                    f"{self._where()}: recipient {to} refused: {refusal.code} {refusal.message}",
                    transient=refusal.code < 500,
                    code=refusal.code,
                ) from None
            except aiosmtplib.SMTPDataError as exc:
                await self._drop()
                raise DeliveryError(
                    f"{self._where()}: message refused: {exc.code} {exc.message}",
                    transient=exc.code < 500,
                    code=exc.code,
                ) from None
            except aiosmtplib.SMTPResponseException as exc:
                await self._drop()
                raise DeliveryError(
                    f"{self._where()}: {exc.code} {exc.message}", transient=True, code=exc.code
                ) from None
            except (aiosmtplib.SMTPException, OSError) as exc:
                await self._drop()
                raise DeliveryError(
                    f"{self._where()}: connection failed during send: {exc}", transient=True
                ) from None
            return reply

    async def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None and smtp.is_connected:
            smtp.close()

    async def close(self) -> None:
        async with self._lock:
            smtp, self._smtp = self._smtp, None
            if smtp is not None and smtp.is_connected:
                try:
                    await asyncio.wait_for(smtp.quit(), timeout=2)
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    smtp.close()
