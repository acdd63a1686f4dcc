"""TLS for every connection we make: a verifying context per CA, and certificate failures in
words a person can act on.

Owns: the `ssl.SSLContext` a server's connections use (the system's trusted CAs, or only the
server's `ca_file`), checking that a `ca_file` is a readable PEM certificate, and turning
`ssl.SSLCertVerificationError` into a sentence that names the server, what is wrong and what
to set. Certificate and host name checks are always on: nothing here, and no setting, turns
them off. The one context that skips the host name check (`names_on_certificate`) still
verifies the chain, only reads which names the certificate is for, and never carries a login.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from pathlib import Path
from typing import Any

from sequencer.config import Server
from sequencer.errors import ConfigError

# OpenSSL's X509_V_ERR_* codes that say the chain does not end at a CA we trust.
_UNTRUSTED = {
    2,  # unable to get issuer certificate
    18,  # self-signed certificate
    19,  # self-signed certificate in certificate chain
    20,  # unable to get local issuer certificate
    21,  # unable to verify the first certificate
}
_NOT_YET_VALID, _EXPIRED = 9, 10
HOST_MISMATCH = frozenset({62, 64})  # host name, IP address

_PEM_MARK = b"-----BEGIN CERTIFICATE-----"

#: Why `security: starttls` is refused for IMAP (by `check`, and by a connection attempt).
IMAP_STARTTLS = (
    "security: starttls is not supported for IMAP (aioimaplib, the IMAP client sequencer "
    "uses, cannot upgrade a connection to TLS): use security: tls on port 993"
)


def context(server: Server, where: str) -> ssl.SSLContext:
    """The verifying context for this server. Raises ConfigError for a bad `ca_file`
    (`where` names the server's settings, e.g. "sequencer.yaml: mailboxes.sales.smtp")."""
    path = server.ca_path(where)
    if path is None:
        return _context(None)
    check_ca_file(path, f"{where}: ca_file")
    return _context(str(path.resolve()))


def check_ca_file(path: Path, what: str) -> None:
    """A readable file holding at least one PEM certificate that OpenSSL accepts."""
    advice = (
        "give the path of your private CA's certificate in PEM form; a relative path is "
        "relative to the settings file's folder"
    )
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{what} {path}: no such file ({advice})"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{what} {path}: is a folder, not a file ({advice})"]) from None
    except OSError as exc:
        raise ConfigError(
            [
                f"{what} {path}: cannot read it: {exc.strerror} (make it readable by the "
                "user sequencer runs as)"
            ]
        ) from None
    if _PEM_MARK not in data:
        raise ConfigError(
            [
                f"{what} {path}: not a PEM certificate (no '{_PEM_MARK.decode()}' line); "
                "a DER file converts with: openssl x509 -inform der -in ca.cer -out ca.pem"
            ]
        )
    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError as exc:
        raise ConfigError(
            [f"{what} {path}: OpenSSL cannot load it ({exc.reason or exc}): {advice}"]
        ) from None


@functools.cache
def _context(ca_file: str | None) -> ssl.SSLContext:
    # With a cafile, create_default_context trusts that CA alone (not the system's list).
    return ssl.create_default_context(cafile=ca_file)


def certificate_error(exc: BaseException | None) -> ssl.SSLCertVerificationError | None:
    """The certificate failure behind `exc` (aiosmtplib wraps it in SMTPConnectError)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def explain(
    exc: ssl.SSLCertVerificationError,
    server: Server,
    setting: str,
    names: list[str] | None = None,
) -> str:
    """What is wrong with the server's certificate, and what to do. `setting` names the
    server's settings ("mailboxes.sales.smtp"); `names`: what the certificate is for, when
    known (`names_on_certificate`)."""
    code = getattr(exc, "verify_code", None)
    detail = getattr(exc, "verify_message", None) or str(exc)
    at = f"{server.host}:{server.port}"
    if code in HOST_MISMATCH:
        listed = f"is for {', '.join(names)}, not {server.host}" if names else detail
        return (
            f"the certificate of {at} {listed}: set {setting}.host to a name the certificate "
            "lists, or have the certificate issued for this name"
        )
    if code in _UNTRUSTED:
        if server.ca_file is not None:
            return (
                f"the certificate of {at} is not signed by the CA in {setting}.ca_file "
                f"({server.ca_file}): {detail}; set ca_file to the CA that issued it"
            )
        return (
            f"the certificate of {at} is not signed by a trusted CA ({detail}): if your "
            f"server uses a private CA, set ca_file: /path/to/ca.pem under {setting}"
        )
    if code == _EXPIRED:
        return f"the certificate of {at} has expired: the server's administrator must renew it"
    if code == _NOT_YET_VALID:
        return (
            f"the certificate of {at} is not valid yet: check this machine's clock, "
            "or the certificate's start date"
        )
    return f"the certificate of {at} was refused: {detail}"


def names_of(peercert: dict[str, Any] | None) -> list[str]:
    """The names a verified certificate is for: its subjectAltName, else its common name."""
    if not peercert:
        return []
    names = [v for k, v in peercert.get("subjectAltName", ()) if k in ("DNS", "IP Address")]
    if names:
        return names
    return [v for rdn in peercert.get("subject", ()) for k, v in rdn if k == "commonName"]


async def names_on_certificate(server: Server, where: str) -> list[str]:
    """Which names the server's certificate is for, read over a connection that verifies the
    chain but not the host name (for the message only; nothing is sent on it, no login).
    Implicit TLS only: after STARTTLS the caller reads them from its own probe. [] when
    they cannot be read."""
    probe = names_context(server, where)
    if probe is None:
        return []
    writer = None
    try:
        async with asyncio.timeout(min(server.timeout, 10)):
            _, writer = await asyncio.open_connection(
                server.host, server.port, ssl=probe, server_hostname=server.host
            )
            return names_of(writer.get_extra_info("peercert"))
    except (OSError, TimeoutError):
        return []
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1)


def names_context(server: Server, where: str) -> ssl.SSLContext | None:
    """A context that verifies the chain (same CAs) but not the host name: only to learn,
    after a host name mismatch, which names the certificate is for (never for a login)."""
    try:
        path = server.ca_path(where)
        probe = ssl.create_default_context(cafile=str(path) if path else None)
    except (ConfigError, OSError):
        return None
    probe.check_hostname = False  # reading the names only; the chain is still verified
    return probe
