"""Driving the IMAP server without a network: a real store and portal, a StringTransport and
a Clock for the session's timers (login timeout, idle timeout, failed-login delays).

The store and the password hashing run on their threads with trial's reactor; the protocol's
own timers run on the Clock, so tests decide when time passes.
"""

from __future__ import annotations

import time

from twisted.cred.portal import Portal
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport

from mailbox_appliance.auth import Passwords, make_portal
from mailbox_appliance.config import IMAPConfig, PasswordHashConfig
from mailbox_appliance.imap.factory import IMAPFactory
from mailbox_appliance.monitor.limits import ConnectionLimiter
from mailbox_appliance.throttle import LoginThrottle, ThrottleSettings
from tests.support.config import CHEAP_HASH
from tests.support.databases import sqlite_url
from tests.support.store import started_store

ALICE = "alice@example.test"
PASSWORD = "correct horse battery staple"
LOOPBACK = IPv4Address("TCP", "127.0.0.1", 40000)
REMOTE = IPv4Address("TCP", "192.0.2.1", 1234)
#: Stands in for the server's TLS context; the fake transport only records it.
TLS_CONTEXT = object()


class TLSStringTransport(StringTransport):
    """A StringTransport that records ``startTLS`` (a real one would begin the handshake)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.tls_contexts: list[object] = []

    def startTLS(self, context) -> None:
        self.tls_contexts.append(context)


class CountingPortal(Portal):
    """The real portal, counting the logins it was asked to check (i.e. passwords verified)."""

    def __init__(self, portal: Portal):
        super().__init__(portal.realm, portal.checkers.values())
        self.attempts = 0

    def login(self, credentials, mind, *interfaces):
        self.attempts += 1
        return super().login(credentials, mind, *interfaces)


class World:
    """What IMAP sessions share: store, portal, throttle, limiter, and the Clock."""

    def __init__(self, store, portal: CountingPortal, account_id: int):
        self.store = store
        self.portal = portal
        self.account_id = account_id

    def factory(
        self,
        service: str = "imap",
        *,
        clock: Clock,
        throttle: ThrottleSettings = ThrottleSettings(),  # noqa: B008 (frozen)
        limiter: ConnectionLimiter | None = None,
        **settings,
    ) -> IMAPFactory:
        return IMAPFactory(
            service,
            reactor=clock,
            hostname="mail.example.test",
            store=self.store,
            portal=self.portal,
            throttle=LoginThrottle(clock, throttle),
            limiter=limiter or ConnectionLimiter(100, 100),
            settings=IMAPConfig(**settings),
            tls_context=TLS_CONTEXT,
        )


@inlineCallbacks
def started_world(testcase):
    """A started store on a SQLite file with the account ALICE (password PASSWORD)."""
    store = yield started_store(testcase, sqlite_url(testcase.mktemp()))
    passwords = Passwords(reactor, PasswordHashConfig(**CHEAP_HASH), threads=1)
    passwords.start()
    testcase.addCleanup(passwords.stop)
    yield store.add_domain("example.test")
    password_hash = yield passwords.hash(PASSWORD)
    account_id = yield store.add_account(ALICE, password_hash, 10**8)
    return World(store, CountingPortal(make_portal(store, passwords)), account_id)


class Session:
    """One IMAPServer on a TLSStringTransport; what it writes is read as CRLF lines."""

    def __init__(self, factory: IMAPFactory, peer: IPv4Address = LOOPBACK):
        self.factory = factory
        self.clock: Clock = factory.reactor
        self.transport = TLSStringTransport(peerAddress=peer)
        self.protocol = factory.buildProtocol(peer)
        self.protocol.makeConnection(self.transport)

    def value(self) -> bytes:
        return self.transport.value()

    def take(self) -> list[bytes]:
        """The complete lines written since the last take (without CRLF)."""
        data = self.transport.value()
        end = data.rfind(b"\r\n") + 2
        self.transport.clear()
        self.transport.write(data[end:])  # keep a partial line for next time
        return data[:end].split(b"\r\n")[:-1] if end >= 2 else []

    def send(self, data: bytes) -> list[bytes]:
        """Deliver ``data`` to the server; the lines it wrote synchronously."""
        self.protocol.dataReceived(data)
        return self.take()

    @inlineCallbacks
    def until_line(self, prefix: bytes, timeout: float = 10.0):
        """Spin the reactor until a line starting with ``prefix`` was written; all lines so far."""
        lines: list[bytes] = []
        deadline = time.monotonic() + timeout
        while True:
            lines.extend(self.take())
            if any(line.startswith(prefix) for line in lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"no line starting with {prefix!r}; got {lines!r}")
            yield deferLater(reactor, 0.002, lambda: None)

    @inlineCallbacks
    def command(self, data: bytes, tag: bytes | None = None):
        """Send ``data`` and wait for the tagged answer to ``tag`` (its first word by default)."""
        tag = tag or data.split(b" ", 1)[0]
        self.protocol.dataReceived(data)
        lines = yield self.until_line(tag + b" ")
        return lines

    @inlineCallbacks
    def login(self):
        lines = yield self.command(f'L1 LOGIN {ALICE} "{PASSWORD}"\r\n'.encode())
        assert lines[-1].startswith(b"L1 OK "), lines
        return lines


@inlineCallbacks
def spin_until(predicate, timeout: float = 10.0, what: str = "a condition"):
    """Let trial's reactor run (store and hashing threads) until ``predicate()`` is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        yield deferLater(reactor, 0.002, lambda: None)
