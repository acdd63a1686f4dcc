"""`sequencer auth MAILBOX`: the first refresh token, obtained with a person at the keyboard.

Owns the two interactive OAuth2 flows, spoken through Authlib's httpx client:

- the device authorization grant (RFC 8628) where the provider has a device endpoint
  (Microsoft, or `device_code_url`): print the verification URL and the user code, then poll
  the token endpoint at the interval it asks for (`authorization_pending`: keep waiting;
  `slow_down`: 5 seconds more; `expired_token`, `access_denied`: give up);
- else the loopback redirect (RFC 8252 7.3): authorization code with PKCE S256, a one-shot
  HTTP listener on 127.0.0.1 (a free port, or `--port` to forward over SSH from a laptop),
  the URL to open printed, `state` checked. Google needs this: its device flow does not
  allow the Gmail scope.

The refresh token goes where the config says: `refresh_token_file`, else the state
directory's file for the mailbox; mode 0600, written atomically. No token is ever printed.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError

from sequencer import oauth
from sequencer.config import Mailbox, OAuth2
from sequencer.errors import SequencerError

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"

Say = Callable[[str], None]
Sleep = Callable[[float], Awaitable[None]]


class AuthError(SequencerError):
    """`sequencer auth` could not get a refresh token; the message says why and what to do."""


@dataclass(frozen=True)
class Outcome:
    path: Path
    flow: str


def destination(box: Mailbox) -> Path:
    """Where the refresh token is written: `refresh_token_file`, else the state directory."""
    assert box.oauth2 is not None
    raw = box.oauth2.refresh_token_file or box.oauth2.token_store
    assert raw is not None
    return Path(os.path.expanduser(os.path.expandvars(raw)))


def check_writable(path: Path, mailbox: str) -> None:
    """Refuse before the person signs in, not after (the token would be lost): a file is
    really created and removed in the token's folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise AuthError(
            f"cannot write the refresh token to {path}: {exc.strerror}. Run this as the user "
            f"the daemon runs as (e.g. sudo -u sequencer sequencer auth {mailbox}), or set "
            "oauth2.refresh_token_file to a path that user can write"
        ) from None


async def sign_in(
    box: Mailbox,
    *,
    browser: bool = False,
    port: int = 0,
    patience: float = 600.0,
    say: Say = print,
    sleep: Sleep = asyncio.sleep,
) -> Outcome:
    """Run the flow the provider supports, write the refresh token, say where."""
    assert box.oauth2 is not None
    cfg = box.oauth2
    ends = cfg.endpoints()
    path = destination(box)
    check_writable(path, box.name)
    if ends.device_code_url and not browser:
        flow = "device"
        token = await device_flow(box.name, cfg, say=say, sleep=sleep, patience=patience)
    elif ends.authorize_url:
        flow = "browser"
        token = await loopback_flow(box.name, cfg, port=port, say=say, patience=patience)
    else:
        raise AuthError(
            f"mailbox '{box.name}': the provider has neither a device_code_url nor an "
            "authorize_url; add one to its oauth2: block"
        )
    refresh = token.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:
        raise AuthError(
            f"mailbox '{box.name}': the provider signed you in but gave no refresh token "
            "(Microsoft: add the offline_access scope; Google: it gives one with "
            "access_type=offline and prompt=consent, which we send)"
        )
    try:
        if cfg.refresh_token_file:
            oauth.write_private(path, refresh + "\n")
        else:
            oauth.save_rotated(cfg, refresh, None)
    except OSError as exc:
        raise AuthError(f"cannot write the refresh token to {path}: {exc.strerror}") from None
    return Outcome(path, flow)


def _fail(mailbox: str, exc: Exception, url: str) -> AuthError:
    return AuthError(str(oauth.classify(exc, mailbox, url)).replace(oauth.REVOKED + ": ", ""))


async def device_flow(
    mailbox: str,
    cfg: OAuth2,
    *,
    say: Say,
    sleep: Sleep,
    patience: float,
) -> dict[str, Any]:
    """RFC 8628: ask for a user code, show it, poll until the person has signed in."""
    ends = cfg.endpoints()
    assert ends.device_code_url is not None
    async with oauth.client_for(cfg, f"mailboxes.{mailbox}") as client:
        try:
            resp = await client.request(
                "POST",
                ends.device_code_url,
                data={"client_id": cfg.client_id, "scope": " ".join(ends.scopes)},
                withhold_token=True,
            )
            grant = resp.json()
        except (OSError, ValueError, httpx2.HTTPError) as exc:
            raise _fail(mailbox, exc, ends.device_code_url) from None
        if resp.status_code != 200 or "device_code" not in grant:
            raise AuthError(
                f"mailbox '{mailbox}': the device endpoint {ends.device_code_url} refused: "
                f"{grant.get('error', resp.status_code)} {grant.get('error_description', '')}"
                " (check client_id and scopes; the app must allow public client flows)"
            )
        where = grant.get("verification_uri") or grant.get("verification_url")
        say(f"To sign in mailbox '{mailbox}', open {where} and enter the code {grant['user_code']}")
        if complete := grant.get("verification_uri_complete"):
            say(f"(or open {complete})")
        interval = float(grant.get("interval") or 5)
        waited, limit = 0.0, min(float(grant.get("expires_in") or patience), patience)
        while True:
            await sleep(interval)
            waited += interval
            try:
                token: dict[str, Any] = dict(
                    await client.fetch_token(
                        ends.token_url, grant_type=DEVICE_GRANT, device_code=grant["device_code"]
                    )
                )
            except OAuthError as exc:
                if exc.error == "authorization_pending" and waited < limit:
                    continue
                if exc.error == "slow_down" and waited < limit:
                    interval += 5  # RFC 8628 3.5
                    continue
                if exc.error in ("authorization_pending", "slow_down", "expired_token"):
                    raise AuthError(
                        f"mailbox '{mailbox}': the code expired before anyone signed in; "
                        "run `sequencer auth` again"
                    ) from None
                if exc.error == "access_denied":
                    raise AuthError(
                        f"mailbox '{mailbox}': sign-in was declined at the provider"
                    ) from None
                raise _fail(mailbox, exc, ends.token_url) from None
            except (OSError, ValueError, httpx2.HTTPError) as exc:
                raise _fail(mailbox, exc, ends.token_url) from None
            return token


async def loopback_flow(
    mailbox: str, cfg: OAuth2, *, port: int, say: Say, patience: float
) -> dict[str, Any]:
    """Authorization code + PKCE, the browser sent back to a one-shot listener here."""
    ends = cfg.endpoints()
    assert ends.authorize_url is not None
    answer: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
    expected_state = generate_token(30)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing in them matters
            parts = line.decode("latin-1").split()
            query = parse_qs(urlsplit(parts[1]).query) if len(parts) > 1 else {}
            got = {k: v[0] for k, v in query.items()}
            ours = got.get("state") == expected_state
            page = (
                "Signed in: you can close this tab and go back to the terminal."
                if ours and "code" in got
                else "This sign-in did not work; see the terminal."
            )
            body = f"<!doctype html><title>sequencer</title><p>{page}</p>".encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            if ours and not answer.done():
                answer.set_result(got)  # another tab's request (a favicon) is ignored
        except (OSError, TimeoutError, IndexError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    try:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
    except OSError as exc:
        raise AuthError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    bound = server.sockets[0].getsockname()[1]
    redirect = f"http://127.0.0.1:{bound}/"
    verifier = generate_token(64)
    async with server, oauth.client_for(cfg, f"mailboxes.{mailbox}") as client:
        client.redirect_uri = redirect
        client.scope = " ".join(ends.scopes)
        client.code_challenge_method = "S256"
        url, _ = client.create_authorization_url(
            ends.authorize_url,
            state=expected_state,
            code_verifier=verifier,
            **dict(ends.authorize_params),
        )
        say(f"To sign in mailbox '{mailbox}', open this URL in a browser on this machine:")
        say(url)
        say(
            f"(On a server without a browser: ssh -L {bound}:127.0.0.1:{bound} to it, then "
            "open the URL on your computer; `--port` fixes the port.)"
        )
        try:
            got = await asyncio.wait_for(answer, patience)
        except TimeoutError:
            raise AuthError(
                f"mailbox '{mailbox}': nobody signed in within {int(patience)} seconds; run "
                "`sequencer auth` again"
            ) from None
        if "error" in got:
            raise AuthError(
                f"mailbox '{mailbox}': the provider answered {got['error']} "
                f"{got.get('error_description', '')}".rstrip()
            )
        try:
            token: dict[str, Any] = dict(
                await client.fetch_token(
                    ends.token_url,
                    grant_type="authorization_code",
                    code=got.get("code", ""),
                    code_verifier=verifier,
                    redirect_uri=redirect,
                )
            )
        except (OAuthError, OSError, ValueError, httpx2.HTTPError) as exc:
            raise _fail(mailbox, exc, ends.token_url) from None
    return token
