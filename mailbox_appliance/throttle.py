"""Failed-login throttling shared by SMTP AUTH, IMAP LOGIN/AUTHENTICATE and POP3 USER/PASS.

Password guessing is slowed down the way Dovecot's auth penalty and Postfix's anvil do it:

* Every failure holds back its reply, ``delay`` seconds for the first and twice as long for each
  further one, up to ``max_delay``.  The count used is the larger of the client IP's and the
  account's, so neither many accounts from one IP nor one account from many IPs is cheap.
* After ``lockout_after`` failures an IP, or an account, is locked for ``lockout_time`` seconds:
  the protocols refuse attempts with a temporary error without checking the password.  An
  account lock applies from every IP (distributed guessing against one mailbox); an IP lock
  applies to every account (one client trying many mailboxes).
* IPv6 clients are counted per /64, because one subscriber usually gets a whole /64 and can
  change the low 64 bits at will.  IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``, what a
  dual-stack listener reports for IPv4 clients) count as their IPv4 address.

Decay: each key keeps a failure count and the time of its last failure.  When the last failure
is ``lockout_time`` or more seconds old the whole count is forgotten; each new failure therefore
extends the memory of the earlier ones.  A lock starts at the failure that reaches
``lockout_after`` and ends ``lockout_time`` later, which is exactly when the count is forgotten
unless more failures were recorded meanwhile; then the next failure locks the key again at once.

Everything is in memory and bounded: each table (IPs, accounts) holds at most ``max_tracked``
keys, the least recently failed one is forgotten first, and expired keys are dropped as they
are met.  Under a flood of distinct keys this can forget an old lock early; that is the price of
not letting an attacker exhaust memory.  Nothing here does I/O; time comes from the injected
clock, so tests drive it with :class:`twisted.internet.task.Clock`.  Passwords are never seen.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

log = Logger()

# 2.0 ** n overflows a float past ~1023; any delay this far up is capped at max_delay anyway.
_MAX_DOUBLINGS = 64


@dataclass(frozen=True)
class ThrottleSettings:
    #: Seconds the reply to the first failure is held back.
    delay: float = 1.0
    #: The held-back delay doubles with each failure, up to this many seconds.
    max_delay: float = 30.0
    #: Failures (per IP, or per account) before a temporary lockout.
    lockout_after: int = 10
    #: Seconds a lockout lasts; also how long failures are remembered after the last one.
    lockout_time: float = 900.0
    #: Bound on remembered keys per table (oldest forgotten first), so memory stays bounded.
    max_tracked: int = 100_000

    def __post_init__(self) -> None:
        # Bad values would silently disable throttling (or lock everyone out), so refuse them.
        if self.delay < 0 or self.max_delay < 0:
            raise ValueError("delay and max_delay must not be negative")
        if self.lockout_after < 1:
            raise ValueError("lockout_after must be at least 1")
        if self.lockout_time <= 0:
            raise ValueError("lockout_time must be positive")
        if self.max_tracked < 1:
            raise ValueError("max_tracked must be at least 1")


class _Failures:
    """Failure count of one key, when the last failure was, and until when the key is locked."""

    __slots__ = ("count", "last", "locked_until")

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0
        self.locked_until = 0.0


def ip_key(ip: str) -> str:
    """The key an IP is counted under: IPv4 as is, IPv6 by its /64, anything else verbatim."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip  # not an IP address (a UNIX socket path, say): still count it
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            # Otherwise every IPv4 client of a dual-stack listener would share ::ffff:0:0/64.
            return str(address.ipv4_mapped)
        # Through int, which also drops any %scope suffix.
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


class _Table:
    """Failures per key, least recently failed first, at most ``max_tracked`` keys."""

    def __init__(self, kind: str, settings: ThrottleSettings) -> None:
        self.kind = kind
        self.settings = settings
        self.entries: OrderedDict[str, _Failures] = OrderedDict()

    def _expired(self, entry: _Failures, now: float) -> bool:
        return now - entry.last >= self.settings.lockout_time

    def prune(self, now: float) -> None:
        """Drop expired keys from the front: the order is by last failure, oldest first."""
        while self.entries:
            entry = next(iter(self.entries.values()))
            if not self._expired(entry, now):
                break
            self.entries.popitem(last=False)

    def get(self, key: str, now: float) -> _Failures | None:
        entry = self.entries.get(key)
        if entry is not None and self._expired(entry, now):
            del self.entries[key]
            return None
        return entry

    def remaining(self, key: str, now: float) -> float:
        entry = self.get(key, now)
        if entry is None:
            return 0.0
        return max(0.0, entry.locked_until - now)

    def fail(self, key: str, now: float) -> int:
        """Count a failure of ``key``, lock it if this reaches the limit; the new count."""
        entry = self.get(key, now)
        if entry is None:
            entry = _Failures()
            while len(self.entries) >= self.settings.max_tracked:
                self.entries.popitem(last=False)
            self.entries[key] = entry
        else:
            self.entries.move_to_end(key)
        entry.count += 1
        entry.last = now
        if entry.count >= self.settings.lockout_after and entry.locked_until <= now:
            # Failures recorded while already locked do not lengthen the lock (nor log again).
            entry.locked_until = now + self.settings.lockout_time
            log.warn(
                "login lockout for {key} after {n} failures ({seconds}s)",
                key=key,
                kind=self.kind,
                n=entry.count,
                seconds=self.settings.lockout_time,
            )
        return entry.count

    def forget(self, key: str) -> None:
        self.entries.pop(key, None)


class LoginThrottle:
    """Failed-login delays and lockouts per client IP and per account, shared by all protocols."""

    def __init__(
        self,
        clock: IReactorTime,
        settings: ThrottleSettings = ThrottleSettings(),  # noqa: B008 (frozen: safe to share)
    ) -> None:
        self.clock = clock
        self.settings = settings
        self._ips = _Table("ip", settings)
        self._accounts = _Table("account", settings)

    def _now(self) -> float:
        now = self.clock.seconds()
        self._ips.prune(now)
        self._accounts.prune(now)
        return now

    def locked(self, ip: str, account: str | None) -> float:
        """Seconds until this IP or this account may try again (0.0 when not locked).

        Callers check this before the password, so a locked key costs no password hashing.
        """
        now = self._now()
        remaining = self._ips.remaining(ip_key(ip), now)
        if account is not None:
            remaining = max(remaining, self._accounts.remaining(account, now))
        return remaining

    def failed(self, ip: str, account: str | None) -> float:
        """Record a failure of ``account`` from ``ip``; seconds to hold back the failure reply.

        ``account`` is the normalized address, or None when it is unknown or unparseable; then
        only the IP is counted, so garbage names cannot fill the account table.
        """
        now = self._now()
        n = self._ips.fail(ip_key(ip), now)
        if account is not None:
            n = max(n, self._accounts.fail(account, now))
        doubled = self.settings.delay * 2.0 ** min(n - 1, _MAX_DOUBLINGS)
        return float(min(self.settings.max_delay, doubled))

    def succeeded(self, ip: str, account: str) -> None:
        """A successful login forgets the account's failures and that IP's failures.

        A user who mistyped is not punished later.  An attacker logging in to an account of
        their own resets only their IP: a victim account's count is untouched.
        """
        self._now()
        self._ips.forget(ip_key(ip))
        self._accounts.forget(account)

    def hold(self, seconds: float) -> Deferred[None]:
        """A Deferred that fires after ``seconds`` on the clock; 0 fires at once.

        The failure reply waits on this; holding a reply back never blocks the reactor.
        """
        if seconds <= 0:
            return succeed(None)
        return deferLater(self.clock, seconds)
