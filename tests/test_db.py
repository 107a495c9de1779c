"""The database door: group commit, durability before acknowledgement, no SQL on the reactor."""

from __future__ import annotations

import os
import threading
import time

from sqlalchemy import create_engine, func, select, text
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from mailbox_appliance.store import schema
from mailbox_appliance.store.db import (
    StoreBroken,
    StoreStopped,
    TransactionLost,
    on_commit,
    on_rollback,
)
from mailbox_appliance.store.engine import SQLOnReactorThread
from mailbox_appliance.store.journal import record_txn
from mailbox_appliance.store.walsync import sqlite_file
from tests.support.databases import PostgreSQLMixin, SQLiteMixin
from tests.support.store import started_store


class _DatabaseTests:
    """Run on every backend (see the subclasses at the bottom)."""

    @inlineCallbacks
    def setUp(self):
        self.url = self.database_url()
        self.store = yield started_store(self, self.url)
        self.db = self.store.db

    def _count_journal_elsewhere(self) -> int:
        """Read through a brand-new connection: sees only what was committed."""
        engine = create_engine(self.url)
        try:
            with engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(schema.journal)).scalar()
        finally:
            engine.dispose()

    @inlineCallbacks
    def test_concurrent_writes_share_commits(self):
        before = self.db.commits
        n = 200
        ds = [self.db.write(lambda conn, i=i: record_txn(conn, "test", {"i": i})) for i in range(n)]
        seqs = yield gatherResults(ds)
        self.assertEqual(len(set(seqs)), n)
        commits = self.db.commits - before
        self.assertLess(commits, n / 4, f"{n} concurrent writes took {commits} commits")
        self.assertGreaterEqual(commits, 1)

    @inlineCallbacks
    def test_lookups_queued_while_one_runs_share_the_next_batch(self):
        calls = []

        def double_txn(conn, items):
            calls.append(list(items))
            conn.execute(text("SELECT 1"))
            return [2 * item for item in items]

        results = yield gatherResults([self.db.read_batched(double_txn, i) for i in range(10)])
        self.assertEqual(results, [2 * i for i in range(10)])
        # The first lookup went alone; the nine queued meanwhile went together.
        self.assertEqual(calls, [[0], list(range(1, 10))])

    @inlineCallbacks
    def test_a_failing_lookup_batch_is_retried_item_by_item_and_only_the_bad_item_fails(self):
        def strict_txn(conn, items):
            if "bad" in items:
                raise ValueError("bad item")
            return [item.upper() for item in items]

        ds = [self.db.read_batched(strict_txn, item) for item in ("a", "b", "bad", "c")]
        results = yield gatherResults([d.addErrback(lambda f: f.type) for d in ds])
        self.assertEqual(results, ["A", "B", ValueError, "C"])

    @inlineCallbacks
    def test_each_write_fires_only_after_its_commit_is_visible(self):
        # When a write's Deferred fires, a brand-new connection already sees its row.
        for i in range(5):
            seq = yield self.db.write(lambda conn, i=i: record_txn(conn, "one", {"i": i}))
            visible = yield threads_read(lambda seq=seq: self._seq_visible_elsewhere(seq))
            self.assertTrue(visible, f"journal seq {seq} not visible after its write fired")
        seqs = yield gatherResults(
            [self.db.write(lambda conn, i=i: record_txn(conn, "many", {"i": i})) for i in range(50)]
        )
        count = yield threads_read(self._count_journal_elsewhere)
        self.assertGreaterEqual(count, max(seqs) - min(seqs) + 1)

    def _seq_visible_elsewhere(self, seq: int) -> bool:
        engine = create_engine(self.url)
        try:
            with engine.connect() as conn:
                found = conn.execute(
                    select(schema.journal.c.seq).where(schema.journal.c.seq == seq)
                ).first()
                return found is not None
        finally:
            engine.dispose()

    @inlineCallbacks
    def test_a_failing_write_does_not_fail_its_batch_neighbours(self):
        def bad(conn):
            record_txn(conn, "doomed", {})
            raise ValueError("refused by the test")

        ds = [
            self.db.write(lambda conn: record_txn(conn, "good", {"n": 1})),
            self.db.write(bad),
            self.db.write(lambda conn: record_txn(conn, "good", {"n": 2})),
        ]
        results = yield gatherResults([d.addErrback(lambda f: ("failed", f)) for d in ds])
        self.assertIsInstance(results[0], int)
        self.assertEqual(results[1][0], "failed")
        self.assertTrue(results[1][1].check(ValueError))
        self.assertIsInstance(results[2], int)
        kinds = yield self.db.read(
            lambda conn: list(conn.execute(select(schema.journal.c.kind)).scalars())
        )
        self.assertEqual(kinds.count("good"), 2)
        self.assertNotIn("doomed", kinds)

    @inlineCallbacks
    def test_batched_writes_share_one_call_and_a_failing_item_fails_alone(self):
        calls = []

        def batch_fn(conn, items):
            calls.append(list(items))
            if "bad" in items:
                raise ValueError("bad item")
            return [record_txn(conn, "batched", {"item": item}) for item in items]

        gate = threading.Event()
        held = self.db.call_on_writer(lambda: gate.wait(30))  # queue up behind this
        ds = [self.db.write_batched(batch_fn, item) for item in ("a", "b", "c")]
        gate.set()
        yield held
        seqs = yield gatherResults(ds)
        self.assertEqual(calls, [["a", "b", "c"]], "one call for the three queued writes")
        self.assertEqual(len(set(seqs)), 3)

        calls.clear()
        gate.clear()
        held = self.db.call_on_writer(lambda: gate.wait(30))
        ds = [self.db.write_batched(batch_fn, item) for item in ("d", "bad", "e")]
        gate.set()
        yield held
        results = yield gatherResults([d.addErrback(lambda f: ("failed", f)) for d in ds])
        self.assertEqual(calls[0], ["d", "bad", "e"])
        self.assertEqual(calls[1:], [["d"], ["bad"], ["e"]], "then one by one")
        self.assertIsInstance(results[0], int)
        self.assertTrue(results[1][1].check(ValueError))
        self.assertIsInstance(results[2], int)
        kinds = yield self.db.read(
            lambda conn: [
                p["item"]
                for p in conn.execute(
                    select(schema.journal.c.payload).where(schema.journal.c.kind == "batched")
                ).scalars()
            ]
        )
        self.assertEqual(sorted(kinds), ["a", "b", "c", "d", "e"])
        self.flushLoggedErrors(ValueError)

    @inlineCallbacks
    def test_commit_hooks_run_once_durable_and_rollback_hooks_on_failure(self):
        calls = []

        def good(conn):
            on_commit(conn, lambda: calls.append(("commit", threading.current_thread().name)))
            on_rollback(conn, lambda: calls.append(("rollback", "good")))

        def bad(conn):
            on_commit(conn, lambda: calls.append(("commit", "bad")))
            on_rollback(conn, lambda: calls.append(("rollback", "bad")))
            raise ValueError("no")

        yield gatherResults([self.db.write(good), self.db.write(bad).addErrback(lambda f: None)])
        self.assertIn(("rollback", "bad"), calls)
        self.assertNotIn(("commit", "bad"), calls)
        self.assertNotIn(("rollback", "good"), calls)
        [(kind, thread_name)] = [c for c in calls if c[0] == "commit"]
        # After the fsync on SQLite (the sync thread), after COMMIT on PostgreSQL (the writer).
        self.assertIn("store-sync" if self.backend == "sqlite" else "store-write", thread_name)

    @inlineCallbacks
    def test_reads_and_writes_run_on_store_threads_never_the_reactor(self):
        names = yield gatherResults(
            [
                self.db.read(lambda conn: threading.current_thread().name),
                self.db.write(lambda conn: threading.current_thread().name),
            ]
        )
        self.assertIn("store-read", names[0])
        self.assertIn("store-write", names[1])
        self.assertNotEqual(names[0], threading.main_thread().name)

    @inlineCallbacks
    def test_reads_and_writes_after_stop_fail_instead_of_hanging(self):
        yield self.store.stop()
        yield self.assertFailure(self.db.write(lambda conn: None), StoreStopped)
        yield self.assertFailure(self.db.read(lambda conn: None), StoreStopped)

    def test_sql_on_the_reactor_thread_is_refused(self):
        with self.db.engine.connect() as conn:
            self.assertRaises(SQLOnReactorThread, conn.execute, text("SELECT 1"))


def threads_read(fn):
    """Run a blocking helper of the test off the reactor thread."""
    from twisted.internet.threads import deferToThreadPool

    return deferToThreadPool(reactor, reactor.getThreadPool(), fn)


class SQLiteDatabaseTests(SQLiteMixin, _DatabaseTests, TestCase):
    @inlineCallbacks
    def test_sqlite_runs_in_wal_mode_and_fsyncs_the_wal_itself(self):
        mode = yield self.db.read(lambda conn: conn.exec_driver_sql("PRAGMA journal_mode").scalar())
        sync = yield self.db.read(lambda conn: conn.exec_driver_sql("PRAGMA synchronous").scalar())
        self.assertEqual(mode, "wal")
        self.assertEqual(sync, 1)  # NORMAL: the store's sync thread fsyncs the WAL (walsync.py)

    @inlineCallbacks
    def test_concurrent_writes_share_fsyncs(self):
        fsyncs = []
        real_sync = self.db._wal.sync_thd

        def counted():
            fsyncs.append(1)
            real_sync()

        self.patch(self.db._wal, "sync_thd", counted)
        n = 200
        yield gatherResults(
            [self.db.write(lambda conn, i=i: record_txn(conn, "f", {"i": i})) for i in range(n)]
        )
        self.assertGreaterEqual(len(fsyncs), 1)
        self.assertLess(len(fsyncs), n / 4, f"{n} concurrent writes took {len(fsyncs)} fsyncs")

    @inlineCallbacks
    def test_a_write_is_acknowledged_only_after_the_wal_fsync_that_follows_its_commit(self):
        gate, synced = threading.Event(), []
        real_sync = self.db._wal.sync_thd

        def held_sync():
            gate.wait(30)
            real_sync()
            synced.append(threading.current_thread().name)

        self.patch(self.db._wal, "sync_thd", held_sync)
        d = self.db.write(lambda conn: record_txn(conn, "held", {}))
        # Committed (a new connection sees it) but not yet fsync'd: no acknowledgement yet.
        seq = yield threads_read(lambda: self._wait_for_kind_elsewhere("held"))
        self.assertIsNotNone(seq)
        self.assertFalse(d.called, "acknowledged before the WAL fsync")
        gate.set()
        self.assertEqual((yield d), seq)
        self.assertEqual(len(synced), 1)
        self.assertIn("store-sync", synced[0])

    def _wait_for_kind_elsewhere(self, kind: str):
        engine = create_engine(self.url)
        try:
            for _ in range(500):
                with engine.connect() as conn:
                    seq = conn.execute(
                        select(schema.journal.c.seq).where(schema.journal.c.kind == kind)
                    ).scalar()
                if seq is not None:
                    return seq
                time.sleep(0.01)
            return None
        finally:
            engine.dispose()

    @inlineCallbacks
    def test_a_transaction_sqlite_rolls_back_by_itself_fails_the_whole_batch(self):
        def setup(conn):
            conn.exec_driver_sql("CREATE TEMP TABLE boom(x)")
            conn.exec_driver_sql(
                "CREATE TEMP TRIGGER boom_t BEFORE INSERT ON boom"
                " BEGIN SELECT RAISE(ROLLBACK, 'as SQLITE_FULL would'); END"
            )

        yield self.db.write(setup)
        gate = threading.Event()
        held = self.db.call_on_writer(lambda: gate.wait(30))
        ds = [
            self.db.write(lambda conn: record_txn(conn, "first", {})),
            self.db.write(lambda conn: conn.exec_driver_sql("INSERT INTO boom VALUES (1)")),
            self.db.write(lambda conn: record_txn(conn, "third", {})),
        ]
        gate.set()
        yield held
        results = yield gatherResults([d.addErrback(lambda f: ("failed", f)) for d in ds])
        kinds = yield self.db.read(
            lambda conn: list(conn.execute(select(schema.journal.c.kind)).scalars())
        )
        for kind, result in zip(("first", None, "third"), results, strict=True):
            if not (isinstance(result, tuple) and result[0] == "failed") and kind:
                self.assertIn(kind, kinds, f"{kind} was acknowledged but not kept")
        self.assertEqual(results[0][0], "failed", "the rolled-back write was acknowledged")
        self.assertTrue(results[0][1].check(TransactionLost))
        self.assertNotIn("third", kinds)
        self.flushLoggedErrors(TransactionLost)
        # The store goes on: the next write is kept.
        yield self.db.write(lambda conn: record_txn(conn, "after", {}))

    @inlineCallbacks
    def test_after_a_failed_wal_fsync_every_write_is_refused(self):
        def failing_sync():
            raise OSError(5, "Input/output error")

        self.patch(self.db._wal, "sync_thd", failing_sync)
        yield self.assertFailure(self.db.write(lambda conn: record_txn(conn, "x", {})), StoreBroken)
        yield self.assertFailure(self.db.write(lambda conn: None), StoreBroken)
        self.flushLoggedErrors(OSError)

    @inlineCallbacks
    def test_stop_runs_every_write_queued_before_it(self):
        ds = [self.db.write(lambda conn, i=i: record_txn(conn, "q", {"i": i})) for i in range(2000)]
        yield self.store.stop()
        results = yield gatherResults(ds)
        self.assertEqual(len(results), 2000)

    def test_an_fsync_of_the_wal_covers_a_file_database_only(self):
        self.assertIsNone(sqlite_file("sqlite://"))
        self.assertIsNone(sqlite_file("postgresql+psycopg://u@h/db"))
        self.assertEqual(sqlite_file("sqlite:///rel/x.db"), os.path.abspath("rel/x.db"))


class PostgreSQLDatabaseTests(PostgreSQLMixin, _DatabaseTests, TestCase):
    pass
