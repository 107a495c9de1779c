"""Who is asking: HTTP Basic authentication (RFC 7617) with the mail accounts.

The password is checked like every protocol's, through the portal and the login throttle
shared with SMTP, IMAP and POP3.  A tus client sends its credentials with every request (HEAD,
PATCH after PATCH), and an argon2id check costs ~0.3 s of CPU, so a verified pair is
remembered for ``CACHE_SECONDS``.  It is remembered under an HMAC with a key made at start,
never the password itself.  Credentials are refused over plain HTTP except from loopback.

The station's page logs in once and then sends a session cookie (web/session.py); such a
cookie authenticates as well as Basic does, but a request that changes something must also
prove it comes from our own origin (CSRF), or it is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass

from twisted.cred import error as cred_error
from twisted.cred.credentials import UsernamePassword
from twisted.logger import Logger

from mailbox_appliance.addresses import normalize_address
from mailbox_appliance.errors import InvalidAddress
from mailbox_appliance.interfaces import IAccount
from mailbox_appliance.web.session import (
    SAFE_METHODS,
    Sessions,
    cross_origin_reason,
    origin_of,
    session_token,
)

log = Logger()

#: Seconds a verified user and password stay verified.
CACHE_SECONDS = 300.0
CACHE_ENTRIES = 10000


@dataclass(frozen=True)
class Identity:
    """Who a request is: ``session`` when a cookie said so (CSRF rules apply to it)."""

    account_id: int
    address: str
    session: bool = False


class CrossOrigin(Exception):
    """A cookie-authenticated state change without a same-origin proof (answer 403)."""


class HTTPAuthenticator:
    def __init__(self, reactor, portal, throttle, public_url: str | None = None):
        self.reactor = reactor
        self.portal = portal
        self.throttle = throttle
        self._key = secrets.token_bytes(32)
        self._verified: dict[bytes, tuple[float, int, str]] = {}
        #: The page's cookie sessions (web/session.py), shared by http and https.
        self.sessions = Sessions(reactor)
        #: Origins besides the request's own that a page may call from (behind a proxy).
        self.trusted_origins = origin_of(public_url)

    async def __call__(self, request) -> int | None:
        """The account id of the request's credentials; None (answer 401) when absent,
        wrong, locked out, sent in clear from afar, or a cookie without a same-origin proof."""
        try:
            identity = await self.identify(request)
        except CrossOrigin as refusal:
            log.info(
                "refused {method!r} {uri!r}: {why}",
                method=request.method,
                uri=request.uri,
                why=str(refusal),
            )
            return None
        return None if identity is None else identity.account_id

    async def identify(self, request) -> Identity | None:
        """Basic credentials when the request has an Authorization header, else the session
        cookie; raises CrossOrigin for a cookie-authenticated change from elsewhere."""
        header = request.getHeader(b"authorization")
        if header is not None:
            credentials = _basic(header)
            if credentials is None:
                return None
            return await self.verify_password(request, *credentials)
        token = session_token(request)
        if token is None or not self.transport_ok(request):
            return None
        session = self.sessions.get(token)
        if session is None:
            return None
        if request.method not in SAFE_METHODS:
            reason = cross_origin_reason(request, self.trusted_origins)
            if reason is not None:
                raise CrossOrigin(reason)
        return Identity(session.account_id, session.address, session=True)

    def transport_ok(self, request) -> bool:
        """RFC 7617 §4: Basic (and a login) sends the password in clear: TLS or loopback."""
        return bool(request.isSecure()) or _loopback(_client_ip(request))

    async def verify_password(self, request, user: str, password: str) -> Identity | None:
        """Check an address and password through the portal, the throttle and the cache."""
        ip = _client_ip(request)
        if not self.transport_ok(request):
            return None
        tag = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        now = self.reactor.seconds()
        hit = self._verified.get(tag)
        if hit is not None and hit[0] > now:
            return Identity(hit[1], hit[2])
        try:
            account_key = normalize_address(user)
        except InvalidAddress:
            account_key = None
        if self.throttle.locked(ip, account_key) > 0:
            return None
        creds = UsernamePassword(user.encode("utf-8"), password.encode("utf-8"))
        try:
            _, avatar, _ = await self.portal.login(creds, None, IAccount)
        except cred_error.UnauthorizedLogin:
            await self.throttle.hold(self.throttle.failed(ip, account_key))
            log.info("http login failed for {user!r} from {ip}", user=user, ip=ip)
            return None
        self.throttle.succeeded(ip, avatar.address)
        if len(self._verified) >= CACHE_ENTRIES:
            self._verified.clear()
        self._verified[tag] = (now + CACHE_SECONDS, avatar.account_id, avatar.address)
        return Identity(avatar.account_id, avatar.address)


def _basic(header: bytes | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, value = header.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep and user else None


def _client_ip(request) -> str:
    address = request.getClientAddress()
    return getattr(address, "host", "") or ""


def _loopback(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)
