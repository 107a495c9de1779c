"""What the mail protocols share: the factory's view of the appliance, and the session
plumbing of IMAP and POP3 (connection slot, address, output, throttled login)."""

from __future__ import annotations

import ipaddress

from twisted.cred import error as cred_error
from twisted.cred.credentials import UsernamePassword
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from mailbox_appliance.addresses import normalize_address
from mailbox_appliance.errors import InvalidAddress
from mailbox_appliance.interfaces import IAccount
from mailbox_appliance.netutil import no_delay
from mailbox_appliance.output import Output

log = Logger()


class MailServiceFactory(ServerFactory):
    """One listening service (``smtp``, ``imaps``...); subclasses add what differs."""

    services: tuple[str, ...] = ()

    def __init__(
        self,
        service: str,
        *,
        reactor,
        hostname: str,
        store,
        portal,
        throttle,
        limiter,
        settings,
        tls_context,
    ):
        if service not in self.services:
            raise ValueError(f"not a service of {type(self).__name__}: {service}")
        self.service = service
        self.reactor = reactor
        self.hostname = hostname
        self.store = store
        self.portal = portal
        #: Failed logins, counted across every protocol (throttle.py).
        self.throttle = throttle
        #: Connections, counted across the services of one protocol (monitor/limits.py).
        self.limiter = limiter
        self.settings = settings
        self.tls_context = tls_context


def peer_host(transport) -> str:
    """The client's address, asked when needed: behind a ``haproxy:`` listener the transport
    knows it only once the PROXY header has been read, after connectionMade."""
    if transport is None:
        return "unknown"
    return getattr(transport.getPeer(), "host", "unknown")


class LoginRefused(Exception):
    """A login did not succeed: ``locked`` (too many failures) or ``failed`` (bad password)."""

    def __init__(self, why: str):
        super().__init__(why)
        self.locked = why == "locked"


class MailSession(Protocol, TimeoutMixin):
    """What the IMAP and POP3 sessions share: the connection slot, the client's address, the
    response writer with back-pressure, closing, and a throttled password login."""

    out: Output | None = None
    _slot = False
    _closed = False

    @property
    def peer_ip(self) -> str:
        return peer_host(self.transport)

    @property
    def loopback(self) -> bool:
        try:
            address = ipaddress.ip_address(self.peer_ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack listener's IPv4 client
        return address.is_loopback

    def open_session(self, refusal: bytes, timeout: float, on_resume) -> bool:
        """Take a connection slot (or send ``refusal`` and close); set the session up."""
        self._slot_ip = self.peer_ip
        if not self.factory.limiter.acquire(self._slot_ip):
            log.warn("refused a connection from {ip}: too many", ip=self._slot_ip)
            self.transport.write(refusal)
            self.transport.loseConnection()
            self._closed = True
            return False
        self._slot = True
        no_delay(self.transport)
        self.out = Output(self.transport, self.factory.store.blobs, on_resume=on_resume)
        self.callLater = self.factory.reactor.callLater
        self.setTimeout(timeout)
        return True

    def release_slot(self) -> None:
        self._closed = True
        self.setTimeout(None)
        if self._slot:
            self._slot = False
            self.factory.limiter.release(self._slot_ip)

    def write(self, data: bytes) -> None:
        if not self._closed and self.out is not None:
            self.out.write(data)

    def close(self) -> None:
        """Close after what was written (a registered producer would hold the close off)."""
        if self._closed:
            return
        self._closed = True
        if self.out is not None:
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    async def check_password(self, user: str, password: str, protocol: str):
        """The account for ``user``, through the login throttle shared by every protocol."""
        throttle = self.factory.throttle
        try:
            account_key = normalize_address(user)
        except InvalidAddress:
            account_key = None
        if throttle.locked(self.peer_ip, account_key) > 0:
            raise LoginRefused("locked")
        creds = UsernamePassword(user.encode("utf-8"), password.encode("utf-8"))
        try:
            _, avatar, _ = await self.factory.portal.login(creds, None, IAccount)
        except cred_error.UnauthorizedLogin:
            await throttle.hold(throttle.failed(self.peer_ip, account_key))
            log.info(
                "{protocol} login failed for {user!r} from {ip}",
                protocol=protocol,
                user=user,
                ip=self.peer_ip,
            )
            raise LoginRefused("failed") from None
        throttle.succeeded(self.peer_ip, avatar.address)
        return avatar
