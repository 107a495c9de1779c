"""Design rule 6: every mutation writes its journal entry in the same transaction, in order."""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from mailbox_appliance.store.accounts import DEFAULT_MAILBOXES
from mailbox_appliance.store.journal import changes_since_txn
from tests.support.databases import PostgreSQLMixin, SQLiteMixin
from tests.support.store import started_store


class _JournalTests:
    @inlineCallbacks
    def setUp(self):
        self.store = yield started_store(self, self.database_url())

    def changes(self, since: int = 0):
        return self.store.db.read(lambda conn: changes_since_txn(conn, since))

    @inlineCallbacks
    def test_every_mutation_is_journalled_in_order(self):
        yield self.store.add_domain("example.org")
        account_id = yield self.store.add_account("alice@example.org", "hash", 10**6)
        yield self.store.add_alias("info@example.org", ["alice@example.org"])
        ref = yield self.store.blobs.put(b"Subject: hi\r\n\r\nhello\r\n")
        yield self.store.deliver(ref, [(account_id, "INBOX")])
        yield self.store.set_quota("alice@example.org", 2 * 10**6)
        yield self.store.remove_alias("info@example.org")
        yield self.store.remove_account("alice@example.org")
        yield self.store.remove_domain("example.org")
        changes = yield self.changes()
        kinds = [c["kind"] for c in changes]
        self.assertEqual(
            kinds,
            ["domain.add", "account.add"]
            + ["mailbox.create"] * len(DEFAULT_MAILBOXES)
            + [
                "alias.add",
                "blob.add",
                "message.add",
                "account.quota",
                "alias.remove",
                "account.remove",
                "domain.remove",
            ],
        )
        seqs = [c["seq"] for c in changes]
        self.assertEqual(seqs, sorted(seqs))
        self.assertEqual({c["epoch"] for c in changes}, {1})
        added = changes[kinds.index("message.add")]["payload"]
        self.assertEqual((added["uid"], added["sha256"]), (1, ref.sha256))

    @inlineCallbacks
    def test_a_refused_mutation_leaves_no_journal_entry(self):
        yield self.store.add_domain("example.org")
        before = yield self.changes()
        yield self.assertFailure(self.store.add_domain("example.org"), Exception)
        self.assertEqual((yield self.changes()), before)

    @inlineCallbacks
    def test_new_accounts_get_the_special_use_mailboxes(self):
        yield self.store.add_domain("example.org")
        account_id = yield self.store.add_account("bob@example.org", "hash", 10**6)
        boxes = yield self.store.list_mailboxes(account_id)
        self.assertEqual(
            sorted((b["name"], b["special_use"]) for b in boxes), sorted(DEFAULT_MAILBOXES)
        )
        self.assertEqual(len({b["uidvalidity"] for b in boxes}), len(boxes))
        self.assertTrue(all(b["uidnext"] == 1 for b in boxes))


class SQLiteJournalTests(SQLiteMixin, _JournalTests, TestCase):
    pass


class PostgreSQLJournalTests(PostgreSQLMixin, _JournalTests, TestCase):
    pass
