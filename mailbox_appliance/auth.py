"""Passwords and the twisted.cred portal every protocol shares.

Passwords are hashed with argon2id (RFC 9106) through argon2-cffi; hashing and verifying are
deliberately slow, so they run on their own small thread pool, never on the reactor.  Clear
passwords are never stored or logged.  A hash made with older parameters is upgraded on the next
successful login.
"""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from mailbox_appliance.addresses import normalize_address
from mailbox_appliance.errors import InvalidAddress, NoSuchAccount
from mailbox_appliance.interfaces import IAccount

log = Logger()

# Verified against when an account does not exist, so a missing account takes as long as a
# wrong password and the timing does not tell which addresses exist.
_DUMMY_PASSWORD = "not-a-password"


class Passwords:
    """argon2id hashing on a dedicated thread pool."""

    def __init__(self, reactor, settings, threads: int = 2):
        self.reactor = reactor
        self.hasher = PasswordHasher(
            time_cost=settings.time_cost,
            memory_cost=settings.memory_kib,
            parallelism=settings.parallelism,
            type=Type.ID,
        )
        self.pool = ThreadPool(minthreads=0, maxthreads=threads, name="auth-hash")
        self._dummy_hash: str | None = None

    def start(self) -> None:
        self.pool.start()

    def stop(self) -> None:
        self.pool.stop()

    def hash(self, password: str) -> Deferred[str]:
        return deferToThreadPool(self.reactor, self.pool, self.hasher.hash, password)

    def verify(self, password_hash: str | None, password: str) -> Deferred[tuple[bool, bool]]:
        """Fires with (matches, needs_rehash)."""
        return deferToThreadPool(self.reactor, self.pool, self._verify_thd, password_hash, password)

    def _verify_thd(self, password_hash: str | None, password: str) -> tuple[bool, bool]:
        if password_hash is None:  # no such account: spend the same time, then refuse
            if self._dummy_hash is None:
                self._dummy_hash = self.hasher.hash(_DUMMY_PASSWORD)
            password_hash = self._dummy_hash
            password = "\0" + password  # can never match the dummy
        try:
            self.hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False, False
        if password_hash is self._dummy_hash:
            return False, False
        return True, self.hasher.check_needs_rehash(password_hash)


@implementer(IAccount)
class Account:
    def __init__(self, account_id: int, address: str):
        self.account_id = account_id
        self.address = address

    def __repr__(self) -> str:
        return f"<Account {self.address}>"


@implementer(ICredentialsChecker)
class AccountChecker:
    """Checks a username (the full address) and password against the store's accounts."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, store, passwords: Passwords):
        self.store = store
        self.passwords = passwords

    @inlineCallbacks
    def requestAvatarId(self, creds):
        username = creds.username
        if isinstance(username, bytes):
            username = username.decode("utf-8", "replace")
        password = creds.password
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        try:
            address = normalize_address(username)
            account = yield self.store.account(address)
        except (InvalidAddress, NoSuchAccount):
            account = None
        usable = account is not None and not account["disabled"]
        ok, rehash = yield self.passwords.verify(
            account["password_hash"] if usable else None, password
        )
        if not ok:
            raise error.UnauthorizedLogin("invalid credentials")
        if rehash:
            new_hash = yield self.passwords.hash(password)
            yield self.store.set_password(address, new_hash)
            log.info("upgraded the password hash of {address}", address=address)
        return (account["id"], address)


@implementer(IRealm)
class AccountRealm:
    """Gives every protocol an :class:`Account` avatar; protocols adapt it to their own."""

    def requestAvatar(self, avatar_id, mind, *interfaces):
        account_id, address = avatar_id
        if IAccount in interfaces:
            return IAccount, Account(account_id, address), lambda: None
        raise error.UnhandledCredentials("this realm only gives IAccount avatars")


def make_portal(store, passwords: Passwords, realm: IRealm | None = None) -> Portal:
    """The portal every protocol logs in through (checkers registered explicitly)."""
    return Portal(realm or AccountRealm(), [AccountChecker(store, passwords)])
