"""Cookie sessions for the station's page (RFC 6265), and the same-origin rule that guards them.

A browser page cannot keep asking for a Basic password, so ``POST /api/login`` checks the
address and password once (through the HTTP authenticator: the same portal, throttle and
cache as Basic) and sets ``station_session``: 256 random bits, ``HttpOnly`` (no script reads
it), ``SameSite=Strict`` (RFC 6265bis §5.4.7: not sent on cross-site requests), ``Path=/``,
and ``Secure`` when the login came over TLS.  The cookie has no Max-Age: the browser drops it
when it closes, and the server forgets a session idle for ``SESSION_SECONDS`` (sliding).

Sessions live in this process's memory only, keyed by the SHA-256 of the token (a memory dump
shows no usable cookie).  A restart therefore logs everyone out; that is deliberate: nothing
secret is written to disk, and logging in again costs one password.  A changed password or a
disabled account does not end sessions already open; they run out after the idle time.

Cross-site request forgery: SameSite does not separate two origins of one site (another port
of the same host is "same-site"), so a state-changing request authenticated by the cookie must
also prove it comes from our own origin (`cross_origin_reason`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.web.iweb import IRequest

#: The cookie's name.
COOKIE = b"station_session"
#: Seconds a session lives after its last use (12 h, sliding).
SESSION_SECONDS = 12 * 3600.0
#: Sessions kept at most; the least recently used go first beyond this.
MAX_SESSIONS = 100_000
#: Methods that change nothing (RFC 9110 §9.2.1): no same-origin proof needed.
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
#: The request header a script on our page sends; a cross-origin page cannot send it without
#: a CORS preflight, which /api/ never grants.
PROOF_HEADER = b"x-requested-with"
#: Largest login body read.
MAX_LOGIN_BODY = 8192


@dataclass
class Session:
    account_id: int
    address: str
    expires: float


class Sessions:
    """Open sessions by token digest, in memory; shared by the http and https services."""

    def __init__(
        self, clock: Any, lifetime: float = SESSION_SECONDS, limit: int = MAX_SESSIONS
    ) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.limit = limit
        self._open: dict[bytes, Session] = {}

    def __len__(self) -> int:
        return len(self._open)

    def create(self, account_id: int, address: str) -> str:
        """A new session's token (what goes in the cookie)."""
        now = self.clock.seconds()
        if len(self._open) >= self.limit:
            self._prune(now)
        while len(self._open) >= self.limit:  # least recently used first (insertion order)
            del self._open[next(iter(self._open))]
        token = secrets.token_urlsafe(32)
        self._open[_digest(token)] = Session(account_id, address, now + self.lifetime)
        return token

    def get(self, token: str) -> Session | None:
        """The session of ``token`` if it is open; its idle time starts again."""
        key = _digest(token)
        session = self._open.pop(key, None)
        if session is None:
            return None
        now = self.clock.seconds()
        if session.expires <= now:
            return None
        session.expires = now + self.lifetime
        self._open[key] = session  # back at the end: most recently used
        return session

    def end(self, token: str) -> bool:
        return self._open.pop(_digest(token), None) is not None

    def _prune(self, now: float) -> None:
        for key in [k for k, s in self._open.items() if s.expires <= now]:
            del self._open[key]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def session_token(request: IRequest) -> str | None:
    value = request.getCookie(COOKIE)
    if not value:
        return None
    return value.decode("ascii", "replace")


def request_origin(request: IRequest) -> str | None:
    """scheme://host[:port] as the client addressed us (the origin our page runs at)."""
    host = request.getHeader(b"host")
    if not host:
        return None
    scheme = "https" if request.isSecure() else "http"
    return f"{scheme}://{host.decode('latin-1').strip().lower()}"


def cross_origin_reason(request: IRequest, trusted: frozenset[str] = frozenset()) -> str | None:
    """Why a cookie-authenticated state change is refused, or None when it is from our origin.

    Browsers send ``Sec-Fetch-Site`` (Fetch Metadata) and ``Origin`` (RFC 6454 §7; sent on
    every non-GET fetch) and scripts cannot forge either; either one decides when present.
    Without both (old browsers, scripts outside a browser) the page's ``X-Requested-With``
    header is required: a cross-origin page could only send it after a CORS preflight.
    ``trusted``: further origins (``transfer.public_url``, behind a proxy).
    """
    site = request.getHeader(b"sec-fetch-site")
    if site is not None and site.strip().lower() != b"same-origin":
        return "cross-site request refused (Sec-Fetch-Site)"
    origin = request.getHeader(b"origin")
    if origin is not None:
        seen = origin.decode("latin-1").strip().lower().rstrip("/")
        if seen != request_origin(request) and seen not in trusted:
            return "cross-origin request refused (Origin)"
        return None
    if site is not None:
        return None
    if request.getHeader(PROOF_HEADER) is None:
        return "cookie-authenticated requests that change something need X-Requested-With"
    return None


def origin_of(url: str | None) -> frozenset[str]:
    """The origin of a configured URL, as ``cross_origin_reason`` compares it."""
    if not url:
        return frozenset()
    parts = urlsplit(url)
    return frozenset({f"{parts.scheme}://{parts.netloc}".lower()})


def login_fields(request: IRequest) -> tuple[str, str] | None:
    """address and password from a JSON or form body; None when either is missing."""
    content = request.content
    body = content.read(MAX_LOGIN_BODY + 1) if content is not None else b""
    if len(body) > MAX_LOGIN_BODY:
        return None
    ctype = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    fields: dict[str, Any]
    if ctype == b"application/json":
        try:
            fields = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        if not isinstance(fields, dict):
            return None
    else:
        try:
            parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            return None
        fields = {k: v[0] for k, v in parsed.items()}
    address, password = fields.get("address"), fields.get("password")
    if not isinstance(address, str) or not isinstance(password, str) or not address:
        return None
    return address, password


def set_session_cookie(request: IRequest, token: str) -> None:
    """RFC 6265 §4.1: HttpOnly, SameSite=Strict, Path=/, and Secure over TLS."""
    request.addCookie(
        COOKIE,
        token.encode("ascii"),
        path=b"/",
        secure=request.isSecure() or None,
        httpOnly=True,
        sameSite="strict",
    )


def clear_session_cookie(request: IRequest) -> None:
    """RFC 6265 §3.1: a cookie is removed by setting it again already expired."""
    request.addCookie(
        COOKIE,
        b"",
        path=b"/",
        max_age=b"0",
        secure=request.isSecure() or None,
        httpOnly=True,
        sameSite="strict",
    )


async def login(request: IRequest, authenticator: Any) -> tuple[int, dict[str, Any]]:
    """``POST /api/login``: (status, JSON answer); sets the cookie on success.

    A login from another origin is refused too (login CSRF: a page logging the victim into the
    attacker's account), but only when the browser says so: a first login has no cookie yet,
    so clients outside a browser need no proof.
    """
    site = request.getHeader(b"sec-fetch-site")
    origin = request.getHeader(b"origin")
    if site is not None or origin is not None:
        reason = cross_origin_reason(request, authenticator.trusted_origins)
        if reason is not None:
            return 403, {"error": reason}
    if not authenticator.transport_ok(request):
        return 403, {"error": "log in over https: a password is not sent in clear"}
    fields = login_fields(request)
    if fields is None:
        return 400, {"error": "send address and password (form or JSON)"}
    identity = await authenticator.verify_password(request, *fields)
    if identity is None:
        return 401, {"error": "wrong address or password, or too many attempts"}
    token = authenticator.sessions.create(identity.account_id, identity.address)
    set_session_cookie(request, token)
    return 200, {"address": identity.address}


def logout(request: IRequest, authenticator: Any) -> tuple[int, dict[str, Any]]:
    """``POST /api/logout``: ends the session (same-origin proof required like any change)."""
    token = session_token(request)
    if token is None:
        clear_session_cookie(request)
        return 200, {"logged_out": False}
    reason = cross_origin_reason(request, authenticator.trusted_origins)
    if reason is not None:
        return 403, {"error": reason}
    ended = authenticator.sessions.end(token)
    clear_session_cookie(request)
    return 200, {"logged_out": ended}
