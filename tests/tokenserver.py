"""An OAuth2 provider on loopback for the tests, as Google's or Microsoft's behaves where it
matters to us: a token endpoint (refresh_token, device_code and authorization_code grants,
with rotation, expiry and revocation), device authorization (RFC 8628), an authorize
endpoint for the loopback redirect (PKCE S256 checked), and token introspection (RFC 7662)
for Dovecot's oauth2 passdb and the SMTP sink's XOAUTH2.

stdlib http.server in a thread, so it answers whether the test's event loop runs or the
test waits on a subprocess.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

CLIENT_ID = "seq-test-client"
CLIENT_SECRET = "client-Secret-7"


@dataclass
class Grant:
    user: str
    scope: str
    revoked: bool = False


@dataclass
class Provider:
    """The provider's state; tests change it between steps."""

    user: str = "sales"
    url: str = ""  # where it listens, set when the server starts
    lifetime: int = 3600  # seconds an access token is valid (expires_in)
    rotate: bool = False  # each refresh answers with a new refresh token (the old one dies)
    slow_down: bool = False  # the next device-code poll is answered slow_down (RFC 8628 3.5)
    refresh_tokens: dict[str, Grant] = field(default_factory=dict)
    access_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # user, expiry
    device_codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    grants: list[str] = field(default_factory=list)  # grant_type of every token request
    refresh_scopes: list[str | None] = field(default_factory=list)  # scope sent with each
    introspections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def issue_refresh(self, scope: str = "mail") -> str:
        token = "rt-" + secrets.token_urlsafe(24)
        self.refresh_tokens[token] = Grant(self.user, scope)
        return token

    def _access(self, user: str) -> dict[str, Any]:
        token = "at-" + secrets.token_urlsafe(24)
        self.access_tokens[token] = (user, time.time() + self.lifetime)
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime}

    def revoke_all(self) -> None:
        with self.lock:
            for grant in self.refresh_tokens.values():
                grant.revoked = True
            self.access_tokens.clear()

    def expire_access(self) -> None:
        """Every access token issued so far stops working (the server side of expiry)."""
        with self.lock:
            self.access_tokens = {t: (u, 0.0) for t, (u, _) in self.access_tokens.items()}

    def active(self, token: str) -> str | None:
        with self.lock:
            found = self.access_tokens.get(token)
        return found[0] if found and found[1] > time.time() else None

    def approve_device(self, user_code: str) -> None:
        with self.lock:
            for entry in self.device_codes.values():
                if entry["user_code"] == user_code:
                    entry["approved"] = True


class TokenServer:
    def __init__(self, provider: Provider | None = None, port: int = 0) -> None:
        """`port`: a fixed one, to bring a stopped server back where the config points."""
        self.provider = provider or Provider()
        handler = type("Handler", (_Handler,), {"provider": self.provider})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.port = self.httpd.server_address[1]
        self.provider.url = self.url
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TokenServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _error(code: str, status: int = 400, description: str = "") -> tuple[int, dict[str, Any]]:
    body = {"error": code}
    if description:
        body["error_description"] = description
    return status, body


class _Handler(BaseHTTPRequestHandler):
    provider: Provider

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length).decode()
        return {k: v[0] for k, v in parse_qs(raw).items()}

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/authorize":
            self._authorize(query)
        elif parts.path == "/userinfo":  # introspection_mode = auth
            auth = self.headers.get("Authorization", "")
            user = self.provider.active(auth.removeprefix("Bearer ").strip())
            self._send(200, {"active": True, "username": user} if user else {"active": False})
        else:
            self._send(404, {"error": "not_found"})

    def _authorize(self, query: dict[str, str]) -> None:
        """Consent is given at once (the test is the user); back to redirect_uri with a code."""
        if query.get("client_id") != CLIENT_ID or query.get("code_challenge_method") != "S256":
            self._send(400, {"error": "invalid_request"})
            return
        code = "code-" + secrets.token_urlsafe(12)
        with self.provider.lock:
            self.provider.codes[code] = {
                "challenge": query.get("code_challenge"),
                "redirect_uri": query["redirect_uri"],
                "scope": query.get("scope", ""),
            }
        target = query["redirect_uri"] + "?" + urlencode({"code": code, "state": query["state"]})
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        form = self._form()
        path = urlsplit(self.path).path
        if path == "/token":
            status, body = self._token(form)
        elif path == "/device":
            status, body = self._device(form)
        elif path == "/introspect":
            self.provider.introspections += 1
            user = self.provider.active(form.get("token", ""))
            status, body = 200, {"active": True, "username": user} if user else {"active": False}
        else:
            status, body = 404, {"error": "not_found"}
        self._send(status, body)

    def _device(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("client_id") != CLIENT_ID:
            return _error("invalid_client", 401)
        device_code = "dc-" + secrets.token_urlsafe(16)
        user_code = secrets.token_hex(3).upper()
        with self.provider.lock:
            self.provider.device_codes[device_code] = {
                "user_code": user_code,
                "approved": False,
                "denied": False,
                "scope": form.get("scope", ""),
            }
        port = self.server.server_address[1]
        return 200, {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": f"http://127.0.0.1:{port}/device-login",
            "expires_in": 900,
            "interval": 1,
        }

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        p = self.provider
        if form.get("client_id") != CLIENT_ID:
            return _error("invalid_client", 401)
        if "client_secret" in form and form["client_secret"] != CLIENT_SECRET:
            return _error("invalid_client", 401)
        grant = form.get("grant_type", "")
        with p.lock:
            p.grants.append(grant)
            if grant == "refresh_token":
                p.refresh_scopes.append(form.get("scope"))
                found = p.refresh_tokens.get(form.get("refresh_token", ""))
                if found is None or found.revoked:
                    return _error("invalid_grant", 400, "Token has been expired or revoked.")
                answer = p._access(found.user)
                if p.rotate:
                    found.revoked = True
                    answer["refresh_token"] = p.issue_refresh(found.scope)
                return 200, answer
            if grant == "urn:ietf:params:oauth:grant-type:device_code":
                entry = p.device_codes.get(form.get("device_code", ""))
                if entry is None:
                    return _error("expired_token")
                if p.slow_down:
                    p.slow_down = False
                    return _error("slow_down")
                if entry["denied"]:
                    return _error("access_denied")
                if not entry["approved"]:
                    return _error("authorization_pending")
                del p.device_codes[form["device_code"]]
                return 200, {**p._access(p.user), "refresh_token": p.issue_refresh()}
            if grant == "authorization_code":
                entry = p.codes.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                challenge = (
                    base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                    .rstrip(b"=")
                    .decode()
                )
                if entry is None or entry["challenge"] != challenge:
                    return _error("invalid_grant", 400, "bad code or PKCE verifier")
                if entry["redirect_uri"] != form.get("redirect_uri"):
                    return _error("invalid_grant", 400, "redirect_uri differs")
                return 200, {**p._access(p.user), "refresh_token": p.issue_refresh()}
        return _error("unsupported_grant_type")


def xoauth2_user_token(blob: str) -> tuple[str, str]:
    """(user, token) from a base64 XOAUTH2 initial response."""
    text = base64.b64decode(blob).decode()
    fields = dict(part.split("=", 1) for part in text.split("\x01") if "=" in part)
    return fields.get("user", ""), fields.get("auth", "").removeprefix("Bearer ").strip()
