"""Who is asking: HTTP Basic authentication (RFC 7617) with the mail accounts.

The password is checked like every protocol's, through the portal and the login throttle
shared with SMTP, IMAP and POP3.  A tus client sends its credentials with every request (HEAD,
PATCH after PATCH), and an argon2id check costs ~0.3 s of CPU, so a verified pair is
remembered for ``CACHE_SECONDS``.  It is remembered under an HMAC with a key made at start,
never the password itself.  Credentials are refused over plain HTTP except from loopback.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets

from twisted.cred import error as cred_error
from twisted.cred.credentials import UsernamePassword
from twisted.logger import Logger

from mailbox_appliance.addresses import normalize_address
from mailbox_appliance.errors import InvalidAddress
from mailbox_appliance.interfaces import IAccount

log = Logger()

#: Seconds a verified user and password stay verified.
CACHE_SECONDS = 300.0
CACHE_ENTRIES = 10000


class HTTPAuthenticator:
    def __init__(self, reactor, portal, throttle):
        self.reactor = reactor
        self.portal = portal
        self.throttle = throttle
        self._key = secrets.token_bytes(32)
        self._verified: dict[bytes, tuple[float, int]] = {}

    async def __call__(self, request) -> int | None:
        """The account id of the request's credentials; None (answer 401) when absent,
        wrong, locked out, or sent in clear from afar."""
        credentials = _basic(request.getHeader(b"authorization"))
        if credentials is None:
            return None
        user, password = credentials
        ip = _client_ip(request)
        if not request.isSecure() and not _loopback(ip):
            return None  # RFC 7617 §4: Basic sends the password in clear
        tag = hmac.new(self._key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        now = self.reactor.seconds()
        hit = self._verified.get(tag)
        if hit is not None and hit[0] > now:
            return hit[1]
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
        self._verified[tag] = (now + CACHE_SECONDS, avatar.account_id)
        return avatar.account_id


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
