"""OAuth2 tokens for one mailbox, for XOAUTH2 on SMTP and IMAP.

Owns: where the refresh token comes from, the access token (kept in memory only, refreshed
`margin` before it expires by the injected clock, and once more when a server refuses it), a
refresh token the provider rotates (written back to the state directory, mode 0600,
atomically), and telling a revoked grant (`invalid_grant`: a person must run `sequencer auth`)
from a token endpoint that is only unreachable (try again later). The token endpoint is
spoken to by Authlib's httpx client, not by hand.

Which refresh token: `refresh_token_file` is what `sequencer auth` (or the operator) wrote.
A rotated token is written to `token_store` in the state directory, with a digest of the
`refresh_token_file` token it replaced: it wins while that file still holds the token it
replaced, and is ignored once the file holds a new grant (after `sequencer auth`). Without
`refresh_token_file`, the store is the only file.

No token, access or refresh, is ever logged; `logs.redact` scrubs them from any log line
that might carry one anyway.

    TokenError              (a SequencerError)
    ├── TokenRevoked        invalid_grant, or no refresh token at all: hold the mailbox
    ├── TokenRefused        the provider refused our client (invalid_client, bad scope...)
    └── TokenUnavailable    the token endpoint did not answer usefully: retry later
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from sequencer import logs
from sequencer.clock import Clock
from sequencer.config import Mailbox, OAuth2
from sequencer.errors import ConfigError, SequencerError
from sequencer.states import Hold

if TYPE_CHECKING:
    from authlib.integrations.httpx_client import AsyncOAuth2Client

log = structlog.get_logger("sequencer.oauth")

#: Refresh this long before the access token expires (providers issue them for an hour).
MARGIN = timedelta(minutes=5)
#: A response without expires_in: assume this lifetime.
DEFAULT_LIFETIME = timedelta(hours=1)
#: The text every revoked-grant error starts with: `holds.mailbox_view` reads it back from
#: the mailbox's recorded error, so no schema change is needed to show the hold.
REVOKED = Hold.OAUTH_REVOKED.value


class TokenError(SequencerError):
    """No access token now."""


class TokenRevoked(TokenError):
    """The grant is gone (revoked, expired, password changed) or was never made: a person
    must run `sequencer auth MAILBOX`. Nothing is retried until a new refresh token is on
    disk."""


class TokenRefused(TokenError):
    """The provider refused our client itself (client id or secret, scopes): a config fix."""


class TokenUnavailable(TokenError):
    """The token endpoint is unreachable or answered nonsense: try again later."""


def revoked_text(mailbox: str, why: str) -> str:
    return (
        f"{REVOKED}: mailbox '{mailbox}': {why}; run `sequencer auth {mailbox}` to sign in "
        "again (the daemon picks the new token up by itself)"
    )


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def write_private(path: Path, text: str) -> None:
    """Write a secret file: mode 0600 from the start, atomically (a temp file in the same
    folder, then os.replace), so a crash never leaves half a token or a readable one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _expand(raw: str) -> Path:
    return Path(os.path.expanduser(os.path.expandvars(raw)))


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


def current_refresh_token(oauth: OAuth2, where: str) -> str | None:
    """The refresh token to use now (see the module's docstring); None when there is none.
    Raises ConfigError when a file exists but cannot be read."""
    original = None
    try:
        if oauth.refresh_token_file:
            original = _read(_expand(oauth.refresh_token_file)) or None
        stored = _read(Path(oauth.token_store)) if oauth.token_store else None
    except OSError as exc:
        raise ConfigError([f"{where}: cannot read the refresh token: {exc}"]) from None
    if stored:
        try:
            saved = json.loads(stored)
            token, replaces = str(saved["refresh_token"]), saved.get("replaces")
        except (ValueError, KeyError, TypeError):
            saved = None
        if saved is not None and (original is None or replaces == digest(original)):
            return token
    return original


def save_rotated(oauth: OAuth2, token: str, replaces: str | None) -> Path:
    """Write a refresh token to the state directory's store for this mailbox."""
    assert oauth.token_store is not None
    path = Path(oauth.token_store)
    write_private(path, json.dumps({"refresh_token": token, "replaces": replaces}) + "\n")
    return path


def client_for(oauth: OAuth2, where: str, timeout: float = 30.0) -> AsyncOAuth2Client:
    """Authlib's client for this mailbox's app: the secret in the POST body when there is one
    (Google's and Microsoft's confidential clients), else a public client (client_id only)."""
    # Authlib and httpx2 load only where OAuth2 is used: a daemon of password mailboxes
    # starts as fast as before.
    from authlib.integrations.httpx_client import AsyncOAuth2Client

    secret = oauth.client_secret(f"{where}.oauth2")
    return AsyncOAuth2Client(
        client_id=oauth.client_id,
        client_secret=secret,
        token_endpoint_auth_method="client_secret_post" if secret else "none",
        timeout=timeout,
    )


def request_errors() -> tuple[type[Exception], ...]:
    """What a token request raises when the endpoint refuses or cannot be reached."""
    import httpx2
    from authlib.integrations.base_client import OAuthError

    return (OAuthError, httpx2.HTTPError, ValueError)


def classify(exc: Exception, mailbox: str, url: str) -> TokenError:
    """What a failed token request means for us."""
    import httpx2
    from authlib.integrations.base_client import OAuthError

    if isinstance(exc, OAuthError):
        desc = f"{exc.error}" + (f" ({exc.description})" if exc.description else "")
        if exc.error == "invalid_grant":
            return TokenRevoked(
                revoked_text(mailbox, f"the refresh token was revoked or has expired: {desc}")
            )
        return TokenRefused(
            f"mailbox '{mailbox}': the token endpoint {url} refused our client: {desc} "
            "(check client_id, the client secret and scopes in the oauth2: block)"
        )
    if isinstance(exc, httpx2.HTTPStatusError):
        code = exc.response.status_code
        return TokenUnavailable(f"mailbox '{mailbox}': the token endpoint {url} answered {code}")
    return TokenUnavailable(
        f"mailbox '{mailbox}': the token endpoint {url} did not answer: {exc or type(exc).__name__}"
    )


class TokenSource:
    """One mailbox's tokens, shared by its SMTP sender, inbox watcher and Sent folder."""

    def __init__(self, mailbox: Mailbox, clock: Clock, *, margin: timedelta = MARGIN) -> None:
        if mailbox.oauth2 is None:
            raise ValueError(f"mailbox '{mailbox.name}' has no oauth2: block")
        self.mailbox = mailbox
        self.oauth = mailbox.oauth2
        self.clock = clock
        self.margin = margin
        self.where = f"mailboxes.{mailbox.name}"
        self._access: str | None = None
        self._expires: datetime | None = None
        self._refresh: str | None = None
        self._revoked: str | None = None  # why, while the grant is gone
        self._revoked_token: str | None = None  # the refresh token that was refused
        self._lock = asyncio.Lock()
        #: Set when a new refresh token turns up after a revocation: wakes the inbox watcher.
        self.renewed = asyncio.Event()

    @property
    def name(self) -> str:
        return self.mailbox.name

    def revoked(self) -> str | None:
        """Why the grant is gone, or None. A new refresh token on disk (`sequencer auth` ran)
        clears it: only a local file is read, nothing is sent."""
        if self._revoked is not None:
            try:
                fresh = current_refresh_token(self.oauth, self.where)
            except ConfigError:
                return self._revoked
            if fresh and fresh != self._revoked_token:
                log.info("oauth.new_grant", mailbox=self.name)
                self._revoked = self._revoked_token = None
                self._refresh = fresh
                logs.redact(fresh)
                self.renewed.set()
        return self._revoked

    async def token(self) -> str:
        """A valid access token, refreshed when it expires within the margin."""
        async with self._lock:
            if self._access is not None and not self._expiring():
                return self._access
            return await self._renew()

    async def renew(self, refused: str) -> str:
        """A server refused `refused`: refresh once (unless another login did meanwhile)."""
        async with self._lock:
            if self._access is not None and self._access != refused and not self._expiring():
                return self._access
            return await self._renew()

    def _expiring(self) -> bool:
        return self._expires is None or self.clock.now() >= self._expires - self.margin

    async def _renew(self) -> str:
        try:
            return await self._refreshed()
        except ConfigError as exc:
            # A client secret or token file that cannot be read: a fix in the config or on
            # disk, held like a refused login (never a crash of the watcher).
            raise TokenRefused(f"mailbox '{self.name}': {exc}") from None

    async def _refreshed(self) -> str:
        if (why := self.revoked()) is not None:
            raise TokenRevoked(why)
        if self._refresh is None:
            self._refresh = current_refresh_token(self.oauth, self.where)
            if self._refresh is None:
                where = self.oauth.refresh_token_file or self.oauth.token_store
                raise self._revoke(
                    TokenRevoked(revoked_text(self.name, f"no refresh token yet (in {where})")),
                    None,
                )
            logs.redact(self._refresh)
        ends = self.oauth.endpoints()
        url = ends.token_url
        scope = {"scope": " ".join(ends.scopes)} if ends.refresh_with_scope else {}
        used = self._refresh
        try:
            async with client_for(self.oauth, self.where, self.mailbox.imap.timeout) as client:
                answer: dict[str, Any] = dict(
                    await client.refresh_token(url, refresh_token=used, **scope)
                )
        except Exception as exc:  # what each means is classify's: Authlib, httpx2 or JSON
            if not isinstance(exc, request_errors()):
                raise
            error = classify(exc, self.name, url)
            if isinstance(error, TokenRevoked):
                raise self._revoke(error, used) from None
            raise error from None
        access = answer.get("access_token")
        if not isinstance(access, str) or not access:
            raise TokenUnavailable(
                f"mailbox '{self.name}': the token endpoint {url} answered without an access_token"
            )
        logs.redact(access, replaces=self._access)
        lifetime = _lifetime(answer.get("expires_in"))
        self._access, self._expires = access, self.clock.now() + lifetime
        rotated = answer.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != used:
            logs.redact(rotated, replaces=used)
            self._refresh = rotated
            self._save(rotated)
        log.info(
            "oauth.refreshed",
            mailbox=self.name,
            expires_in=int(lifetime.total_seconds()),
            rotated=bool(rotated and rotated != used),
        )
        return access

    def _revoke(self, error: TokenRevoked, token: str | None) -> TokenRevoked:
        self._revoked, self._revoked_token = str(error), token
        self.renewed.clear()
        self._access = self._expires = None
        self._refresh = None
        return error

    def _save(self, rotated: str) -> None:
        """Keep a rotated refresh token: the old one may stop working at any moment."""
        original = None
        if self.oauth.refresh_token_file:
            with contextlib.suppress(OSError):
                original = _read(_expand(self.oauth.refresh_token_file)) or None
        try:
            path = save_rotated(self.oauth, rotated, digest(original) if original else None)
        except OSError as exc:
            # In memory it still works until we restart; say so loudly, once per rotation.
            log.error(
                "oauth.token_not_saved",
                mailbox=self.name,
                path=self.oauth.token_store,
                error=exc.strerror or str(exc),
                advice="make the state directory writable by the daemon's user",
            )
            return
        log.info("oauth.token_rotated", mailbox=self.name, path=str(path))


def _lifetime(value: object) -> timedelta:
    try:
        seconds = int(str(value))
    except ValueError:
        return DEFAULT_LIFETIME
    return timedelta(seconds=max(seconds, 0))


def readiness(box: Mailbox, where: str) -> list[str]:
    """What `check` warns about before the daemon would find out: an unreadable client
    secret, or no refresh token yet. Reads local files only."""
    if box.oauth2 is None:
        return []
    found = []
    try:
        box.oauth2.client_secret(f"{where}.oauth2")
        if current_refresh_token(box.oauth2, where) is None:
            found.append(f"{where}: no OAuth2 refresh token yet (run `sequencer auth {box.name}`)")
    except ConfigError as exc:
        found += exc.problems
    return found


def sources(mailboxes: dict[str, Mailbox], clock: Clock) -> dict[str, TokenSource]:
    """One token source per mailbox that uses OAuth2."""
    return {name: TokenSource(box, clock) for name, box in mailboxes.items() if box.uses_oauth2}
