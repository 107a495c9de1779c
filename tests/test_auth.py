"""Passwords and the shared twisted.cred portal."""

from __future__ import annotations

import threading

from argon2 import PasswordHasher
from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from mailbox_appliance.auth import Account, AccountChecker, Passwords, make_portal
from mailbox_appliance.config import PasswordHashConfig
from mailbox_appliance.interfaces import IAccount
from tests.support.databases import sqlite_url
from tests.support.store import started_store

CHEAP = PasswordHashConfig(time_cost=1, memory_kib=8, parallelism=1)


class PortalTests(TestCase):
    @inlineCallbacks
    def setUp(self):
        self.store = yield started_store(self, sqlite_url(self.mktemp()))
        self.passwords = Passwords(reactor, CHEAP, threads=1)
        self.passwords.start()
        self.addCleanup(self.passwords.stop)
        self.portal = make_portal(self.store, self.passwords)
        yield self.store.add_domain("example.org")
        password_hash = yield self.passwords.hash("correct horse")
        self.account_id = yield self.store.add_account("alice@example.org", password_hash, 10**9)

    def login(self, username, password):
        creds = credentials.UsernamePassword(username, password)
        return self.portal.login(creds, None, IAccount)

    @inlineCallbacks
    def test_right_password_gives_the_account_avatar(self):
        interface, avatar, logout = yield self.login(b"alice@example.org", b"correct horse")
        self.assertIs(interface, IAccount)
        self.assertTrue(verifyObject(IAccount, avatar))
        self.assertEqual(
            (avatar.account_id, avatar.address), (self.account_id, "alice@example.org")
        )

    @inlineCallbacks
    def test_the_address_is_case_insensitive(self):
        _, avatar, _ = yield self.login(b"Alice@Example.ORG", b"correct horse")
        self.assertEqual(avatar.address, "alice@example.org")

    @inlineCallbacks
    def test_wrong_password_missing_account_and_bad_address_are_refused_alike(self):
        for username, password in [
            (b"alice@example.org", b"wrong"),
            (b"bob@example.org", b"correct horse"),
            (b"not an address", b"x"),
            (b"alice@example.org", b""),
        ]:
            yield self.assertFailure(self.login(username, password), error.UnauthorizedLogin)

    @inlineCallbacks
    def test_a_disabled_account_cannot_log_in(self):
        from sqlalchemy import update

        from mailbox_appliance.store import schema

        yield self.store.db.write(
            lambda conn: conn.execute(update(schema.accounts).values(disabled=True))
        )
        yield self.assertFailure(
            self.login(b"alice@example.org", b"correct horse"), error.UnauthorizedLogin
        )

    @inlineCallbacks
    def test_hashes_are_argon2id_and_never_the_password(self):
        account = yield self.store.account("alice@example.org")
        self.assertTrue(account["password_hash"].startswith("$argon2id$"))
        self.assertNotIn("correct horse", account["password_hash"])

    @inlineCallbacks
    def test_a_weaker_hash_is_upgraded_at_the_next_login(self):
        old = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1, hash_len=16)
        yield self.store.set_password("alice@example.org", old.hash("correct horse"))
        yield self.login(b"alice@example.org", b"correct horse")
        account = yield self.store.account("alice@example.org")
        self.assertFalse(self.passwords.hasher.check_needs_rehash(account["password_hash"]))
        yield self.login(b"alice@example.org", b"correct horse")

    @inlineCallbacks
    def test_hashing_and_verifying_run_off_the_reactor_thread(self):
        real = self.passwords.hasher
        seen = []

        class Spy:
            def hash(self, password):
                seen.append(threading.current_thread().name)
                return real.hash(password)

            def verify(self, password_hash, password):
                seen.append(threading.current_thread().name)
                return real.verify(password_hash, password)

            def check_needs_rehash(self, password_hash):
                return real.check_needs_rehash(password_hash)

        self.patch(self.passwords, "hasher", Spy())
        yield self.login(b"alice@example.org", b"correct horse")
        yield self.passwords.hash("x")
        self.assertEqual(len(seen), 2)
        for name in seen:
            self.assertIn("auth-hash", name)

    def test_checker_and_avatar_provide_their_interfaces(self):
        self.assertTrue(
            verifyObject(ICredentialsChecker, AccountChecker(self.store, self.passwords))
        )
        self.assertTrue(verifyObject(IAccount, Account(1, "a@example.org")))
