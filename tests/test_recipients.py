"""Recipient resolution, quotas that grow, and the outbound queue, at the store level."""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailbox_appliance.store import QuotaPolicy, schema
from mailbox_appliance.store.delivery import GONE, OVER_QUOTA
from mailbox_appliance.store.quota import FIXED, admit
from tests.support.databases import PostgreSQLMixin, SQLiteMixin
from tests.support.store import started_store

KiB, MiB = 1024, 1024**2


class AdmitTests(SynchronousTestCase):
    def test_fixed_quota_admits_what_fits_and_never_grows(self):
        self.assertEqual(admit(90, 100, 10, FIXED), (True, 100))
        self.assertEqual(admit(90, 100, 11, FIXED), (False, 100))

    def test_quota_grows_when_use_passes_grow_at(self):
        policy = QuotaPolicy(grow_at=0.9, grow_by=100, max=1000)
        self.assertEqual(admit(80, 100, 5, policy), (True, 100))  # 85 < 90: no growth
        self.assertEqual(admit(80, 100, 15, policy), (True, 200))  # 95 > 90: grows once

    def test_one_big_message_grows_the_quota_several_times_but_not_past_max(self):
        policy = QuotaPolicy(grow_at=0.9, grow_by=100, max=450)
        self.assertEqual(admit(0, 100, 350, policy), (True, 400))
        self.assertEqual(admit(0, 100, 449, policy), (True, 450))
        self.assertEqual(admit(0, 100, 451, policy), (False, 450))


class _StoreTests:
    @inlineCallbacks
    def setUp(self):
        self.store = yield started_store(
            self, self.database_url(), quota_policy=QuotaPolicy(0.9, 10 * KiB, 40 * KiB)
        )
        for domain in ("example.test", "other.test"):
            yield self.store.add_domain(domain)
        self.alice = yield self.store.add_account("alice@example.test", "x", 20 * KiB)
        self.bob = yield self.store.add_account("bob@other.test", "x", 20 * KiB)

    @inlineCallbacks
    def test_account_resolves_to_itself(self):
        r = yield self.store.resolve("alice@example.test")
        self.assertTrue(r.local_domain)
        self.assertEqual(
            [(t.account_id, t.address) for t in r.local], [(self.alice, "alice@example.test")]
        )
        self.assertEqual(r.remote, ())

    @inlineCallbacks
    def test_unknown_user_in_a_local_domain_resolves_to_nothing(self):
        r = yield self.store.resolve("nobody@example.test")
        self.assertEqual((r.local_domain, r.exists), (True, False))

    @inlineCallbacks
    def test_foreign_domain_is_not_local(self):
        r = yield self.store.resolve("someone@elsewhere.test")
        self.assertEqual((r.local_domain, r.exists), (False, False))

    @inlineCallbacks
    def test_alias_expands_to_accounts_aliases_and_remote_addresses(self):
        yield self.store.add_alias("team@example.test", ["alice@example.test", "ops@example.test"])
        yield self.store.add_alias("ops@example.test", ["bob@other.test", "pager@remote.test"])
        # A loop back to the first alias is ignored, not followed forever.
        yield self.store.add_alias("ops@example.test", ["team@example.test"])
        r = yield self.store.resolve("team@example.test")
        self.assertEqual(
            sorted(t.address for t in r.local), ["alice@example.test", "bob@other.test"]
        )
        self.assertEqual(r.remote, ("pager@remote.test",))

    @inlineCallbacks
    def test_accept_message_files_local_copies_and_queues_remote_ones_with_one_blob(self):
        ref = yield self.store.blobs.put(b"Return-Path: <s@x.test>\r\n\r\nbody\r\n" * 300)
        outcome = yield self.store.accept_message(
            ref,
            local=[self.alice, self.bob],
            remote=["far@remote.test", "away@remote.test"],
            sender="s@x.test",
            skip_bytes=25,
        )
        self.assertEqual(
            sorted(d.account_id for d in outcome.delivered), sorted([self.alice, self.bob])
        )
        self.assertEqual((outcome.refused, outcome.queued), ([], 2))
        queue = yield self.store.list_queue()
        self.assertEqual(
            [(q["kind"], q["recipient"], q["sender"]) for q in queue],
            [
                ("relay", "far@remote.test", "s@x.test"),
                ("relay", "away@remote.test", "s@x.test"),
            ],
        )
        self.assertEqual(queue[0]["size"], ref.size - 25)
        refcount = yield self.store.db.read(
            lambda c: (
                c.execute(schema.blobs.select().where(schema.blobs.c.sha256 == ref.sha256))
                .one()
                .refcount
            )
        )
        self.assertEqual(refcount, 3)  # one message row + two queue rows

    @inlineCallbacks
    def test_quota_grows_as_mail_arrives_up_to_max_then_refuses(self):
        sizes = []
        for i in range(5):
            ref = yield self.store.blobs.put(bytes([65 + i]) * (9 * KiB))
            outcome = yield self.store.accept_message(ref, local=[self.alice], remote=[], sender="")
            sizes.append((bool(outcome.delivered), bool(outcome.refused)))
        account = yield self.store.account("alice@example.test")
        # 20 KiB grows to 30 and 40 KiB (max); the fifth 9 KiB message does not fit in 40.
        self.assertEqual(account["quota_bytes"], 40 * KiB)
        self.assertEqual(account["used_bytes"], 4 * 9 * KiB)
        self.assertEqual(sizes, [(True, False)] * 4 + [(False, True)])

    @inlineCallbacks
    def test_over_quota_recipient_fails_alone(self):
        # Bob is at the growth maximum, with 100 bytes to spare.
        yield self.store.set_quota("bob@other.test", 40 * KiB)
        yield self.store.db.write(
            lambda c: c.execute(
                schema.accounts.update()
                .values(used_bytes=40 * KiB - 100)
                .where(schema.accounts.c.id == self.bob)
            )
        )
        ref = yield self.store.blobs.put(b"z" * 5000)
        outcome = yield self.store.accept_message(
            ref, local=[self.alice, self.bob], remote=[], sender=""
        )
        self.assertEqual([d.account_id for d in outcome.delivered], [self.alice])
        self.assertEqual(outcome.refused, [(self.bob, OVER_QUOTA)])

    @inlineCallbacks
    def test_account_removed_after_lookup_is_refused_alone(self):
        carol = yield self.store.add_account("carol@example.test", "x", 20 * KiB)
        yield self.store.remove_account("carol@example.test")
        ref = yield self.store.blobs.put(b"w" * 500)
        outcome = yield self.store.accept_message(
            ref, local=[self.alice, carol], remote=[], sender=""
        )
        self.assertEqual([d.account_id for d in outcome.delivered], [self.alice])
        self.assertEqual(outcome.refused, [(carol, GONE)])

    @inlineCallbacks
    def test_bounces_owed_are_queued_with_their_reason(self):
        ref = yield self.store.blobs.put(b"y" * 100)
        added = yield self.store.add_bounces(
            ref, "s@x.test", [("bob@other.test", "552 5.2.2 full")]
        )
        self.assertEqual(added, 1)
        (row,) = yield self.store.list_queue()
        self.assertEqual(
            (row["kind"], row["sender"], row["reason"]), ("bounce", "s@x.test", "552 5.2.2 full")
        )
        self.assertEqual((yield self.store.add_bounces(ref, "", [("b@x", "r")])), 0)


class SQLiteStoreTests(SQLiteMixin, _StoreTests, TestCase):
    pass


class PostgreSQLStoreTests(PostgreSQLMixin, _StoreTests, TestCase):
    pass
