"""The content-addressed blob store (store/blobs.py) and the references mail takes to it.

Every test runs against a real store: a migrated SQLite file, and again on PostgreSQL when
``MAILBOX_APPLIANCE_TEST_POSTGRES`` names a server (skipped, with that reason, otherwise).
The blob files live in a real directory; nothing is mocked.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import random
import signal
import sys
import threading

from sqlalchemy import func, select
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mailbox_appliance.errors import BlobMissing
from mailbox_appliance.interfaces import IBlobTier
from mailbox_appliance.store import blobs, schema
from mailbox_appliance.store.blobs import BlobStore, HotTier, incref_txn
from mailbox_appliance.store.db import StoreStopped
from tests.support.databases import PostgreSQLMixin, SQLiteMixin
from tests.support.store import started_store

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _content(size: int, seed: int = 0) -> bytes:
    """Incompressible, reproducible bytes (a child process can make the same ones)."""
    return random.Random(seed).randbytes(size)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _blob_files(root: str) -> list[str]:
    """Every file under the tier root except the temporary directory."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [name for name in dirnames if name != blobs.TMP_DIR]
            filenames = [name for name in filenames if name != blobs.TMP_DIR]
        found.extend(os.path.join(dirpath, name) for name in filenames)
    return sorted(found)


def _tmp_files(root: str) -> list[str]:
    tmp = os.path.join(root, blobs.TMP_DIR)
    return sorted(os.path.join(tmp, name) for name in os.listdir(tmp))


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _blob_row(store, sha256: str):
    def _txn(conn):
        row = conn.execute(select(schema.blobs).where(schema.blobs.c.sha256 == sha256)).first()
        return None if row is None else dict(row._mapping)

    return store.db.read(_txn)


def _count(store, table):
    return store.db.read(
        lambda conn: conn.execute(select(func.count()).select_from(table)).scalar()
    )


def _journal(store):
    def _txn(conn):
        j = schema.journal
        return [(r.kind, r.payload) for r in conn.execute(select(j).order_by(j.c.seq))]

    return store.db.read(_txn)


def _rows(store, table):
    return store.db.read(lambda conn: [dict(r._mapping) for r in conn.execute(select(table))])


@implementer(IConsumer)
class PullingConsumer:
    """A real consumer: pulls a non-streaming producer one reactor turn at a time."""

    def __init__(self):
        self.data = bytearray()
        self.producer = None
        self.streaming = None
        self.unregistered = False

    def registerProducer(self, producer, streaming):
        self.producer, self.streaming = producer, streaming
        if not streaming:
            reactor.callLater(0, self._pull)

    def _pull(self):
        if self.producer is not None:
            self.producer.resumeProducing()
            if self.producer is not None:
                reactor.callLater(0, self._pull)

    def unregisterProducer(self):
        self.producer = None
        self.unregistered = True

    def write(self, data):
        self.data += data


@implementer(IPushProducer)
class PieceProducer:
    """Offers content in small pieces as fast as it is allowed, as a TCP transport does.

    Records the offset at every pause and resume; ``on_resume`` (if set) is called at each
    resume so a test can look at the disk at that moment.
    """

    def __init__(self, consumer, content: bytes, piece: int):
        self.consumer = consumer
        self.content = content
        self.piece = piece
        self.offset = 0
        self.paused = False
        self.pauses: list[int] = []
        self.resumes: list[int] = []
        self.on_pause: Deferred = Deferred()
        self.on_resume = None
        self.done: Deferred = Deferred()
        self._call = None

    def start(self):
        self.consumer.registerProducer(self, True)
        self._schedule()

    def _schedule(self):
        self._call = reactor.callLater(0, self._produce)

    def _produce(self):
        self._call = None
        for _ in range(64):
            if self.paused or self.offset >= len(self.content):
                break
            piece = self.content[self.offset : self.offset + self.piece]
            self.offset += len(piece)
            self.consumer.write(piece)
        if self.offset >= len(self.content):
            self.consumer.unregisterProducer()
            self.done.callback(None)
        elif not self.paused:
            self._schedule()

    def pauseProducing(self):
        assert not self.paused, "paused twice without a resume"
        self.paused = True
        self.pauses.append(self.offset)
        if not self.on_pause.called:
            self.on_pause.callback(self.offset)

    def resumeProducing(self):
        assert self.paused, "resumed without a pause"
        self.paused = False
        self.resumes.append(self.offset)
        if self.on_resume is not None:
            self.on_resume()
        if self._call is None and self.offset < len(self.content):
            self._schedule()

    def stopProducing(self):
        if self._call is not None:
            self._call.cancel()
            self._call = None


class _Collect(ProcessProtocol):
    def __init__(self):
        self.out = bytearray()
        self.err = bytearray()
        self.ended: Deferred = Deferred()

    def outReceived(self, data):
        self.out += data

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        self.ended.callback(reason.value)


#: Run by a child process: stream content into a BlobWriter, wait until every chunk is in the
#: temporary file, then die without finishing (os._exit, or SIGKILL sent to itself).
CRASHING_WRITER = r"""
import os, random, signal, sys
from twisted.internet import reactor, task
from mailbox_appliance.store import Store
from mailbox_appliance.store.blobs import TMP_DIR

url, hot, how = sys.argv[1], sys.argv[2], sys.argv[5]
size, seed = int(sys.argv[3]), int(sys.argv[4])
content = random.Random(seed).randbytes(size)
tmp = os.path.join(hot, TMP_DIR)
store = Store(reactor, url, hot)

def on_disk():
    return sum(os.stat(os.path.join(tmp, n)).st_size for n in os.listdir(tmp))

def die():
    sys.stdout.write("WRITTEN %d\n" % on_disk())
    sys.stdout.flush()
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(3)

def write(_):
    writer = store.blobs.open_writer()
    for i in range(0, size, 65536):
        writer.write(content[i:i + 65536])
    deadline = reactor.seconds() + 30
    def check():
        if on_disk() >= size:
            die()
        elif reactor.seconds() > deadline:
            sys.stdout.write("TIMEOUT %d\n" % on_disk())
            sys.stdout.flush()
            os._exit(2)
    task.LoopingCall(check).start(0.01)

store.start().addCallback(write).addErrback(lambda f: (f.printTraceback(), os._exit(4)))
reactor.run()
"""


class BlobStoreTestsMixin:
    """The blob store's file tier; mixed with a database mixin and a TestCase below.

    ``inline_max=0`` sends even small content to files; InlineBlobTestsMixin covers the rest.
    """

    @inlineCallbacks
    def setUp(self):
        self.store = yield started_store(self, self.database_url(), inline_max=0)
        self.root = self.store.blobs.hot.root

    # -- put, dedup -------------------------------------------------------------------------

    @inlineCallbacks
    def test_put_stores_content_at_ab_cd_sha256_with_a_refcount_zero_hot_row(self):
        data = _content(100_000)
        ref = yield self.store.blobs.put(data)
        sha = _sha(data)
        self.assertEqual((ref.sha256, ref.size), (sha, len(data)))
        path = os.path.join(self.root, sha[:2], sha[2:4], sha)
        self.assertEqual(self.store.blobs.path_for(sha), path)
        self.assertEqual(_read_file(path), data)
        self.assertEqual(_blob_files(self.root), [path])
        self.assertEqual(_tmp_files(self.root), [])
        row = yield _blob_row(self.store, sha)
        self.assertEqual((row["size"], row["refcount"], row["tier"]), (len(data), 0, "hot"))
        self.assertIsNotNone(row["zero_since"])
        journal = yield _journal(self.store)
        self.assertIn(("blob.add", {"sha256": sha, "size": len(data), "tier": "hot"}), journal)

    @inlineCallbacks
    def test_identical_content_twice_is_one_file_and_the_same_ref(self):
        data = _content(3000)
        first = yield self.store.blobs.put(data)
        second = yield self.store.blobs.put(bytes(data))
        self.assertEqual(first, second)
        self.assertEqual(len(_blob_files(self.root)), 1)
        self.assertEqual(_tmp_files(self.root), [])
        self.assertEqual((yield _count(self.store, schema.blobs)), 1)

    @inlineCallbacks
    def test_twenty_concurrent_writers_of_the_same_content_make_one_file(self):
        data = _content(blobs.CHUNK_SIZE + 12345, seed=7)
        writers = [self.store.blobs.put(data) for _ in range(20)]
        refs = yield gatherResults(writers, consumeErrors=True)
        self.assertEqual(set(refs), {blobs.BlobRef(_sha(data), len(data))})
        files = _blob_files(self.root)
        self.assertEqual(files, [self.store.blobs.path_for(_sha(data))])
        self.assertEqual(_read_file(files[0]), data)
        self.assertEqual(_tmp_files(self.root), [])
        self.assertEqual((yield _count(self.store, schema.blobs)), 1)
        journal = yield _journal(self.store)
        self.assertEqual([kind for kind, _ in journal].count("blob.add"), 1)

    @inlineCallbacks
    def test_empty_content_is_a_blob_of_size_zero(self):
        ref = yield self.store.blobs.put(b"")
        self.assertEqual(ref, blobs.BlobRef(_sha(b""), 0))
        self.assertEqual(_read_file(self.store.blobs.path_for(ref.sha256)), b"")
        self.assertEqual((yield self.store.blobs.read_bytes(ref.sha256)), b"")
        self.assertEqual((yield _blob_row(self.store, ref.sha256))["size"], 0)

    # -- streaming with back-pressure -------------------------------------------------------

    @inlineCallbacks
    def test_streaming_producer_is_paused_past_high_water_and_resumed_after_drain(self):
        data = _content(6 * 1024 * 1024, seed=3)
        writer = self.store.blobs.open_writer()
        tmp = os.path.join(self.root, blobs.TMP_DIR)
        # Hold every blob thread so nothing reaches the disk until we let it: the backlog is
        # then exactly what the writer has handed to its threads.
        release = threading.Event()
        self.addCleanup(release.set)
        for _ in range(self.store.blobs.pool.max):
            self.store.blobs.pool.callInThread(release.wait)

        on_disk_at_resume = []
        producer = PieceProducer(writer, data, piece=16 * 1024)

        def look_at_disk():
            names = os.listdir(tmp)
            self.assertEqual(len(names), 1)
            on_disk_at_resume.append(
                (producer.offset, os.stat(os.path.join(tmp, names[0])).st_size)
            )

        producer.on_resume = look_at_disk
        producer.start()
        paused_at = yield producer.on_pause

        # Paused as soon as more than HIGH_WATER waits for the disk, not before.
        self.assertGreater(paused_at, blobs.HIGH_WATER)
        self.assertLessEqual(paused_at, blobs.HIGH_WATER + blobs.CHUNK_SIZE)
        self.assertEqual(writer.size, paused_at)
        yield deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(
            (producer.paused, producer.offset, producer.resumes), (True, paused_at, [])
        )

        release.set()
        yield producer.done
        ref = yield writer.finish()

        self.assertGreaterEqual(len(producer.resumes), 1)
        self.assertIn(len(producer.pauses) - len(producer.resumes), (0, 1))
        first_offset, first_on_disk = on_disk_at_resume[0]
        self.assertEqual(first_offset, paused_at)
        # Resumed only once the backlog had drained to half the high-water mark.
        self.assertGreaterEqual(first_on_disk, paused_at - blobs.HIGH_WATER // 2)
        for offset, on_disk in on_disk_at_resume:
            self.assertGreaterEqual(on_disk, offset - blobs.HIGH_WATER // 2)
        self.assertEqual(ref, blobs.BlobRef(_sha(data), len(data)))
        self.assertEqual((yield self.store.blobs.read_bytes(ref.sha256)), data)
        self.assertEqual(_tmp_files(self.root), [])

    @inlineCallbacks
    def test_abort_leaves_no_temporary_file_and_no_blob(self):
        writer = self.store.blobs.open_writer()
        for _ in range(5):
            writer.write(_content(blobs.CHUNK_SIZE // 2, seed=5))
        yield deferLater(reactor, 0.05, lambda: None)
        yield writer.abort()
        self.assertEqual(_tmp_files(self.root), [])
        self.assertEqual(_blob_files(self.root), [])
        self.assertEqual((yield _count(self.store, schema.blobs)), 0)
        self.assertRaises(RuntimeError, writer.write, b"more")

    @inlineCallbacks
    def test_finish_awaited_by_a_producer_resumed_from_the_write_chain_gets_the_ref(self):
        """A producer resumed by a written chunk (inside the writer's chain) that finishes
        and awaits at once must get the BlobRef, not the chain's current result."""
        writer = self.store.blobs.open_writer()
        data = _content(6 * blobs.CHUNK_SIZE, seed=21)
        finished = Deferred()

        @implementer(IPushProducer)
        class FinishOnResume:
            def pauseProducing(self):
                pass

            def stopProducing(self):
                pass

            def resumeProducing(self):
                writer.unregisterProducer()

                async def finish():
                    return await writer.finish()

                Deferred.fromCoroutine(finish()).chainDeferred(finished)

        writer.registerProducer(FinishOnResume(), True)
        writer.write(data)  # over HIGH_WATER: paused; resumed from _chunk_written
        ref = yield finished
        self.assertEqual(ref, blobs.BlobRef(_sha(data), len(data)))

    # -- a writer that dies ----------------------------------------------------------------

    @inlineCallbacks
    def _writer_dies(self, how: str):
        size, seed = 3 * 1024 * 1024, 11
        data = _content(size, seed)
        child = _Collect()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
        args = [self.store.db.url, self.root, str(size), str(seed), how]
        reactor.spawnProcess(
            child, sys.executable, [sys.executable, "-c", CRASHING_WRITER, *args], env=env
        )
        ended = yield child.ended
        self.assertIn(b"WRITTEN", bytes(child.out), bytes(child.err).decode(errors="replace"))
        if how == "kill":
            self.assertEqual(ended.signal, signal.SIGKILL)
        else:
            self.assertEqual(ended.exitCode, 3)

        sha = _sha(data)
        for path in _blob_files(self.root):
            self.assertNotEqual(os.path.basename(path), sha)
            self.assertNotEqual(_read_file(path), data)
        self.assertIsNone((yield _blob_row(self.store, sha)))
        leftovers = _tmp_files(self.root)
        self.assertEqual([_read_file(p) for p in leftovers], [data])

        restarted = BlobStore(reactor, self.store.db, self.root)
        self.addCleanup(restarted.stop)
        removed = yield restarted.start()
        self.assertEqual(removed, 1)
        self.assertEqual(_tmp_files(self.root), [])

    def test_writer_that_exits_mid_write_leaves_only_a_temp_file_that_start_removes(self):
        return self._writer_dies("exit")

    def test_writer_killed_mid_write_leaves_only_a_temp_file_that_start_removes(self):
        return self._writer_dies("kill")

    # -- failures ---------------------------------------------------------------------------

    @inlineCallbacks
    def test_failing_disk_write_errbacks_finish_with_the_oserror_and_leaves_nothing(self):
        tmp = os.path.join(self.root, blobs.TMP_DIR)
        os.rmdir(tmp)
        with open(tmp, "wb"):  # a file where the directory should be: every open fails
            pass
        writer = self.store.blobs.open_writer()
        writer.write(_content(blobs.CHUNK_SIZE + 1))  # fails on its first chunk
        yield self.assertFailure(writer.finish(), OSError)
        yield self.assertFailure(self.store.blobs.put(b"small"), OSError)  # fails in finish
        self.assertEqual(_blob_files(self.root), [])
        self.assertEqual(os.path.getsize(tmp), 0)
        self.assertEqual((yield _count(self.store, schema.blobs)), 0)

    @inlineCallbacks
    def test_failing_rename_leaves_no_file_and_only_a_collectable_row(self):
        data = _content(5000, seed=9)
        sha = _sha(data)
        blocker = os.path.join(self.root, sha[:2])
        with open(blocker, "wb"):  # ab/cd/ cannot be created under a file
            pass
        yield self.assertFailure(self.store.blobs.put(data), OSError)
        self.assertEqual(_tmp_files(self.root), [])
        self.assertEqual(_blob_files(self.root), [blocker])
        # The row went first (a file is never visible without one); nothing refers to it,
        # so garbage collection takes it.
        self.assertEqual((yield _blob_row(self.store, sha))["refcount"], 0)
        os.unlink(blocker)
        self.assertEqual((yield self.store.blobs.collect(grace_seconds=-1)), 1)
        self.assertIsNone((yield _blob_row(self.store, sha)))

    @inlineCallbacks
    def test_start_on_a_path_that_cannot_be_created_fails_with_the_oserror(self):
        blocker = os.path.join(os.path.abspath(self.mktemp()))
        with open(blocker, "wb"):
            pass
        broken = BlobStore(reactor, self.store.db, os.path.join(blocker, "hot"))
        self.addCleanup(broken.stop)
        yield self.assertFailure(broken.start(), OSError)

    # -- reading ----------------------------------------------------------------------------

    @inlineCallbacks
    def test_read_bytes_open_and_send_return_the_exact_content(self):
        data = _content(3 * blobs.CHUNK_SIZE + 17, seed=4)
        ref = yield self.store.blobs.put(data)
        self.assertEqual((yield self.store.blobs.read_bytes(ref.sha256)), data)

        f = yield self.store.blobs.open(ref.sha256)
        try:
            self.assertEqual(f.read(), data)
        finally:
            f.close()

        consumer = PullingConsumer()
        result = yield self.store.blobs.send(ref.sha256, consumer)
        self.assertIsNone(result)
        self.assertEqual(bytes(consumer.data), data)
        self.assertIs(consumer.streaming, False)
        self.assertTrue(consumer.unregistered)

    # -- garbage collection -----------------------------------------------------------------

    @inlineCallbacks
    def test_unreferenced_blob_is_kept_during_the_grace_period(self):
        ref = yield self.store.blobs.put(_content(1000))
        self.assertEqual((yield self.store.blobs.collect(grace_seconds=3600)), 0)
        self.assertIsNotNone((yield _blob_row(self.store, ref.sha256)))
        self.assertTrue(os.path.exists(self.store.blobs.path_for(ref.sha256)))

    @inlineCallbacks
    def _collected_after(self, grace: float):
        ref = yield self.store.blobs.put(_content(1000))
        yield deferLater(reactor, 0.01, lambda: None)
        self.assertEqual((yield self.store.blobs.collect(grace_seconds=grace)), 1)
        self.assertIsNone((yield _blob_row(self.store, ref.sha256)))
        self.assertFalse(os.path.exists(self.store.blobs.path_for(ref.sha256)))
        self.assertEqual(_blob_files(self.root), [])
        journal = yield _journal(self.store)
        self.assertIn(("blob.delete", {"sha256": [ref.sha256]}), journal)

    def test_unreferenced_blob_is_deleted_row_and_file_once_grace_zero_has_passed(self):
        return self._collected_after(0)

    def test_unreferenced_blob_is_deleted_row_and_file_with_a_negative_grace(self):
        return self._collected_after(-1)

    @inlineCallbacks
    def test_blob_file_that_cannot_be_removed_keeps_its_row(self):
        stuck, freed = _content(1000, seed=1), _content(1000, seed=2)
        stuck_ref = yield self.store.blobs.put(stuck)
        freed_ref = yield self.store.blobs.put(freed)
        blocker = os.path.join(self.store.blobs.hot.trash_path_for(stuck_ref.sha256), "x")
        os.makedirs(blocker)  # a file cannot be renamed onto a non-empty directory
        self.assertEqual((yield self.store.blobs.collect(grace_seconds=-1)), 1)
        self.assertEqual(len(self.flushLoggedErrors(IsADirectoryError, OSError)), 1)
        # A file nobody knows about would never be found again; its row stays instead.
        self.assertIsNotNone((yield _blob_row(self.store, stuck_ref.sha256)))
        self.assertTrue(os.path.exists(self.store.blobs.path_for(stuck_ref.sha256)))
        self.assertIsNone((yield _blob_row(self.store, freed_ref.sha256)))
        self.assertFalse(os.path.exists(self.store.blobs.path_for(freed_ref.sha256)))
        self.assertEqual(os.listdir(self.store.blobs.hot.trash), [stuck_ref.sha256])
        os.rmdir(blocker)
        os.rmdir(os.path.dirname(blocker))
        self.assertEqual((yield self.store.blobs.collect(grace_seconds=-1)), 1)
        self.assertEqual(os.listdir(self.store.blobs.hot.trash), [])
        self.assertEqual((yield _count(self.store, schema.blobs)), 0)

    @inlineCallbacks
    def test_start_finishes_a_collection_that_a_crash_interrupted(self):
        kept = yield self.store.blobs.put(_content(900, seed=21))
        dropped = yield self.store.blobs.put(_content(900, seed=22))
        # As if a crash came after the files moved to the trash: one row's deletion was
        # committed, the other's was not.
        for ref in (kept, dropped):
            os.rename(
                self.store.blobs.path_for(ref.sha256),
                self.store.blobs.hot.trash_path_for(ref.sha256),
            )
        yield self.store.db.write(
            lambda conn: conn.execute(
                schema.blobs.delete().where(schema.blobs.c.sha256 == dropped.sha256)
            )
        )
        restarted = BlobStore(reactor, self.store.db, self.root)
        yield restarted.start()
        self.addCleanup(restarted.stop)
        self.assertEqual(_read_file(self.store.blobs.path_for(kept.sha256)), _content(900, 21))
        self.assertFalse(os.path.exists(self.store.blobs.path_for(dropped.sha256)))
        self.assertEqual(os.listdir(self.store.blobs.hot.trash), [])

    @inlineCallbacks
    def test_calls_after_stop_fail_instead_of_hanging(self):
        ref = yield self.store.blobs.put(_content(300, seed=23))
        self.store.blobs.stop()
        yield self.assertFailure(self.store.blobs.read_bytes(ref.sha256), StoreStopped)
        yield self.assertFailure(self.store.blobs.put(_content(300, seed=24)), StoreStopped)

    @inlineCallbacks
    def test_referenced_blob_is_never_collected(self):
        account_id = yield self._account("keep@example.test")
        ref = yield self.store.blobs.put(_content(1000))
        yield self.store.deliver(ref, [(account_id, "INBOX")])
        self.assertEqual((yield self.store.blobs.collect(grace_seconds=-1)), 0)
        self.assertEqual((yield self.store.blobs.read_bytes(ref.sha256)), _content(1000))

    @inlineCallbacks
    def test_incref_of_a_collected_blob_raises_blob_missing(self):
        account_id = yield self._account("late@example.test")
        ref = yield self.store.blobs.put(_content(1000))
        yield self.store.blobs.collect(grace_seconds=-1)
        failure = yield self.assertFailure(
            self.store.db.write(lambda conn: incref_txn(conn, ref.sha256)), BlobMissing
        )
        self.assertEqual(failure.sha256, ref.sha256)
        yield self.assertFailure(self.store.deliver(ref, [(account_id, "INBOX")]), BlobMissing)
        self.assertEqual((yield _count(self.store, schema.messages)), 0)
        self.assertEqual((yield _count(self.store, schema.mailbox_entries)), 0)

    # -- references from mail ---------------------------------------------------------------

    @inlineCallbacks
    def _account(self, address: str):
        domain = address.split("@", 1)[1]
        if not (yield self.store.is_local_domain(domain)):
            yield self.store.add_domain(domain)
        account_id = yield self.store.add_account(address, "not-a-real-hash", 10**9)
        return account_id

    @inlineCallbacks
    def test_deliver_takes_one_blob_reference_per_message_and_journals_it(self):
        alice = yield self._account("alice@example.test")
        bob = yield self._account("bob@example.test")
        data = _content(4321, seed=2)
        ref = yield self.store.blobs.put(data)

        delivered = yield self.store.deliver(ref, [(alice, "INBOX")])
        self.assertEqual([(d.account_id, d.uid) for d in delivered], [(alice, 1)])
        row = yield _blob_row(self.store, ref.sha256)
        self.assertEqual((row["refcount"], row["zero_since"]), (1, None))

        # One more message for two recipients: still one more blob reference, not two.
        delivered = yield self.store.deliver(ref, [(alice, "INBOX"), (bob, "INBOX")])
        self.assertEqual([(d.account_id, d.uid) for d in delivered], [(alice, 2), (bob, 1)])
        self.assertEqual((yield _blob_row(self.store, ref.sha256))["refcount"], 2)

        messages = yield _rows(self.store, schema.messages)
        self.assertEqual(
            sorted((m["blob_sha256"], m["size"], m["refcount"]) for m in messages),
            [(ref.sha256, len(data), 1), (ref.sha256, len(data), 2)],
        )
        self.assertEqual((yield _count(self.store, schema.mailbox_entries)), 3)
        kinds = [kind for kind, _ in (yield _journal(self.store))]
        self.assertEqual(kinds.count("blob.add"), 1)
        self.assertEqual(kinds.count("message.add"), 3)
        self.assertLess(kinds.index("blob.add"), kinds.index("message.add"))
        alice_row = yield self.store.account("alice@example.test")
        bob_row = yield self.store.account("bob@example.test")
        self.assertEqual(
            (alice_row["used_bytes"], bob_row["used_bytes"]), (2 * len(data), len(data))
        )

    @inlineCallbacks
    def test_remove_account_releases_the_blob_to_garbage_collection(self):
        carol = yield self._account("carol@example.test")
        ref = yield self.store.blobs.put(_content(2000, seed=6))
        yield self.store.deliver(ref, [(carol, "INBOX")])
        yield self.store.deliver(ref, [(carol, "Archive")])
        self.assertEqual((yield _blob_row(self.store, ref.sha256))["refcount"], 2)

        yield self.store.remove_account("carol@example.test")
        row = yield _blob_row(self.store, ref.sha256)
        self.assertEqual(row["refcount"], 0)
        self.assertIsNotNone(row["zero_since"])
        self.assertEqual((yield _count(self.store, schema.messages)), 0)
        self.assertEqual((yield self.store.blobs.collect(grace_seconds=3600)), 0)
        self.assertEqual((yield self.store.blobs.collect(grace_seconds=-1)), 1)
        self.assertIsNone((yield _blob_row(self.store, ref.sha256)))
        self.assertFalse(os.path.exists(self.store.blobs.path_for(ref.sha256)))

    # -- interfaces -------------------------------------------------------------------------

    def test_hot_tier_provides_iblobtier(self):
        self.assertTrue(verifyObject(IBlobTier, self.store.blobs.hot))
        self.assertTrue(verifyObject(IBlobTier, HotTier(self.mktemp())))


class InlineBlobTestsMixin:
    """Small content lives in its row, made durable by the delivering transaction."""

    @inlineCallbacks
    def setUp(self):
        self.store = yield started_store(self, self.database_url(), inline_max=64 * 1024)
        yield self.store.add_domain("example.test")
        self.alice = yield self.store.add_account("alice@example.test", "not-a-hash", 10**9)

    def _files(self) -> list[str]:
        root = self.store.blobs.hot.root
        return [
            os.path.join(d, n)
            for d, _, names in os.walk(root)
            for n in names
            if not d.startswith(os.path.join(root, "tmp"))
        ]

    @inlineCallbacks
    def test_small_content_is_stored_only_by_the_delivery_that_uses_it(self):
        data = _content(10 * 1024, seed=11)
        ref = yield self.store.blobs.put(data)
        self.assertEqual((ref.sha256, ref.size, ref.inline), (_sha(data), len(data), data))
        self.assertIsNone((yield _blob_row(self.store, ref.sha256)), "nothing stored yet")
        yield self.store.deliver(ref, [(self.alice, "INBOX")])
        row = yield _blob_row(self.store, ref.sha256)
        self.assertEqual((row["tier"], row["refcount"], row["data"]), ("inline", 1, data))
        self.assertEqual(self._files(), [], "inline content never touches a file")
        self.assertEqual((yield self.store.blobs.read_bytes(ref.sha256)), data)
        f = yield self.store.blobs.open(ref.sha256)
        with f:
            self.assertEqual(f.read(), data)

    @inlineCallbacks
    def test_same_small_content_delivered_twice_is_stored_once(self):
        data = _content(2048, seed=12)
        first = yield self.store.blobs.put(data)
        second = yield self.store.blobs.put(data)
        yield self.store.deliver(first, [(self.alice, "INBOX")])
        yield self.store.deliver(second, [(self.alice, "Archive")])
        self.assertEqual((yield _count(self.store, schema.blobs)), 1)
        self.assertEqual((yield _blob_row(self.store, first.sha256))["refcount"], 2)

    @inlineCallbacks
    def test_content_over_inline_max_goes_to_a_file(self):
        data = _content(64 * 1024 + 1, seed=13)
        ref = yield self.store.blobs.put(data)
        self.assertIsNone(ref.inline)
        self.assertEqual((yield _blob_row(self.store, ref.sha256))["tier"], "hot")
        self.assertTrue(os.path.exists(self.store.blobs.path_for(ref.sha256)))

    @inlineCallbacks
    def test_a_file_for_content_already_stored_inline_is_not_kept(self):
        data = _content(1000, seed=14)
        yield self.store.deliver((yield self.store.blobs.put(data)), [(self.alice, "INBOX")])
        self.store.blobs.inline_max = 0  # as after a configuration change
        ref = yield self.store.blobs.put(data)
        self.assertIsNone(ref.inline)
        yield self.store.deliver(ref, [(self.alice, "INBOX")])
        row = yield _blob_row(self.store, ref.sha256)
        self.assertEqual((row["tier"], row["refcount"]), ("inline", 2))
        self.assertEqual(self._files(), [])
        self.assertEqual((yield self.store.blobs.read_bytes(ref.sha256)), data)

    @inlineCallbacks
    def test_inline_delivery_onto_an_unreferenced_file_row_without_its_file_keeps_the_bytes(self):
        # A row registered for a file whose rename a crash prevented, while inline_max was
        # smaller: delivering the same content inline must not point at the missing file.
        data = _content(800, seed=17)
        sha = _sha(data)
        now = datetime.datetime.now(datetime.UTC)
        row = {"sha256": sha, "size": len(data), "tier": "hot", "refcount": 0}
        row.update(created=now, last_access=now, zero_since=now)
        yield self.store.db.write(lambda conn: conn.execute(schema.blobs.insert().values(**row)))
        ref = yield self.store.blobs.put(data)
        yield self.store.deliver(ref, [(self.alice, "INBOX")])
        stored = yield _blob_row(self.store, sha)
        self.assertEqual((stored["tier"], stored["refcount"]), ("inline", 1))
        self.assertEqual((yield self.store.blobs.read_bytes(sha)), data)

    @inlineCallbacks
    def test_failed_delivery_stores_no_inline_content(self):
        ref = yield self.store.blobs.put(_content(500, seed=15))
        yield self.assertFailure(self.store.deliver(ref, [(self.alice, "NoSuchBox")]), Exception)
        self.assertIsNone((yield _blob_row(self.store, ref.sha256)))
        self.assertEqual((yield _count(self.store, schema.messages)), 0)

    @inlineCallbacks
    def test_unreferenced_inline_blob_is_collected_after_the_grace_period(self):
        ref = yield self.store.blobs.put(_content(700, seed=16))
        yield self.store.deliver(ref, [(self.alice, "INBOX")])
        yield self.store.remove_account("alice@example.test")
        self.assertEqual((yield self.store.blobs.collect(grace_seconds=3600)), 0)
        self.assertEqual((yield self.store.blobs.collect(grace_seconds=-1)), 1)
        self.assertIsNone((yield _blob_row(self.store, ref.sha256)))


class InlineBlobSQLiteTests(SQLiteMixin, InlineBlobTestsMixin, TestCase):
    pass


class InlineBlobPostgreSQLTests(PostgreSQLMixin, InlineBlobTestsMixin, TestCase):
    pass


class BlobStoreSQLiteTests(SQLiteMixin, BlobStoreTestsMixin, TestCase):
    """The blob store on a real SQLite file."""


class BlobStorePostgreSQLTests(PostgreSQLMixin, BlobStoreTestsMixin, TestCase):
    """The blob store on a real PostgreSQL server (skipped without one)."""
