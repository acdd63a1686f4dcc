"""Pure: the OAuth2 endpoints and scopes of the providers we know by name, so a mailbox on
Google Workspace or Microsoft 365 needs only `provider:` and its own client id.

Checked against the providers' published documentation (December 2026; these hosts cannot be
reached from where sequencer is developed, so nothing here was tried live):

- Google: "OAuth 2.0 Mechanism" (developers.google.com/gmail/imap/xoauth2-protocol): "The scope
  for IMAP, POP, and SMTP access is https://mail.google.com/". "OAuth 2.0 for Mobile & Desktop
  Apps" (developers.google.com/identity/protocols/oauth2/native-app): authorization code with
  PKCE and a loopback redirect (http://127.0.0.1:PORT), endpoints
  https://accounts.google.com/o/oauth2/v2/auth and https://oauth2.googleapis.com/token,
  `access_type=offline` for a refresh token. "OAuth 2.0 for TV and Limited-Input Device
  Applications" (developers.google.com/identity/protocols/oauth2/limited-input-device): the
  device flow "supports a limited set of scopes", and the Gmail scope is not among them, so
  Google has no device endpoint here and `sequencer auth` uses the loopback redirect.
- Microsoft: "Authenticate an IMAP, POP or SMTP connection using OAuth"
  (learn.microsoft.com/exchange/client-developer/legacy-protocols/
  how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth): scopes
  https://outlook.office.com/IMAP.AccessAsUser.All and https://outlook.office.com/SMTP.Send,
  plus offline_access for a refresh token; the authorization code and device authorization
  flows both apply. "Microsoft identity platform and the OAuth 2.0 device authorization grant
  flow" (learn.microsoft.com/entra/identity-platform/v2-oauth2-device-code):
  POST https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode, tokens from
  .../oauth2/v2.0/token; {tenant} is `common`, `organizations`, `consumers`, or the tenant's
  id or domain. We default to `organizations` (Microsoft 365 work accounts); an app
  registered for one organisation only (the Entra default) needs its tenant id.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    token_url: str
    authorize_url: str | None
    device_code_url: str | None
    scopes: tuple[str, ...]
    #: Extra query parameters on the authorization URL (Google hands out a refresh token only
    #: with access_type=offline, and a second time only with prompt=consent).
    authorize_params: tuple[tuple[str, str], ...] = ()
    #: Send the scopes again with each refresh (RFC 6749 6 allows it; Microsoft's v2.0
    #: endpoint wants them, as MSAL always sends them). Google's docs send none.
    refresh_with_scope: bool = True


DEFAULT_TENANT = "organizations"

_MICROSOFT = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0"

PRESETS = {
    "google": Preset(
        token_url="https://oauth2.googleapis.com/token",  # noqa: S106 (a URL, not a secret)
        authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
        device_code_url=None,
        scopes=("https://mail.google.com/",),
        authorize_params=(("access_type", "offline"), ("prompt", "consent")),
        refresh_with_scope=False,
    ),
    "microsoft": Preset(
        token_url=_MICROSOFT + "/token",
        authorize_url=_MICROSOFT + "/authorize",
        device_code_url=_MICROSOFT + "/devicecode",
        scopes=(
            "https://outlook.office.com/IMAP.AccessAsUser.All",
            "https://outlook.office.com/SMTP.Send",
            "offline_access",
        ),
    ),
}


def preset(provider: str, tenant: str | None) -> Preset | None:
    """The provider's endpoints, with the tenant filled in; None for `custom`."""
    found = PRESETS.get(provider)
    if found is None:
        return None
    fill = tenant or DEFAULT_TENANT
    return Preset(
        token_url=found.token_url.format(tenant=fill),
        authorize_url=found.authorize_url.format(tenant=fill) if found.authorize_url else None,
        device_code_url=(
            found.device_code_url.format(tenant=fill) if found.device_code_url else None
        ),
        scopes=found.scopes,
        authorize_params=found.authorize_params,
        refresh_with_scope=found.refresh_with_scope,
    )
