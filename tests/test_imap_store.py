"""The store API the IMAP server is built on: mailboxes, entries, flags, copy/move, expunge,
append, quota, recent claiming and change notification.

Every test runs against a real store: a migrated SQLite file, and again on PostgreSQL when
``MAILBOX_APPLIANCE_TEST_POSTGRES`` names a server (skipped, with that reason, otherwise).
Blobs are real (inline rows, and files for large content); nothing is mocked.
"""

from __future__ import annotations

import datetime
import os
import time

from sqlalchemy import func, select
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from mailbox_appliance.errors import MailboxError
from mailbox_appliance.store import entries, folders, mailboxes, schema
from mailbox_appliance.store.journal import changes_since_txn
from mailbox_appliance.store.quota import QuotaPolicy
from tests.support.databases import PostgreSQLMixin, SQLiteMixin
from tests.support.store import started_store

log = Logger()

SEEN, ANSWERED, FLAGGED, DELETED, DRAFT = 1, 2, 4, 8, 16
QUOTA = 10**7


def _body(n: int, size: int = 0) -> bytes:
    text = f"Subject: message {n}\r\nMessage-ID: <{n}@example.test>\r\n\r\nbody {n}\r\n"
    return text.encode() + b"x" * max(0, size - len(text))


class _ImapStoreTests:
    @inlineCallbacks
    def setUp(self):
        self.store = yield started_store(self, self.database_url())
        yield self.store.add_domain("example.test")
        self.alice = yield self.store.add_account("alice@example.test", "hash", QUOTA)
        self.inbox = yield self.box_id("INBOX")

    # -- helpers ----------------------------------------------------------------------------

    @inlineCallbacks
    def box_id(self, name: str, account_id: int | None = None):
        status = yield self.store.mailbox_status(account_id or self.alice, name)
        return status["id"]

    @inlineCallbacks
    def deliver(self, n: int, mailbox: str = "INBOX", flags=(), size: int = 0, **kw):
        """Deliver message ``n``; returns its UID."""
        ref = yield self.store.blobs.put(_body(n, size))
        (delivered,) = yield self.store.deliver(ref, [(self.alice, mailbox)], flags=flags, **kw)
        return delivered.uid

    @inlineCallbacks
    def deliver_many(self, count: int, mailbox: str = "INBOX", start: int = 0):
        """Deliver ``count`` messages at once (they share batches and commits)."""
        delivered = yield gatherResults(
            [self.deliver(start + n, mailbox) for n in range(count)], consumeErrors=True
        )
        return sorted(delivered)

    def read(self, fn):
        return self.store.db.read(fn)

    def rows(self, table, *where):
        return self.read(
            lambda conn: [dict(r._mapping) for r in conn.execute(select(table).where(*where))]
        )

    def scalar(self, query):
        return self.read(lambda conn: conn.execute(query).scalar())

    @inlineCallbacks
    def used(self, account_id: int | None = None):
        a = schema.accounts
        used = yield self.scalar(select(a.c.used_bytes).where(a.c.id == (account_id or self.alice)))
        return used

    @inlineCallbacks
    def message_refcounts(self):
        rows = yield self.rows(schema.messages)
        return {row["id"]: row["refcount"] for row in rows}

    @inlineCallbacks
    def blob_refcount(self, sha256: str):
        rows = yield self.rows(schema.blobs, schema.blobs.c.sha256 == sha256)
        return rows[0]["refcount"] if rows else None

    @inlineCallbacks
    def journal_kinds(self, since: int = 0):
        changes = yield self.read(lambda conn: changes_since_txn(conn, since, limit=100000))
        return [change["kind"] for change in changes]

    @inlineCallbacks
    def last_seq(self):
        j = schema.journal
        seq = yield self.scalar(select(func.max(j.c.seq)))
        return seq or 0

    @inlineCallbacks
    def assertRefused(self, d, code: str):
        error = yield self.assertFailure(d, MailboxError)
        self.assertEqual(error.code, code, str(error))
        self.assertTrue(str(error))
        self.assertNotIn("\n", str(error))
        return error

    @inlineCallbacks
    def names(self, account_id: int | None = None):
        boxes = yield self.store.list_mailboxes(account_id or self.alice)
        return sorted(box["name"] for box in boxes)

    def watch(self, mailbox_id: int):
        calls: list[int] = []
        handle = self.store.watch(mailbox_id, calls.append)
        self.addCleanup(handle.cancel)
        return calls

    # -- errors -----------------------------------------------------------------------------

    def test_mailbox_error_refuses_unknown_codes(self):
        self.assertRaises(ValueError, MailboxError, "NOPE", "why")
        error = MailboxError(MailboxError.LIMIT, "too many")
        self.assertEqual((error.code, str(error)), ("LIMIT", "too many"))

    # -- create -----------------------------------------------------------------------------

    @inlineCallbacks
    def test_create_makes_missing_parents(self):
        row = yield self.store.create_mailbox(self.alice, "Projects/2026/Q1")
        self.assertEqual(
            (row["name"], row["special_use"], row["uidnext"]), ("Projects/2026/Q1", None, 1)
        )
        self.assertEqual(row["first_recent"], 1)
        names = yield self.names()
        for name in ("Projects", "Projects/2026", "Projects/2026/Q1"):
            self.assertIn(name, names)
        boxes = yield self.store.list_mailboxes(self.alice)
        self.assertEqual(len({b["uidvalidity"] for b in boxes}), len(boxes))
        # A sibling reuses the parents that exist.
        yield self.store.create_mailbox(self.alice, "Projects/2026/Q2")
        self.assertEqual(len((yield self.names())), len(names) + 1)

    @inlineCallbacks
    def test_create_with_a_special_use_attribute(self):
        row = yield self.store.create_mailbox(self.alice, "Old/Sent", "\\Sent")
        self.assertEqual(row["special_use"], "\\Sent")
        parent = yield self.rows(schema.mailboxes, schema.mailboxes.c.name == "Old")
        self.assertIsNone(parent[0]["special_use"])
        yield self.assertRefused(
            self.store.create_mailbox(self.alice, "Odd", "\\Nonsense"), "CANNOT"
        )

    @inlineCallbacks
    def test_create_an_existing_mailbox_is_alreadyexists(self):
        yield self.assertRefused(self.store.create_mailbox(self.alice, "INBOX"), "ALREADYEXISTS")
        yield self.store.create_mailbox(self.alice, "a/b")
        yield self.assertRefused(self.store.create_mailbox(self.alice, "a/b"), "ALREADYEXISTS")
        yield self.assertRefused(self.store.create_mailbox(self.alice, "a"), "ALREADYEXISTS")

    @inlineCallbacks
    def test_create_refuses_invalid_names_with_cannot(self):
        before = yield self.names()
        for name in ["", "/a", "a/", "a//b", "/", "a*", "b%c", "x" * 1025, "tab\there"]:
            yield self.assertRefused(self.store.create_mailbox(self.alice, name), "CANNOT")
        self.assertEqual((yield self.names()), before)
        yield self.store.create_mailbox(self.alice, "x" * 1024)

    @inlineCallbacks
    def test_create_under_inbox_is_allowed(self):
        row = yield self.store.create_mailbox(self.alice, "INBOX/Receipts")
        self.assertEqual(row["name"], "INBOX/Receipts")

    @inlineCallbacks
    def test_create_beyond_the_mailbox_limit_is_limit(self):
        have = len((yield self.names()))
        self.patch(folders, "MAX_MAILBOXES", have + 2)
        # Two new levels would fit, three do not: nothing is created.
        yield self.assertRefused(self.store.create_mailbox(self.alice, "a/b/c"), "LIMIT")
        self.assertEqual(len((yield self.names())), have)
        yield self.store.create_mailbox(self.alice, "a/b")
        yield self.assertRefused(self.store.create_mailbox(self.alice, "c"), "LIMIT")

    # -- delete -----------------------------------------------------------------------------

    @inlineCallbacks
    def test_delete_refuses_inbox_missing_and_parents(self):
        yield self.assertRefused(self.store.delete_mailbox(self.alice, "INBOX"), "CANNOT")
        yield self.assertRefused(self.store.delete_mailbox(self.alice, "Nope"), "NONEXISTENT")
        yield self.store.create_mailbox(self.alice, "a/b")
        error = yield self.assertRefused(self.store.delete_mailbox(self.alice, "a"), "CANNOT")
        self.assertIn("children", str(error))
        yield self.store.delete_mailbox(self.alice, "a/b")
        yield self.store.delete_mailbox(self.alice, "a")
        self.assertNotIn("a", (yield self.names()))

    @inlineCallbacks
    def test_delete_releases_entries_messages_blobs_and_tombstones(self):
        yield self.store.create_mailbox(self.alice, "Doomed")
        doomed = yield self.box_id("Doomed")
        big = 100 * 1024  # a file blob, not an inline one
        shared = yield self.deliver(1, "INBOX", size=big)
        yield self.store.copy_messages(self.alice, self.inbox, [shared], "Doomed")
        yield self.deliver(2, "Doomed", size=big)
        yield self.deliver(3, "Doomed", flags=["\\Deleted"])
        self.assertEqual((yield self.store.expunge(doomed)), [3])  # leaves a tombstone
        used = yield self.used()
        entries_before = yield self.store.fetch_entries(doomed, [1, 2])
        sha_shared, sha_own = (e["sha256"] for e in entries_before)
        self.assertTrue(os.path.exists(self.store.blobs.path_for(sha_own)))

        watched = self.watch(doomed)
        yield self.store.delete_mailbox(self.alice, "Doomed")
        self.assertEqual(watched, [doomed])
        self.assertNotIn("Doomed", (yield self.names()))
        self.assertEqual(
            (
                yield self.rows(
                    schema.mailbox_expunges, schema.mailbox_expunges.c.mailbox_id == doomed
                )
            ),
            [],
        )
        self.assertEqual((yield self.used()), used - 2 * len(_body(1, big)))
        # The shared message lives on in INBOX; the other one and its blob are released.
        self.assertEqual(list((yield self.message_refcounts()).values()), [1])
        self.assertEqual((yield self.blob_refcount(sha_shared)), 1)
        self.assertEqual((yield self.blob_refcount(sha_own)), 0)
        self.assertEqual((yield self.store.collect_garbage(-1)), 2)  # message 3's blob too
        self.assertFalse(os.path.exists(self.store.blobs.path_for(sha_own)))
        self.assertTrue(os.path.exists(self.store.blobs.path_for(sha_shared)))
        changes = yield self.store.mailbox_changes(doomed, 0)
        self.assertFalse(changes["exists"])
        yield self.assertRefused(
            self.store.select_mailbox(self.alice, "Doomed", True), "NONEXISTENT"
        )
        self.assertIn("mailbox.delete", (yield self.journal_kinds()))

    @inlineCallbacks
    def test_remove_account_also_removes_tombstones(self):
        uid = yield self.deliver(1, flags=["\\Deleted"])
        self.assertEqual((yield self.store.expunge(self.inbox)), [uid])
        yield self.store.remove_account("alice@example.test")
        self.assertEqual((yield self.rows(schema.mailbox_expunges)), [])

    # -- rename -----------------------------------------------------------------------------

    @inlineCallbacks
    def test_rename_moves_inferiors_and_keeps_uids_and_uidvalidity(self):
        yield self.store.create_mailbox(self.alice, "Work/Clients/Acme")
        yield self.deliver(1, "Work")
        yield self.deliver(2, "Work/Clients/Acme")
        before = {b["name"]: b for b in (yield self.store.list_mailboxes(self.alice))}
        work_id = before["Work"]["id"]
        watched = self.watch(work_id)

        yield self.store.rename_mailbox(self.alice, "Work", "Archive/2026/Work")
        after = {b["name"]: b for b in (yield self.store.list_mailboxes(self.alice))}
        for old, new in [
            ("Work", "Archive/2026/Work"),
            ("Work/Clients", "Archive/2026/Work/Clients"),
            ("Work/Clients/Acme", "Archive/2026/Work/Clients/Acme"),
        ]:
            self.assertNotIn(old, after)
            self.assertEqual(
                (after[new]["id"], after[new]["uidvalidity"], after[new]["uidnext"]),
                (before[old]["id"], before[old]["uidvalidity"], before[old]["uidnext"]),
            )
        self.assertIn("Archive/2026", after)  # a missing parent was made
        self.assertEqual(watched, [work_id])
        selected = yield self.store.select_mailbox(
            self.alice, "Archive/2026/Work/Clients/Acme", False
        )
        self.assertEqual([e[0] for e in selected["entries"]], [1])
        self.assertIn("mailbox.rename", (yield self.journal_kinds()))

    @inlineCallbacks
    def test_rename_refusals(self):
        yield self.store.create_mailbox(self.alice, "a/x")
        yield self.store.create_mailbox(self.alice, "c")
        yield self.assertRefused(self.store.rename_mailbox(self.alice, "nope", "z"), "NONEXISTENT")
        yield self.assertRefused(self.store.rename_mailbox(self.alice, "a", "c"), "ALREADYEXISTS")
        yield self.assertRefused(
            self.store.rename_mailbox(self.alice, "c", "INBOX"), "ALREADYEXISTS"
        )
        yield self.assertRefused(self.store.rename_mailbox(self.alice, "a", "a/y"), "CANNOT")
        yield self.assertRefused(self.store.rename_mailbox(self.alice, "a", "q/"), "CANNOT")
        yield self.assertRefused(self.store.rename_mailbox(self.alice, "a", "q*"), "CANNOT")
        self.assertEqual([n for n in (yield self.names()) if n[0] in "acqz"], ["a", "a/x", "c"])

    @inlineCallbacks
    def test_rename_refuses_when_an_inferior_target_exists(self):
        yield self.store.create_mailbox(self.alice, "a/x")
        # A mailbox without its parent (made by older software, say): "a" -> "t" would need
        # "t/x" a second time.
        yield self.store.db.write(
            lambda conn: mailboxes.create_mailbox_txn(conn, self.alice, "t/x")
        )
        error = yield self.assertRefused(
            self.store.rename_mailbox(self.alice, "a", "t"), "ALREADYEXISTS"
        )
        self.assertIn("t/x", str(error))
        self.assertIn("a/x", (yield self.names()))

    @inlineCallbacks
    def test_rename_inbox_moves_its_messages_and_leaves_it_empty(self):
        yield self.store.create_mailbox(self.alice, "INBOX/Sub")
        uids = [
            (yield self.deliver(1, flags=["\\Seen"])),
            (yield self.deliver(2, flags=["\\Flagged", "$Work"])),
            (yield self.deliver(3)),
        ]
        self.assertEqual(uids, [1, 2, 3])
        before = yield self.store.select_mailbox(self.alice, "INBOX", False)
        refcounts = yield self.message_refcounts()
        used = yield self.used()
        watched = self.watch(self.inbox)

        yield self.store.rename_mailbox(self.alice, "INBOX", "Old/Mail")
        self.assertEqual(watched, [self.inbox])
        inbox = yield self.store.select_mailbox(self.alice, "INBOX", False)
        self.assertEqual(inbox["entries"], [])
        self.assertEqual((inbox["id"], inbox["uidvalidity"]), (before["id"], before["uidvalidity"]))
        self.assertEqual(inbox["uidnext"], 4)  # UIDs are never reused
        moved = yield self.store.select_mailbox(self.alice, "Old/Mail", False)
        self.assertEqual(
            [(uid, bits, kw) for uid, bits, kw, _ in moved["entries"]],
            [(1, SEEN, ""), (2, FLAGGED, "$Work"), (3, 0, "")],
        )
        self.assertEqual(moved["uidnext"], 4)
        self.assertNotEqual(moved["uidvalidity"], inbox["uidvalidity"])
        changes = yield self.store.mailbox_changes(self.inbox, before["highestmodseq"])
        self.assertEqual((changes["changed"], changes["expunged"]), ([], [1, 2, 3]))
        self.assertGreater(inbox["highestmodseq"], before["highestmodseq"])
        names = yield self.names()
        self.assertIn("INBOX/Sub", names)  # inferiors of INBOX stay
        self.assertIn("Old", names)
        self.assertEqual((yield self.message_refcounts()), refcounts)
        self.assertEqual((yield self.used()), used)
        # New mail goes to the (still existing) INBOX.
        self.assertEqual((yield self.deliver(4)), 4)

    # -- subscribe --------------------------------------------------------------------------

    @inlineCallbacks
    def test_subscribe_and_unsubscribe(self):
        yield self.store.subscribe(self.alice, "Junk", False)
        boxes = {b["name"]: b["subscribed"] for b in (yield self.store.list_mailboxes(self.alice))}
        self.assertFalse(boxes["Junk"])
        self.assertTrue(boxes["INBOX"])
        yield self.store.subscribe(self.alice, "Junk", True)
        boxes = {b["name"]: b["subscribed"] for b in (yield self.store.list_mailboxes(self.alice))}
        self.assertTrue(boxes["Junk"])
        yield self.assertRefused(self.store.subscribe(self.alice, "Nope", True), "NONEXISTENT")

    # -- status, select, recent -------------------------------------------------------------

    @inlineCallbacks
    def test_status_counts(self):
        sizes = [len(_body(n)) for n in range(1, 5)]
        yield self.deliver(1, flags=["\\Seen"])
        yield self.deliver(2, flags=["\\Deleted", "\\Seen"])
        yield self.deliver(3)
        yield self.deliver(4, flags=["\\Deleted"])
        status = yield self.store.mailbox_status(self.alice, "INBOX")
        self.assertEqual(
            {k: status[k] for k in ("id", "messages", "recent", "uidnext", "unseen", "deleted")},
            {"id": self.inbox, "messages": 4, "recent": 4, "uidnext": 5, "unseen": 2, "deleted": 2},
        )
        self.assertEqual(status["size"], sum(sizes))
        self.assertEqual(status["highestmodseq"], (yield self.last_seq()))
        self.assertIsInstance(status["uidvalidity"], int)
        empty = yield self.store.mailbox_status(self.alice, "Trash")
        self.assertEqual((empty["messages"], empty["size"], empty["unseen"]), (0, 0, 0))
        yield self.assertRefused(self.store.mailbox_status(self.alice, "Nope"), "NONEXISTENT")

    @inlineCallbacks
    def test_select_returns_the_mailbox_and_its_entries_in_uid_order(self):
        yield self.deliver(1, flags=["\\Answered", "Later"])
        yield self.deliver(2)
        selected = yield self.store.select_mailbox(self.alice, "INBOX", False)
        self.assertEqual(
            {k: selected[k] for k in ("id", "name", "uidnext", "special_use", "first_recent")},
            {
                "id": self.inbox,
                "name": "INBOX",
                "uidnext": 3,
                "special_use": None,
                "first_recent": 1,
            },
        )
        self.assertEqual([e[:3] for e in selected["entries"]], [(1, ANSWERED, "Later"), (2, 0, "")])
        modseqs = [e[3] for e in selected["entries"]]
        self.assertEqual(modseqs, sorted(set(modseqs)))
        self.assertEqual(selected["highestmodseq"], modseqs[-1])
        self.assertTrue(all(type(e) is tuple for e in selected["entries"]))
        trash = yield self.store.select_mailbox(self.alice, "Trash", False)
        self.assertEqual(trash["special_use"], "\\Trash")
        yield self.assertRefused(
            self.store.select_mailbox(self.alice, "Nope", False), "NONEXISTENT"
        )

    @inlineCallbacks
    def test_recent_is_claimed_by_exactly_one_session(self):
        yield self.deliver_many(3)
        # EXAMINE sees the recent messages without taking them.
        examined = yield self.store.select_mailbox(self.alice, "INBOX", False)
        self.assertEqual(examined["first_recent"], 1)
        first = yield self.store.select_mailbox(self.alice, "INBOX", True)
        self.assertEqual((first["first_recent"], first["uidnext"]), (1, 4))  # 1..3 are its
        second = yield self.store.select_mailbox(self.alice, "INBOX", True)
        self.assertEqual(second["first_recent"], 4)  # none for the second session
        self.assertEqual((yield self.store.mailbox_status(self.alice, "INBOX"))["recent"], 0)

        # New mail while both are selected: whichever claims first gets it.
        yield self.deliver(4)
        self.assertEqual((yield self.store.mailbox_status(self.alice, "INBOX"))["recent"], 1)
        self.assertEqual((yield self.store.claim_recent(self.inbox, 5)), 4)  # uid 4 is recent
        self.assertEqual((yield self.store.claim_recent(self.inbox, 5)), 5)  # nothing left
        self.assertEqual((yield self.store.claim_recent(self.inbox, 2)), 5)  # never goes back
        self.assertEqual((yield self.store.mailbox_status(self.alice, "INBOX"))["recent"], 0)
        yield self.assertRefused(self.store.claim_recent(10**9, 5), "NONEXISTENT")

    # -- changes ----------------------------------------------------------------------------

    @inlineCallbacks
    def test_changes_since_returns_exactly_what_changed(self):
        yield self.deliver_many(3)
        start = (yield self.store.select_mailbox(self.alice, "INBOX", False))["highestmodseq"]
        nothing = yield self.store.mailbox_changes(self.inbox, start)
        self.assertEqual(
            nothing,
            {
                "highestmodseq": start,
                "uidnext": 4,
                "exists": True,
                "changed": [],
                "sizes": [],
                "expunged": [],
            },
        )
        flagged = yield self.store.store_flags(self.inbox, [2], "+", ["\\Flagged"])
        (entry,) = flagged["changed"]
        self.assertGreater(entry[3], start)
        after_flag = yield self.store.mailbox_changes(self.inbox, start)
        self.assertEqual((after_flag["changed"], after_flag["expunged"]), ([entry], []))
        self.assertEqual(after_flag["highestmodseq"], entry[3])

        yield self.store.store_flags(self.inbox, [3], "+", ["\\Deleted"])
        mid = (yield self.store.mailbox_changes(self.inbox, 0))["highestmodseq"]
        self.assertEqual((yield self.store.expunge(self.inbox)), [3])
        new_uid = yield self.deliver(9)
        since_mid = yield self.store.mailbox_changes(self.inbox, mid)
        self.assertEqual([e[0] for e in since_mid["changed"]], [new_uid])
        self.assertEqual(since_mid["expunged"], [3])
        self.assertEqual(since_mid["uidnext"], 5)
        since_start = yield self.store.mailbox_changes(self.inbox, start)
        self.assertEqual([e[0] for e in since_start["changed"]], [2, new_uid])
        self.assertEqual(since_start["expunged"], [3])
        everything = yield self.store.mailbox_changes(self.inbox, 0)
        self.assertEqual([e[0] for e in everything["changed"]], [1, 2, 4])
        final = everything["highestmodseq"]
        self.assertGreater(final, mid)
        self.assertEqual((yield self.store.mailbox_changes(self.inbox, final))["changed"], [])
        # Other mailboxes' changes are not this one's.
        yield self.deliver(10, "Archive")
        self.assertEqual((yield self.store.mailbox_changes(self.inbox, final))["changed"], [])

    @inlineCallbacks
    def test_modseqs_only_grow(self):
        seen = []
        yield self.deliver_many(4)
        for mode, flags in [("+", ["\\Seen"]), ("-", ["\\Seen"]), ("=", ["K1"]), ("+", ["K2"])]:
            result = yield self.store.store_flags(self.inbox, [1, 2, 3, 4], mode, flags)
            modseqs = [e[3] for e in result["changed"]]
            self.assertEqual(len(modseqs), 4)
            self.assertEqual(modseqs, sorted(set(modseqs)))
            seen.append(modseqs)
            status = yield self.store.mailbox_status(self.alice, "INBOX")
            self.assertEqual(status["highestmodseq"], max(modseqs))
        self.assertEqual([m for batch in seen for m in batch], sorted(m for b in seen for m in b))

    # -- fetch ------------------------------------------------------------------------------

    @inlineCallbacks
    def test_fetch_entries_returns_message_data_in_uid_order(self):
        when = datetime.datetime(2026, 3, 1, 12, 30, 5, tzinfo=datetime.UTC)
        structure = {"envelope": '("Sun, 1 Mar 2026" "hi" NIL)', "body": ["text", "plain"]}
        yield self.deliver(1, internal_date=when, structure=structure)
        yield self.deliver(2, flags=["\\Seen", "Todo"])
        yield self.deliver(3)
        fetched = yield self.store.fetch_entries(self.inbox, [3, 1, 99, 1])
        self.assertEqual([f["uid"] for f in fetched], [1, 3])
        first = fetched[0]
        self.assertEqual(
            set(first),
            {
                "uid",
                "flags",
                "keywords",
                "modseq",
                "message_row",
                "size",
                "internal_date",
                "sha256",
            },
        )
        self.assertEqual(first["internal_date"], when)
        self.assertEqual(first["internal_date"].utcoffset(), datetime.timedelta(0))
        self.assertEqual(first["size"], len(_body(1)))
        messages = yield self.rows(schema.messages, schema.messages.c.id == first["message_row"])
        self.assertEqual(messages[0]["blob_sha256"], first["sha256"])

        with_structure = yield self.store.fetch_entries(
            self.inbox, [1, 2], frozenset({"envelope", "structure"})
        )
        self.assertEqual(with_structure[0]["envelope"], structure["envelope"])
        self.assertEqual(with_structure[0]["structure"], {"body": ["text", "plain"]})
        self.assertEqual(
            (with_structure[1]["envelope"], with_structure[1]["structure"]), (None, None)
        )
        self.assertEqual(
            (with_structure[1]["flags"], with_structure[1]["keywords"]), (SEEN, "Todo")
        )
        self.assertEqual((yield self.store.fetch_entries(self.inbox, [])), [])
        self.assertEqual((yield self.store.fetch_entries(10**9, [1])), [])

    @inlineCallbacks
    def test_fetch_by_uid_range_and_by_list_agree(self):
        yield self.deliver_many(12)
        yield self.store.store_flags(self.inbox, [4, 5], "+", ["\\Deleted"])
        yield self.store.expunge(self.inbox)
        wanted = [1, 3, 4, 5, 6, 11, 12, 40]
        by_list = yield self.store.fetch_entries(self.inbox, wanted)
        self.patch(entries, "IN_LIST_MAX", 2)
        by_range = yield self.store.fetch_entries(self.inbox, wanted)
        self.assertEqual(by_list, by_range)
        self.assertEqual([f["uid"] for f in by_range], [1, 3, 6, 11, 12])

    @inlineCallbacks
    def test_set_structure_caches_it_for_fetch(self):
        yield self.deliver(1)
        (before,) = yield self.store.fetch_entries(self.inbox, [1], {"envelope", "structure"})
        self.assertIsNone(before["structure"])
        yield self.store.set_structure(before["message_row"], {"envelope": "ENV", "parts": 1})
        (after,) = yield self.store.fetch_entries(self.inbox, [1], {"envelope", "structure"})
        self.assertEqual((after["envelope"], after["structure"]), ("ENV", {"parts": 1}))
        yield self.assertRefused(self.store.set_structure(10**9, {"envelope": "x"}), "NONEXISTENT")

    @inlineCallbacks
    def test_accept_message_caches_the_structure(self):
        ref = yield self.store.blobs.put(_body(1))
        yield self.store.accept_message(
            ref, local=[self.alice], remote=[], sender="", structure={"envelope": "E", "b": 2}
        )
        (entry,) = yield self.store.fetch_entries(self.inbox, [1], {"envelope", "structure"})
        self.assertEqual((entry["envelope"], entry["structure"]), ("E", {"b": 2}))

    # -- store flags ------------------------------------------------------------------------

    @inlineCallbacks
    def test_store_flags_add_remove_replace(self):
        yield self.deliver(1, flags=["\\Seen"])
        yield self.deliver(2, flags=["Work"])
        result = yield self.store.store_flags(
            self.inbox, [1, 2], "+", ["\\Flagged", "work", "Later", "\\Recent"]
        )
        self.assertEqual(
            [e[:3] for e in result["changed"]],
            [(1, SEEN | FLAGGED, "work Later"), (2, FLAGGED, "Work Later")],
        )
        self.assertEqual(result["failed"], [])
        result = yield self.store.store_flags(self.inbox, [1, 2], "-", ["\\Seen", "LATER"])
        self.assertEqual(
            [e[:3] for e in result["changed"]], [(1, FLAGGED, "work"), (2, FLAGGED, "Work")]
        )
        result = yield self.store.store_flags(self.inbox, [1, 2, 3], "=", ["\\Draft", "X"])
        self.assertEqual([e[:3] for e in result["changed"]], [(1, DRAFT, "X"), (2, DRAFT, "X")])
        selected = yield self.store.select_mailbox(self.alice, "INBOX", False)
        self.assertEqual([e[:3] for e in selected["entries"]], [(1, DRAFT, "X"), (2, DRAFT, "X")])
        yield self.assertRefused(self.store.store_flags(10**9, [1], "+", ["\\Seen"]), "NONEXISTENT")
        yield self.assertFailure(
            self.store.store_flags(self.inbox, [1], "*", ["\\Seen"]), ValueError
        )

    @inlineCallbacks
    def test_store_flags_changes_only_what_really_changes(self):
        yield self.deliver(1, flags=["\\Seen"])
        yield self.deliver(2)
        before = {
            e[0]: e
            for e in (yield self.store.select_mailbox(self.alice, "INBOX", False))["entries"]
        }
        seq = yield self.last_seq()
        result = yield self.store.store_flags(self.inbox, [1, 2], "+", ["\\Seen"])
        self.assertEqual([e[0] for e in result["changed"]], [2])
        after = {
            e[0]: e
            for e in (yield self.store.select_mailbox(self.alice, "INBOX", False))["entries"]
        }
        self.assertEqual(after[1], before[1])  # modseq untouched
        self.assertGreater(after[2][3], before[2][3])
        self.assertEqual((yield self.journal_kinds(seq)), ["message.flags"])
        # Nothing changes at all: no journal entry, HIGHESTMODSEQ stays.
        seq = yield self.last_seq()
        result = yield self.store.store_flags(self.inbox, [1, 2], "+", ["\\Seen"])
        self.assertEqual(result, {"changed": [], "failed": []})
        self.assertEqual((yield self.journal_kinds(seq)), [])

    @inlineCallbacks
    def test_store_flags_journals_the_new_flags(self):
        yield self.deliver_many(3)
        seq = yield self.last_seq()
        yield self.store.store_flags(self.inbox, [1, 3], "+", ["\\Seen", "K"])
        changes = yield self.read(lambda conn: changes_since_txn(conn, seq))
        self.assertEqual(
            [(c["kind"], c["payload"]) for c in changes],
            [
                (
                    "message.flags",
                    {"mailbox_id": self.inbox, "uid": 1, "flags": SEEN, "keywords": "K"},
                ),
                (
                    "message.flags",
                    {"mailbox_id": self.inbox, "uid": 3, "flags": SEEN, "keywords": "K"},
                ),
            ],
        )

    @inlineCallbacks
    def test_unchangedsince_fails_entries_modified_after_it(self):
        yield self.deliver_many(3)
        known = (yield self.store.select_mailbox(self.alice, "INBOX", False))["highestmodseq"]
        yield self.store.store_flags(self.inbox, [2], "+", ["\\Answered"])  # another client
        result = yield self.store.store_flags(
            self.inbox, [1, 2, 3], "+", ["\\Seen"], unchanged_since=known
        )
        self.assertEqual([e[0] for e in result["changed"]], [1, 3])
        self.assertEqual(result["failed"], [2])
        (two,) = yield self.store.fetch_entries(self.inbox, [2])
        self.assertEqual(two["flags"], ANSWERED)  # left alone
        # UNCHANGEDSINCE 0 fails every message (RFC 7162 §3.1.3 example).
        result = yield self.store.store_flags(self.inbox, [1], "-", ["\\Seen"], unchanged_since=0)
        self.assertEqual(result, {"changed": [], "failed": [1]})

    # -- copy and move ----------------------------------------------------------------------

    @inlineCallbacks
    def test_copy_keeps_flags_takes_references_and_counts_the_bytes(self):
        yield self.deliver(1, flags=["\\Seen", "Tag"])
        yield self.deliver(2)
        yield self.deliver(3)
        yield self.store.select_mailbox(self.alice, "Archive", True)  # a session saw it empty
        used = yield self.used()
        refs = yield self.message_refcounts()
        watched_src, watched_dest = (
            self.watch(self.inbox),
            self.watch((yield self.box_id("Archive"))),
        )

        result = yield self.store.copy_messages(self.alice, self.inbox, [1, 3, 77], "Archive")
        archive = yield self.store.select_mailbox(self.alice, "Archive", False)
        self.assertEqual(result["uidvalidity"], archive["uidvalidity"])
        self.assertEqual(result["pairs"], [(1, 1), (3, 2)])
        self.assertEqual(result["expunged"], [])
        self.assertEqual([e[:3] for e in archive["entries"]], [(1, SEEN, "Tag"), (2, 0, "")])
        self.assertEqual(archive["uidnext"], 3)
        self.assertEqual(archive["highestmodseq"], archive["entries"][-1][3])
        status = yield self.store.mailbox_status(self.alice, "Archive")
        self.assertEqual(status["recent"], 2)  # recent in the destination
        self.assertEqual((yield self.store.mailbox_status(self.alice, "INBOX"))["messages"], 3)
        self.assertEqual((yield self.used()), used + len(_body(1)) + len(_body(3)))
        now = yield self.message_refcounts()
        self.assertEqual(sorted(now[m] - refs[m] for m in refs), [0, 1, 1])
        self.assertEqual((watched_src, len(watched_dest)), ([], 1))
        # Copying into the same mailbox makes new UIDs there.
        again = yield self.store.copy_messages(self.alice, self.inbox, [2], "INBOX")
        self.assertEqual(again["pairs"], [(2, 4)])

    @inlineCallbacks
    def test_copy_refusals(self):
        yield self.deliver(1)
        yield self.assertRefused(
            self.store.copy_messages(self.alice, self.inbox, [1], "Nope"), "TRYCREATE"
        )
        yield self.assertRefused(
            self.store.copy_messages(self.alice, self.inbox, [1], "Nope", move=True), "TRYCREATE"
        )
        bob = yield self.store.add_account("bob@example.test", "hash", QUOTA)
        yield self.assertRefused(
            self.store.copy_messages(bob, self.inbox, [1], "INBOX"), "NONEXISTENT"
        )
        nothing = yield self.store.copy_messages(self.alice, self.inbox, [5], "Archive")
        self.assertEqual(nothing["pairs"], [])

    @inlineCallbacks
    def test_copy_over_quota_copies_nothing(self):
        size = len(_body(1))
        yield self.store.set_quota("alice@example.test", 3 * size + size // 2)
        yield self.deliver_many(2)  # two in; room for one more, not two
        seq = yield self.last_seq()
        yield self.assertRefused(
            self.store.copy_messages(self.alice, self.inbox, [1, 2], "Archive"), "OVERQUOTA"
        )
        self.assertEqual((yield self.store.mailbox_status(self.alice, "Archive"))["messages"], 0)
        self.assertEqual((yield self.used()), 2 * size)
        self.assertEqual((yield self.journal_kinds(seq)), [])
        copied = yield self.store.copy_messages(self.alice, self.inbox, [1], "Archive")
        self.assertEqual(copied["pairs"], [(1, 1)])
        # A move is not refused: it does not change what the account uses.
        moved = yield self.store.copy_messages(self.alice, self.inbox, [2], "Trash", move=True)
        self.assertEqual(moved["pairs"], [(2, 1)])
        self.assertEqual((yield self.used()), 3 * size)

    @inlineCallbacks
    def test_copy_grows_the_quota_by_the_policy(self):
        size = len(_body(1))
        self.store.quota_policy = QuotaPolicy(grow_at=0.9, grow_by=size, max=10 * size)
        yield self.store.set_quota("alice@example.test", 2 * size)
        yield self.deliver_many(2)
        yield self.store.copy_messages(self.alice, self.inbox, [1, 2], "Archive")
        account = yield self.store.account("alice@example.test")
        self.assertEqual(account["used_bytes"], 4 * size)
        self.assertEqual(account["quota_bytes"], 5 * size)  # grown until under 90 %
        self.assertIn("account.quota", (yield self.journal_kinds()))
        quota = yield self.store.quota(self.alice)
        self.assertEqual(quota, {"used": 4 * size, "quota": 5 * size, "max": 10 * size})
        # Past the maximum even growth does not help: all or nothing again.
        yield self.deliver_many(4, start=10)
        yield self.assertRefused(
            self.store.copy_messages(self.alice, self.inbox, [1, 2, 3, 4, 5, 6], "Junk"),
            "OVERQUOTA",
        )

    @inlineCallbacks
    def test_move_expunges_the_sources_with_tombstones(self):
        yield self.deliver(1, flags=["\\Flagged"])
        yield self.deliver(2)
        yield self.deliver(3)
        start = (yield self.store.select_mailbox(self.alice, "INBOX", False))["highestmodseq"]
        used = yield self.used()
        refs = yield self.message_refcounts()
        archive = yield self.box_id("Archive")
        watched_src, watched_dest = self.watch(self.inbox), self.watch(archive)

        result = yield self.store.copy_messages(
            self.alice, self.inbox, [1, 2], "Archive", move=True
        )
        self.assertEqual(result["pairs"], [(1, 1), (2, 2)])
        self.assertEqual(result["expunged"], [1, 2])
        inbox = yield self.store.select_mailbox(self.alice, "INBOX", False)
        self.assertEqual([e[0] for e in inbox["entries"]], [3])
        moved = yield self.store.select_mailbox(self.alice, "Archive", False)
        self.assertEqual([e[:2] for e in moved["entries"]], [(1, FLAGGED), (2, 0)])
        changes = yield self.store.mailbox_changes(self.inbox, start)
        self.assertEqual((changes["changed"], changes["expunged"]), ([], [1, 2]))
        self.assertGreater(changes["highestmodseq"], moved["highestmodseq"])
        tombstones = yield self.rows(
            schema.mailbox_expunges, schema.mailbox_expunges.c.mailbox_id == self.inbox
        )
        self.assertEqual(sorted(t["uid"] for t in tombstones), [1, 2])
        self.assertEqual((yield self.used()), used)
        self.assertEqual((yield self.message_refcounts()), refs)
        self.assertEqual((watched_src, watched_dest), ([self.inbox], [archive]))

    @inlineCallbacks
    def test_move_within_one_mailbox(self):
        yield self.deliver_many(2)
        result = yield self.store.copy_messages(self.alice, self.inbox, [1], "INBOX", move=True)
        self.assertEqual((result["pairs"], result["expunged"]), ([(1, 3)], [1]))
        inbox = yield self.store.select_mailbox(self.alice, "INBOX", False)
        self.assertEqual([e[0] for e in inbox["entries"]], [2, 3])
        self.assertEqual(inbox["uidnext"], 4)
        self.assertEqual(inbox["highestmodseq"], (yield self.last_seq()))

    # -- expunge ----------------------------------------------------------------------------

    @inlineCallbacks
    def test_expunge_removes_deleted_entries_and_releases_what_is_unreferenced(self):
        big = 70 * 1024
        yield self.deliver(1, flags=["\\Deleted"], size=big)  # only here
        yield self.deliver(2)
        yield self.deliver(3, flags=["\\Deleted"])  # also copied to Archive
        yield self.store.copy_messages(self.alice, self.inbox, [3], "Archive")
        fetched = {f["uid"]: f for f in (yield self.store.fetch_entries(self.inbox, [1, 2, 3]))}
        used = yield self.used()
        seq = yield self.last_seq()

        expunged = yield self.store.expunge(self.inbox)
        self.assertEqual(expunged, [1, 3])
        inbox = yield self.store.select_mailbox(self.alice, "INBOX", False)
        self.assertEqual([e[0] for e in inbox["entries"]], [2])
        tombstones = yield self.rows(
            schema.mailbox_expunges, schema.mailbox_expunges.c.mailbox_id == self.inbox
        )
        tombstones.sort(key=lambda t: t["uid"])
        self.assertEqual([t["uid"] for t in tombstones], [1, 3])
        self.assertLess(seq, tombstones[0]["modseq"])
        self.assertLess(tombstones[0]["modseq"], tombstones[1]["modseq"])  # one each
        self.assertEqual(inbox["highestmodseq"], tombstones[1]["modseq"])
        self.assertEqual((yield self.journal_kinds(seq)), ["message.expunge"] * 2)
        self.assertEqual((yield self.used()), used - fetched[1]["size"] - fetched[3]["size"])
        refs = yield self.message_refcounts()
        self.assertNotIn(fetched[1]["message_row"], refs)
        self.assertEqual(refs[fetched[3]["message_row"]], 1)  # lives on in Archive
        self.assertEqual((yield self.blob_refcount(fetched[1]["sha256"])), 0)
        self.assertEqual((yield self.blob_refcount(fetched[3]["sha256"])), 1)
        self.assertEqual((yield self.store.collect_garbage(-1)), 1)
        self.assertFalse(os.path.exists(self.store.blobs.path_for(fetched[1]["sha256"])))
        self.assertEqual((yield self.store.expunge(self.inbox)), [])

    @inlineCallbacks
    def test_uid_expunge_only_touches_the_given_uids(self):
        yield self.deliver_many(4)
        yield self.store.store_flags(self.inbox, [1, 2, 3], "+", ["\\Deleted"])
        self.assertEqual((yield self.store.expunge(self.inbox, [2, 3, 4])), [2, 3])
        inbox = yield self.store.select_mailbox(self.alice, "INBOX", False)
        self.assertEqual([e[0] for e in inbox["entries"]], [1, 4])
        self.assertEqual((yield self.store.expunge(self.inbox, [])), [])
        yield self.assertRefused(self.store.expunge(10**9), "NONEXISTENT")

    # -- append -----------------------------------------------------------------------------

    @inlineCallbacks
    def test_append_files_the_blob_with_flags_date_and_structure(self):
        ref = yield self.store.blobs.put(_body(1))
        paris = datetime.timezone(datetime.timedelta(hours=2))
        when = datetime.datetime(2025, 7, 14, 10, 0, 0, tzinfo=paris)
        archive = yield self.box_id("Archive")
        watched = self.watch(archive)
        appended = yield self.store.append_message(
            self.alice, "Archive", ref, ["\\Seen", "Imported"], when, {"envelope": "E", "x": 1}
        )
        status = yield self.store.mailbox_status(self.alice, "Archive")
        self.assertEqual(
            appended, {"mailbox_id": archive, "uidvalidity": status["uidvalidity"], "uid": 1}
        )
        self.assertEqual(watched, [archive])
        (entry,) = yield self.store.fetch_entries(archive, [1], {"envelope", "structure"})
        self.assertEqual((entry["flags"], entry["keywords"]), (SEEN, "Imported"))
        self.assertEqual(entry["internal_date"], when)
        self.assertEqual(entry["internal_date"].hour, 8)  # in UTC
        self.assertEqual((entry["envelope"], entry["structure"]), ("E", {"x": 1}))
        self.assertEqual((yield self.used()), len(_body(1)))
        second = yield self.store.append_message(self.alice, "Archive", ref)
        self.assertEqual(second["uid"], 2)

    @inlineCallbacks
    def test_append_to_a_missing_mailbox_is_trycreate(self):
        ref = yield self.store.blobs.put(_body(1))
        yield self.assertRefused(self.store.append_message(self.alice, "Nope", ref), "TRYCREATE")
        self.assertEqual((yield self.rows(schema.messages)), [])
        # Plain delivery to a missing mailbox fails just as cleanly.
        yield self.assertRefused(self.store.deliver(ref, [(self.alice, "Nope")]), "TRYCREATE")

    @inlineCallbacks
    def test_append_over_quota_and_quota_growth(self):
        size = len(_body(1))
        yield self.store.set_quota("alice@example.test", size + size // 2)
        ref = yield self.store.blobs.put(_body(1))
        yield self.store.append_message(self.alice, "INBOX", ref)
        yield self.assertRefused(self.store.append_message(self.alice, "INBOX", ref), "OVERQUOTA")
        self.assertEqual((yield self.used()), size)
        self.assertEqual((yield self.store.quota(self.alice))["max"], 0)
        self.store.quota_policy = QuotaPolicy(grow_at=0.9, grow_by=size, max=4 * size)
        yield self.store.append_message(self.alice, "INBOX", ref)
        quota = yield self.store.quota(self.alice)
        self.assertEqual(quota["used"], 2 * size)
        self.assertGreater(quota["quota"], size + size // 2)
        self.assertEqual(quota["max"], 4 * size)
        yield self.store.append_message(self.alice, "INBOX", ref)
        yield self.store.append_message(self.alice, "INBOX", ref)
        yield self.assertRefused(self.store.append_message(self.alice, "INBOX", ref), "OVERQUOTA")
        self.assertEqual((yield self.store.quota(self.alice))["quota"], 4 * size)

    # -- notification -----------------------------------------------------------------------

    @inlineCallbacks
    def test_watchers_hear_after_the_commit(self):
        seen_by_watcher = []

        def changed(mailbox_id):
            # Runs on the reactor after the commit: a fresh read already sees the change.
            seen_by_watcher.append(self.store.mailbox_status(self.alice, "INBOX"))

        handle = self.store.watch(self.inbox, changed)
        self.addCleanup(handle.cancel)
        yield self.deliver(1)
        self.assertEqual(len(seen_by_watcher), 1)
        status = yield seen_by_watcher[0]
        self.assertEqual(status["messages"], 1)

    @inlineCallbacks
    def test_every_kind_of_change_notifies_once_per_commit(self):
        archive = yield self.box_id("Archive")
        inbox_calls, archive_calls = self.watch(self.inbox), self.watch(archive)
        account_calls = []
        handle = self.store.watch_account(
            self.alice, lambda a, boxes: account_calls.append((a, boxes))
        )
        self.addCleanup(handle.cancel)

        yield self.deliver(1)
        yield self.store.store_flags(self.inbox, [1], "+", ["\\Seen"])
        yield self.store.store_flags(self.inbox, [1], "+", ["\\Seen"])  # no change, no call
        yield self.store.copy_messages(self.alice, self.inbox, [1], "Archive")
        yield self.store.store_flags(archive, [1], "+", ["\\Deleted"])
        yield self.store.expunge(archive)
        yield self.store.expunge(archive)  # nothing expunged, no call
        ref = yield self.store.blobs.put(_body(2))
        yield self.store.append_message(self.alice, "INBOX", ref)
        yield self.store.select_mailbox(self.alice, "INBOX", True)  # not a change
        self.assertEqual(inbox_calls, [self.inbox] * 3)
        self.assertEqual(archive_calls, [archive] * 3)
        self.assertEqual(len(account_calls), 6)
        self.assertEqual(account_calls[2], (self.alice, frozenset({archive})))

    @inlineCallbacks
    def test_changes_in_one_commit_are_coalesced(self):
        yield self.deliver_many(3)
        calls = self.watch(self.inbox)

        def flag_then_expunge(conn):
            entries.store_flags_txn(conn, self.inbox, [1, 2], "+", ["\\Deleted"])
            entries.store_flags_txn(conn, self.inbox, [3], "+", ["\\Seen"])
            return entries.expunge_txn(conn, self.inbox)

        self.assertEqual((yield self.store.db.write(flag_then_expunge)), [1, 2])
        self.assertEqual(calls, [self.inbox])
        # Deliveries that share commits: at most one call per commit.
        commits = self.store.db.commits
        yield self.deliver_many(20, start=10)
        self.assertGreaterEqual(len(calls) - 1, 1)
        self.assertLessEqual(len(calls) - 1, self.store.db.commits - commits)

    @inlineCallbacks
    def test_a_rolled_back_write_notifies_nobody(self):
        yield self.deliver(1)
        calls = self.watch(self.inbox)

        def flag_then_fail(conn):
            entries.store_flags_txn(conn, self.inbox, [1], "+", ["\\Flagged"])
            raise RuntimeError("changed my mind")

        yield self.assertFailure(self.store.db.write(flag_then_fail), RuntimeError)
        # A write that commits afterwards: any notice of the failed one would have come first.
        yield self.store.subscribe(self.alice, "Junk", False)
        self.assertEqual(calls, [])
        (entry,) = yield self.store.fetch_entries(self.inbox, [1])
        self.assertEqual(entry["flags"], 0)
        yield self.assertRefused(
            self.store.copy_messages(self.alice, self.inbox, [1], "Nope"), "TRYCREATE"
        )
        self.assertEqual(calls, [])

    @inlineCallbacks
    def test_cancelled_watchers_are_not_called_and_errors_do_not_spread(self):
        calls = []
        handle = self.store.watch(self.inbox, calls.append)
        broken = self.store.watch(self.inbox, lambda mailbox_id: 1 / 0)
        yield self.deliver(1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(calls, [self.inbox])
        handle.cancel()
        handle.cancel()
        broken.cancel()
        yield self.deliver(2)
        self.assertEqual(calls, [self.inbox])

    # -- size -------------------------------------------------------------------------------

    @inlineCallbacks
    def test_ten_thousand_entries(self):
        """select, fetch and STORE over 10,000 entries: a handful of statements each.

        No timed assertions (machines differ); the timings are printed for the record.
        """
        total = 10_000
        yield self.deliver_many(10)
        have = 10
        while have < total:  # double the mailbox by copying it into itself
            count = min(have, total - have)
            yield self.store.copy_messages(self.alice, self.inbox, range(1, count + 1), "INBOX")
            have += count
        timings = {}

        started = time.perf_counter()
        selected = yield self.store.select_mailbox(self.alice, "INBOX", True)
        timings["select (claim recent)"] = time.perf_counter() - started
        self.assertEqual(len(selected["entries"]), total)
        self.assertEqual(selected["first_recent"], 1)

        started = time.perf_counter()
        fetched = yield self.store.fetch_entries(self.inbox, range(1, total + 1), {"envelope"})
        timings["fetch_entries"] = time.perf_counter() - started
        self.assertEqual([f["uid"] for f in fetched], list(range(1, total + 1)))

        started = time.perf_counter()
        stored = yield self.store.store_flags(self.inbox, range(1, total + 1), "+", ["\\Seen"])
        timings["store_flags +\\Seen"] = time.perf_counter() - started
        self.assertEqual(len(stored["changed"]), total)
        modseqs = [e[3] for e in stored["changed"]]
        self.assertEqual(len(set(modseqs)), total)

        started = time.perf_counter()
        again = yield self.store.store_flags(self.inbox, range(1, total + 1), "+", ["\\Seen"])
        timings["store_flags (no change)"] = time.perf_counter() - started
        self.assertEqual(again["changed"], [])

        started = time.perf_counter()
        changes = yield self.store.mailbox_changes(self.inbox, min(modseqs) - 1)
        timings["mailbox_changes"] = time.perf_counter() - started
        self.assertEqual(len(changes["changed"]), total)
        status = yield self.store.mailbox_status(self.alice, "INBOX")
        self.assertEqual((status["messages"], status["unseen"]), (total, 0))

        report = ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in timings.items())
        line = f"{type(self).__name__}: 10,000 entries: {report}"
        log.info("{line}", line=line)  # in the trial log (_trial_temp/test.log)
        path = os.environ.get("MAILBOX_APPLIANCE_TIMINGS")
        if path:
            with open(path, "a") as f:
                f.write(line + "\n")


class SQLiteImapStoreTests(SQLiteMixin, _ImapStoreTests, TestCase):
    pass


class PostgreSQLImapStoreTests(PostgreSQLMixin, _ImapStoreTests, TestCase):
    pass
