"""The outbound queue's store calls on SQLite and PostgreSQL: claims, settlements, DSN rows
and blob references (a row holds one reference to its message; the last one frees it)."""

from __future__ import annotations

import datetime

from sqlalchemy import select
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from mailbox_appliance import store as store_module
from mailbox_appliance.store import schema
from mailbox_appliance.store.delivery import Delivery
from mailbox_appliance.store.queue import Settlement
from tests.support.databases import PostgreSQLMixin, SQLiteMixin
from tests.support.store import started_store

LATER = datetime.datetime(2099, 1, 1, tzinfo=datetime.UTC)


class _QueueStoreTests:
    @inlineCallbacks
    def setUp(self):
        self.store = yield started_store(self, self.database_url())
        yield self.store.add_domain("example.test")
        self.alice = yield self.store.add_account("alice@example.test", "hash", 10**9)
        self.ref = yield self.store.blobs.put(b"Subject: hi\r\n\r\nbody\r\n")

    @inlineCallbacks
    def queue(self, recipients=("a@remote.test", "b@remote.test"), sender="alice@example.test"):
        outcome = yield self.store.accept_message(
            self.ref, local=[], remote=list(recipients), sender=sender
        )
        self.assertEqual(outcome.queued, len(recipients))
        rows = yield self.store.list_queue()
        return [row["id"] for row in rows]

    def refcount(self):
        b = schema.blobs
        query = select(b.c.refcount).where(b.c.sha256 == self.ref.sha256)
        return self.store.db.read(lambda conn: conn.execute(query).scalar())

    @inlineCallbacks
    def test_claimed_rows_are_not_claimed_again_until_released(self):
        ids = yield self.queue()
        first = yield self.store.claim_due(10)
        self.assertEqual(sorted(r["id"] for r in first), sorted(ids))
        self.assertEqual(first[0]["size"], self.ref.size)
        again = yield self.store.claim_due(10)
        self.assertEqual(again, [])
        released = yield self.store.release_claims()
        self.assertEqual(released, 2)
        again = yield self.store.claim_due(1)
        self.assertEqual(len(again), 1)

    @inlineCallbacks
    def test_a_claim_skips_domains_the_runner_has_enough_of_and_brings_small_content(self):
        yield self.queue(["a@slow.test", "b@slow.test", "c@other.test"])
        rows = yield self.store.claim_due(10, ["slow.test"])
        self.assertEqual([r["recipient"] for r in rows], ["c@other.test"])
        self.assertEqual(rows[0]["content"], b"Subject: hi\r\n\r\nbody\r\n")
        rows = yield self.store.claim_due(10)
        self.assertEqual(sorted(r["recipient"] for r in rows), ["a@slow.test", "b@slow.test"])

    @inlineCallbacks
    def test_sent_rows_go_and_the_last_one_frees_the_content(self):
        ids = yield self.queue()
        yield self.store.claim_due(10)
        self.assertEqual((yield self.refcount()), 2)
        yield self.store.settle([Settlement(ids[0], "sent")])
        self.assertEqual((yield self.refcount()), 1)
        yield self.store.settle([Settlement(ids[1], "sent")])
        self.assertEqual((yield self.refcount()), 0)
        self.assertEqual((yield self.store.list_queue()), [])

    @inlineCallbacks
    def test_a_retry_waits_and_remembers_why_and_a_delay_notice_is_owed_once(self):
        ids = yield self.queue(["a@remote.test"])
        yield self.store.claim_due(10)
        retry = Settlement(ids[0], "retry", LATER, "451 4.3.2 later", "4.3.2", "mx.r.test", True)
        yield self.store.settle([retry])
        rows = yield self.store.list_queue()
        relay, notice = sorted(rows, key=lambda r: r["kind"] != "relay")
        self.assertEqual((relay["attempts"], relay["status"]), (1, "4.3.2"))
        self.assertEqual(relay["remote_mta"], "mx.r.test")
        self.assertEqual(notice["kind"], "delay")
        self.assertEqual((yield self.refcount()), 2)  # the notice holds the content too
        self.assertEqual([r["id"] for r in (yield self.store.claim_due(10))], [notice["id"]])
        # A second delayed attempt owes no second notice.
        yield self.store.retry_queued(relay["id"])
        yield self.store.claim_due(10)
        yield self.store.settle([retry])
        kinds = sorted(r["kind"] for r in (yield self.store.list_queue()))
        self.assertEqual(kinds, ["delay", "relay"])

    @inlineCallbacks
    def test_a_bounce_keeps_the_content_until_its_dsn_is_sent(self):
        ids = yield self.queue(["a@remote.test"])
        yield self.store.claim_due(10)
        failed = Settlement(ids[0], "bounce", None, "550 5.1.1 no", "5.1.1", "mx.r.test")
        yield self.store.settle([failed])
        (row,) = yield self.store.claim_due(10)
        self.assertEqual(
            (row["kind"], row["status"], row["reason"]), ("bounce", "5.1.1", "550 5.1.1 no")
        )
        dsn = yield self.store.blobs.put(b"Subject: DSN\r\n\r\nreport\r\n")
        item = Delivery(dsn, ((self.alice, "INBOX"),), sender="", quota=self.store.quota_policy)
        outcome = yield self.store.dsn_sent([row["id"]], item)
        self.assertEqual(len(outcome.delivered), 1)
        self.assertEqual((yield self.store.list_queue()), [])
        self.assertEqual((yield self.refcount()), 0)

    @inlineCallbacks
    def test_mail_from_the_null_sender_is_never_bounced(self):
        ids = yield self.queue(["a@remote.test"], sender="")
        yield self.store.claim_due(10)
        yield self.store.settle([Settlement(ids[0], "bounce", None, "550 no", "5.0.0")])
        self.assertEqual((yield self.store.list_queue()), [])
        self.assertEqual((yield self.refcount()), 0)

    @inlineCallbacks
    def test_rows_deleted_meanwhile_are_skipped_by_a_settlement(self):
        ids = yield self.queue()
        yield self.store.claim_due(10)
        self.assertTrue((yield self.store.delete_queued(ids[0])))
        counts = yield self.store.settle([Settlement(ids[0], "sent"), Settlement(ids[1], "sent")])
        self.assertEqual(counts, 1)
        self.assertEqual((yield self.refcount()), 0)

    @inlineCallbacks
    def test_a_release_with_a_time_waits_until_then(self):
        ids = yield self.queue(["a@remote.test"])
        yield self.store.claim_due(10)
        yield self.store.settle([Settlement(ids[0], "release", LATER)])
        self.assertEqual((yield self.store.claim_due(10)), [])
        (row,) = yield self.store.list_queue()
        self.assertEqual(row["attempts"], 0)

    @inlineCallbacks
    def test_garbage_collection_frees_every_relayed_message_in_bounded_sweeps(self):
        """Relayed content is unreferenced once sent; a busy outbound queue frees more per
        interval than one sweep holds, so a collection goes on until nothing is left."""
        self.patch(store_module, "GC_SWEEP", 3)
        for n in range(7):
            ref = yield self.store.blobs.put(b"Subject: %d\r\n\r\nbody\r\n" % n)
            yield self.store.accept_message(ref, local=[], remote=["a@r.test"], sender="")
        rows = yield self.store.claim_due(100)
        yield self.store.settle([Settlement(row["id"], "sent") for row in rows])
        removed = yield self.store.collect_garbage(-1)
        self.assertEqual(removed, 7)

    @inlineCallbacks
    def test_routing_state_is_replaced_as_a_whole(self):
        yield self.store.save_routing_state(
            [{"route": "direct", "domain": "r.test", "state": {"samples": 3}}]
        )
        yield self.store.save_routing_state(
            [{"route": "relay", "domain": "", "state": {"listed": "bl.test"}}]
        )
        rows = yield self.store.routing_state()
        self.assertEqual(
            [(r["route"], r["domain"], r["state"]) for r in rows],
            [("relay", "", {"listed": "bl.test"})],
        )


class SQLiteQueueStoreTests(SQLiteMixin, _QueueStoreTests, TestCase):
    pass


class PostgreSQLQueueStoreTests(PostgreSQLMixin, _QueueStoreTests, TestCase):
    pass
