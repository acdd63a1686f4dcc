"""The SMTP edge (aiosmtplib). Owns one reusable connection per mailbox and reports where an
attempt stopped and what the server said (`delivery.Failure`); delivery.py decides what that
means.

A message is sent with separate MAIL, RCPT and DATA commands so that the moment DATA starts
can be recorded first: a failure before it leaves the step safely re-sendable, and only a
DATA exchange whose answer never came is uncertain. A message larger than the server's
SIZE is not offered at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiosmtplib

from sequencer import tls
from sequencer.clock import SystemClock
from sequencer.config import Mailbox
from sequencer.delivery import Failure, Stage
from sequencer.errors import ConfigError, DeliveryError
from sequencer.oauth import TokenError, TokenSource, TokenUnavailable


class SendFailed(DeliveryError):
    """One attempt failed; `failure` says where and what the server answered."""

    def __init__(self, message: str, failure: Failure) -> None:
        super().__init__(message, transient=failure.code is None or failure.code < 500)
        self.code = failure.code
        self.failure = failure


class Withdrawn(Exception):
    """Raised by `before_data` when the message must not go after all (a reply came, the
    address was written to, the pace is used up): the transaction is reset, nothing sent."""


class Sender:
    """Sends for one mailbox, one message at a time, over a connection kept open."""

    def __init__(self, mailbox: Mailbox, tokens: TokenSource | None = None) -> None:
        self.mailbox = mailbox
        if tokens is None and mailbox.smtp.auth == "oauth2":
            tokens = TokenSource(mailbox, SystemClock())
        self.tokens = tokens
        self._smtp: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()

    def _where(self) -> str:
        s = self.mailbox.smtp
        return f"SMTP {s.host}:{s.port} (mailbox '{self.mailbox.name}')"

    def _fail(self, stage: Stage, code: int | None, text: str, what: str) -> SendFailed:
        return SendFailed(f"{self._where()}: {what}", Failure(stage, code, text))

    async def _connect(self) -> aiosmtplib.SMTP:
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
        s = self.mailbox.smtp
        oauth = self.tokens if s.auth == "oauth2" else None
        password = None if oauth else s.password(self._setting)
        # Before connecting: a revoked grant never knocks on the server's door.
        token = await self._token(oauth.token()) if oauth else None
        try:
            context = tls.context(s, self._setting) if s.security != "none" else None
            smtp = aiosmtplib.SMTP(**self._session(context))
        except ConfigError as exc:
            raise self._fail(Stage.CONNECT, None, str(exc), "; ".join(exc.problems)) from None
        try:
            await smtp.connect()
            if not smtp.esmtp_extensions:
                await smtp.ehlo()  # now: SIZE and AUTH are read from its answer
            if oauth is not None and token is not None:
                await self._xoauth2(smtp, oauth, token)
            elif password is not None and s.username:
                await _log_in(smtp, s.username, password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            smtp.close()
            source = "the oauth2: block and its grant" if oauth else "the password source"
            raise self._fail(
                Stage.AUTH,
                exc.code,
                exc.message,
                f"login refused for user '{s.username or self.mailbox.address}' "
                f"({exc.code} {exc.message}): check the username and {source}",
            ) from None
        except SendFailed:
            smtp.close()
            raise
        except aiosmtplib.SMTPResponseException as exc:
            smtp.close()
            raise self._fail(
                Stage.CONNECT,
                exc.code,
                exc.message,
                f"server refused the session: {exc.code} {exc.message}",
            ) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            cert = tls.certificate_error(exc)
            what = await self._explain(cert) if cert else f"cannot connect: {exc}"
            raise self._fail(Stage.CONNECT, None, str(exc), what) from None
        self._smtp = smtp
        return smtp

    @property
    def _setting(self) -> str:
        return f"mailboxes.{self.mailbox.name}.smtp"

    def _session(self, context: ssl.SSLContext | None) -> dict[str, Any]:
        """aiosmtplib's connection options; the certificate is verified for both kinds of
        TLS (aiosmtplib's `tls_context` serves implicit TLS and STARTTLS alike)."""
        s = self.mailbox.smtp
        return {
            "hostname": s.host,
            "port": s.port,
            "use_tls": s.security == "tls",
            "start_tls": s.security == "starttls",
            "tls_context": context,
            "timeout": s.timeout,
        }

    async def _explain(self, cert: ssl.SSLCertVerificationError) -> str:
        """The certificate failure in words, with the names the certificate is for when the
        host name was wrong (read over a chain-verifying probe that never logs in)."""
        s = self.mailbox.smtp
        names: list[str] = []
        if cert.verify_code in tls.HOST_MISMATCH:
            if s.security == "tls":
                names = await tls.names_on_certificate(s, self._setting)
            elif (probe := tls.names_context(s, self._setting)) is not None:
                names = await _names_after_starttls(self._session(probe))
        return tls.explain(cert, s, self._setting, names)

    async def _token(self, aw: Awaitable[str]) -> str:
        """An access token, or the SendFailed that says why there is none: a revoked grant
        or a refused client is a refused login (the mailbox is held), an unreachable token
        endpoint a failed connection (retried)."""
        try:
            return await aw
        except TokenError as exc:
            stage = Stage.CONNECT if isinstance(exc, TokenUnavailable) else Stage.AUTH
            raise self._fail(stage, None, str(exc), str(exc)) from None

    async def _xoauth2(self, smtp: aiosmtplib.SMTP, tokens: TokenSource, token: str) -> None:
        """XOAUTH2 as the mailbox's user; a refused token is refreshed and tried once more
        (it may have expired or been revoked since we got it)."""
        user = self.mailbox.smtp.username or self.mailbox.address
        if "xoauth2" not in smtp.server_auth_methods:
            offered = ", ".join(smtp.server_auth_methods) or "none"
            what = (
                f"the server does not offer XOAUTH2 (it offers: {offered}); check smtp.host "
                "and port, or use auth: password"
            )
            raise self._fail(Stage.AUTH, None, what, what)
        try:
            await smtp.auth_xoauth2(user, token)
        except aiosmtplib.SMTPAuthenticationError:
            await smtp.auth_xoauth2(user, await self._token(tokens.renew(token)))

    async def login(self) -> None:
        """Connect and log in now (start-up checks, and one retry after a refused login)."""
        async with self._lock:
            await self._connect()

    async def send(self, to: str, data: bytes, before_data: Callable[[], Awaitable[None]]) -> str:
        """Send one message; returns the server's final reply. Raises SendFailed.

        `before_data` runs once the server has accepted MAIL and RCPT, and must have recorded
        the attempt before DATA is sent: a crash before then leaves a step that certainly
        did not go (it is sent again, with its Message-ID). If it raises, DATA is never
        sent; `Withdrawn` resets the transaction and keeps the connection."""
        async with self._lock:
            smtp = await self._connect()
            stage = Stage.MAIL
            try:
                limit = _size_limit(smtp)
                if limit is not None and len(data) > limit:
                    raise self._fail(
                        Stage.SIZE,
                        None,
                        f"message is {len(data)} bytes, the server takes at most {limit}",
                        f"message not offered: {len(data)} bytes is over the server's "
                        f"SIZE limit of {limit}",
                    )
                options = [f"SIZE={len(data)}"] if limit is not None else []
                await smtp.mail(self.mailbox.address, options=options)
                stage = Stage.RCPT
                await smtp.rcpt(to)
                stage = Stage.DATA
                try:
                    await before_data()
                except Withdrawn:
                    try:
                        await smtp.rset()  # the connection stays usable for the next one
                    except (aiosmtplib.SMTPException, OSError):
                        await self._drop()
                    raise
                except BaseException:  # the outcome could not be recorded: start afresh
                    await self._drop()
                    raise
                reply = await smtp.data(data)
            except aiosmtplib.SMTPResponseException as exc:
                await self._drop()
                raise self._fail(
                    stage, exc.code, exc.message, f"{stage} refused: {exc.code} {exc.message}"
                ) from None
            except (aiosmtplib.SMTPException, OSError) as exc:
                await self._drop()
                what = f"connection lost during {stage}: {exc or type(exc).__name__}"
                raise self._fail(stage, None, str(exc), what) from None
            except SendFailed:
                await self._drop()
                raise
            return f"{reply.code} {reply.message}"

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


async def _log_in(smtp: aiosmtplib.SMTP, username: str, password: str) -> None:
    """One AUTH attempt with one mechanism. aiosmtplib's `login` tries every mechanism the
    server offers in turn, so a wrong password would count as two or three failures against
    the account (Microsoft 365 and fail2ban lock accounts on such counts)."""
    for mechanism in ("plain", "login", "cram-md5"):
        if mechanism in smtp.server_auth_methods:
            method = {"plain": smtp.auth_plain, "login": smtp.auth_login}.get(
                mechanism, smtp.auth_crammd5
            )
            await method(username, password)
            return
    raise aiosmtplib.SMTPException(
        f"the server offers no login method we speak ({', '.join(smtp.server_auth_methods)})"
    )


async def _names_after_starttls(session: dict[str, Any]) -> list[str]:
    """The names on the certificate the server shows after STARTTLS: EHLO, STARTTLS, read,
    hang up (no login, nothing sent)."""
    smtp = aiosmtplib.SMTP(**{**session, "timeout": min(session["timeout"], 10)})
    try:
        await smtp.connect()
        return tls.names_of(smtp.get_transport_info("peercert"))
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        return []
    finally:
        with contextlib.suppress(Exception):
            smtp.close()


def _size_limit(smtp: aiosmtplib.SMTP) -> int | None:
    """The server's SIZE (RFC 1870) in bytes; None when it names no limit."""
    if not smtp.supports_extension("size"):
        return None
    value = smtp.esmtp_extensions.get("size", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None
