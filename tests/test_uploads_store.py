"""The file-transfer station's uploads (store/uploads.py) and rows (store/transfers.py).

Every test runs against a real store: a migrated SQLite file, and again on PostgreSQL when
``MAILBOX_APPLIANCE_TEST_POSTGRES`` names a server.  Upload files and blobs live in a real
directory; nothing is mocked.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import random
import sys

from sqlalchemy import select
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from mailbox_appliance.errors import (
    ChecksumMismatch,
    OffsetMismatch,
    UploadConflict,
    UploadGone,
    UploadTooLarge,
)
from mailbox_appliance.interfaces import IUploadBackend, IUploadWriter
from mailbox_appliance.store import schema, transfers, uploadwriter, writeback
from mailbox_appliance.store.uploads import UploadStore
from mailbox_appliance.store.uploadwriter import HIGH_WATER
from tests.support.databases import PostgreSQLMixin, SQLiteMixin
from tests.support.store import started_store

MiB = 1024 * 1024
#: An odd chunk size (a prime), so chunks never line up with the writer's own.
ODD = 65521


def _content(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return None


class _UploadTests:
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.now = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
        self.store = yield started_store(self, self.database_url())
        yield self.store.add_domain("a.test")
        self.alice = yield self.store.add_account("alice@a.test", "h", 10**9)
        self.bob = yield self.store.add_account("bob@a.test", "h", 10**9)
        self.uploads = yield self._uploads()
        self.store.uploads = self.uploads  # the Store's own methods on the test's clock and limits

    @inlineCallbacks
    def _uploads(self, **kw):
        """A started UploadStore on the test's store (a second one simulates a restart)."""
        limits = {
            "max_file_size": 64 * MiB,
            "station_capacity": 100 * MiB,
            "cloud_capacity": MiB,
            "upload_expires": 3600,
            "station_expiry": 7 * 86400,
        }
        limits.update(kw)
        uploads = UploadStore(
            reactor, self.store.db, self.store.blobs, clock=lambda: self.now, **limits
        )
        yield uploads.start()
        return uploads

    @inlineCallbacks
    def _patch(self, upload_id, offset, data, *, owner=None, checksum=None, end="finish"):
        """One PATCH: ``data`` in odd-sized writes, waiting whenever write() says so."""
        owner = self.alice if owner is None else owner
        writer = yield self.uploads.open_writer(owner, upload_id, offset, checksum)
        for i in range(0, len(data), ODD):
            waiting = writer.write(data[i : i + ODD])
            if waiting is not None:
                yield waiting
        info = yield getattr(writer, end)()
        return info

    @inlineCallbacks
    def _upload(self, data, owner=None, name=b"report.pdf"):
        owner = self.alice if owner is None else owner
        info = yield self.uploads.create(owner, len(data), {"filename": name})
        info = yield self._patch(info.id, 0, data, owner=owner)
        return info

    def _blob_row(self, sha256):
        def _txn(conn):
            b = schema.blobs
            row = conn.execute(select(b.c.refcount, b.c.tier).where(b.c.sha256 == sha256)).first()
            return None if row is None else tuple(row)

        return self.store.db.read(_txn)

    def _files(self, owner):
        return self.store.db.read(lambda conn: transfers.files_txn(conn, owner))

    @inlineCallbacks
    def _read_all(self, upload_id, owner=None):
        owner = self.alice if owner is None else owner
        size, sha256, read = yield self.uploads.open_content(owner, upload_id)
        out = bytearray()
        while len(out) < size:
            out += yield read(len(out), 1000003)
        return size, sha256, bytes(out)

    # -- the contract ------------------------------------------------------------------------

    @inlineCallbacks
    def test_the_store_and_its_writer_provide_the_interfaces(self):
        verifyObject(IUploadBackend, self.uploads)
        info = yield self.uploads.create(self.alice, 10, {})
        writer = yield self.uploads.open_writer(self.alice, info.id, 0)
        verifyObject(IUploadWriter, writer)
        yield writer.keep()

    @inlineCallbacks
    def test_upload_ids_are_long_url_safe_tokens(self):
        info = yield self.uploads.create(self.alice, 10, {})
        self.assertRegex(info.id, r"^[A-Za-z0-9_-]{22,}$")  # >= 128 bits of base64url

    @inlineCallbacks
    def test_upload_in_odd_chunks_becomes_a_byte_exact_blob(self):
        data = _content(3 * MiB + 17)
        info = yield self.uploads.create(self.alice, len(data), {"filename": b"big.bin"})
        self.assertEqual((info.offset, info.length, info.complete), (0, len(data), False))
        self.assertEqual(info.expires, self.now + datetime.timedelta(seconds=3600))
        half = 1234567
        info = yield self._patch(info.id, 0, data[:half])
        self.assertEqual((info.offset, info.sha256), (half, None))
        self.assertEqual(_file_size(self.uploads.path(info.id)), half)
        info = yield self._patch(info.id, half, data[half:])
        self.assertTrue(info.complete)
        self.assertEqual(info.sha256, _sha(data))
        # The upload file became the blob by a rename.
        self.assertIsNone(_file_size(self.uploads.path(info.id)))
        with open(self.store.blobs.path_for(info.sha256), "rb") as f:
            self.assertEqual(f.read(), data)
        self.assertEqual((yield self._blob_row(info.sha256)), (1, "hot"))
        files = yield self._files(self.alice)
        self.assertEqual(
            [(f["name"], f["size"], f["kind"]) for f in files], [("big.bin", len(data), "station")]
        )
        self.assertEqual(files[0]["expires"], self.now + datetime.timedelta(days=7))
        size, sha256, content = yield self._read_all(info.id)
        self.assertEqual((size, sha256), (len(data), _sha(data)))
        self.assertEqual(content, data)
        again = yield self.uploads.info(self.alice, info.id)
        self.assertEqual((again.complete, again.sha256), (True, _sha(data)))

    @inlineCallbacks
    def test_an_empty_upload_is_complete_at_once(self):
        info = yield self.uploads.create(self.alice, 0, {"name": b"empty"})
        self.assertEqual((info.complete, info.sha256), (True, _sha(b"")))
        size, sha256, content = yield self._read_all(info.id)
        self.assertEqual((size, content), (0, b""))

    @inlineCallbacks
    def test_another_owner_sees_no_upload(self):
        info = yield self.uploads.create(self.alice, 10, {})
        self.assertIsNone((yield self.uploads.info(self.bob, info.id)))
        yield self.assertFailure(self.uploads.open_writer(self.bob, info.id, 0), UploadGone)
        yield self.assertFailure(self.uploads.terminate(self.bob, info.id), UploadGone)
        self.assertIsNone((yield self.uploads.info(self.alice, "../../etc/passwd")))

    # -- resuming ----------------------------------------------------------------------------

    @inlineCallbacks
    def test_resume_at_the_recorded_offset_after_a_restart(self):
        data = _content(2 * MiB + 3, seed=1)
        info = yield self.uploads.create(self.alice, len(data), {})
        first = 700001
        yield self._patch(info.id, 0, data[:first])
        # Bytes that arrived after the last acknowledgement, then a crash.
        with open(self.uploads.path(info.id), "ab") as f:
            f.write(b"never acknowledged")
        self.uploads = yield self._uploads()  # the process restarts: no hash state in memory
        info = yield self.uploads.info(self.alice, info.id)
        self.assertEqual(info.offset, first)
        info = yield self._patch(info.id, first, data[first:])
        self.assertEqual(info.sha256, _sha(data))
        size, _, content = yield self._read_all(info.id)
        self.assertEqual(content, data)

    @inlineCallbacks
    def test_a_patch_elsewhere_is_an_offset_mismatch(self):
        info = yield self.uploads.create(self.alice, 100, {})
        yield self._patch(info.id, 0, b"x" * 10)
        error = yield self.assertFailure(
            self.uploads.open_writer(self.alice, info.id, 5), OffsetMismatch
        )
        self.assertEqual(error.current, 10)
        # The refused attempt left no lock behind.
        info = yield self._patch(info.id, 10, b"y" * 10)
        self.assertEqual(info.offset, 20)

    @inlineCallbacks
    def test_two_writers_at_once_conflict(self):
        info = yield self.uploads.create(self.alice, 100, {})
        writer = yield self.uploads.open_writer(self.alice, info.id, 0)
        yield self.assertFailure(self.uploads.open_writer(self.alice, info.id, 0), UploadConflict)
        yield writer.keep()

    @inlineCallbacks
    def test_a_chunk_that_fails_its_checksum_is_discarded(self):
        data = _content(MiB + 5, seed=2)
        info = yield self.uploads.create(self.alice, len(data), {})
        first = 300007
        digest = hashlib.sha1(data[:first]).digest()
        info = yield self._patch(info.id, 0, data[:first], checksum=("sha1", digest))
        self.assertEqual(info.offset, first)
        bad = ("sha256", hashlib.sha256(b"something else").digest())
        yield self.assertFailure(
            self._patch(info.id, first, data[first:], checksum=bad), ChecksumMismatch
        )
        self.assertEqual(_file_size(self.uploads.path(info.id)), first)
        self.assertEqual((yield self.uploads.info(self.alice, info.id)).offset, first)
        good = ("sha256", hashlib.sha256(data[first:]).digest())
        info = yield self._patch(info.id, first, data[first:], checksum=good)
        self.assertEqual(info.sha256, _sha(data))  # the hash state was put back too

    @inlineCallbacks
    def test_keep_records_what_arrived_before_the_client_vanished(self):
        info = yield self.uploads.create(self.alice, MiB, {})
        bad = ("sha1", b"\0" * 20)  # keep() applies no checksum
        info = yield self._patch(info.id, 0, b"z" * 100003, checksum=bad, end="keep")
        self.assertEqual(info.offset, 100003)
        self.assertEqual(_file_size(self.uploads.path(info.id)), 100003)
        self.assertEqual((yield self.uploads.info(self.alice, info.id)).offset, 100003)

    @inlineCallbacks
    def test_write_returns_a_deferred_when_the_disk_falls_behind(self):
        info = yield self.uploads.create(self.alice, 16 * MiB, {})
        writer = yield self.uploads.open_writer(self.alice, info.id, 0)
        waits = [writer.write(b"w" * MiB) for _ in range(8)]  # never waiting: a rude caller
        self.assertIsNone(waits[0])
        first = next(i for i, w in enumerate(waits) if w is not None)
        self.assertLessEqual(first * MiB, HIGH_WATER + MiB)
        self.assertIsInstance(waits[-1], Deferred)
        yield waits[-1]
        info = yield writer.finish()
        self.assertEqual(info.offset, 8 * MiB)

    @inlineCallbacks
    def test_finish_called_as_the_disk_catches_up_gets_the_real_outcome(self):
        """A streaming request resumes when the writer's wait fires, from inside the writer's
        chain of chunk writes; its body may end there and finish() be awaited at once."""
        data = _content(8 * MiB)
        info = yield self.uploads.create(self.alice, len(data), {})
        writer = yield self.uploads.open_writer(self.alice, info.id, 0)
        waits = [writer.write(data[i : i + MiB]) for i in range(0, len(data), MiB)]
        waiter = next(w for w in waits if w is not None)
        outcome: Deferred = Deferred()

        async def body_ends():
            return await writer.finish()

        waiter.addCallback(lambda _: Deferred.fromCoroutine(body_ends()).chainDeferred(outcome))
        info = yield outcome
        self.assertIsNotNone(info)
        self.assertTrue(info.complete)
        self.assertEqual(info.sha256, _sha(data))

    # -- limits ------------------------------------------------------------------------------

    @inlineCallbacks
    def test_limits_are_enforced_before_any_byte(self):
        error = yield self.assertFailure(
            self.uploads.create(self.alice, 65 * MiB, {}), UploadTooLarge
        )
        self.assertIn("largest file", str(error))
        yield self.uploads.create(self.alice, 60 * MiB, {})
        error = yield self.assertFailure(
            self.uploads.create(self.alice, 60 * MiB, {}), UploadTooLarge
        )
        self.assertIn("station capacity", str(error))
        # Another account has its own capacity.
        yield self.uploads.create(self.bob, 60 * MiB, {})

    @inlineCallbacks
    def test_a_deferred_length_is_checked_when_declared(self):
        yield self.uploads.create(self.alice, 60 * MiB, {})
        info = yield self.uploads.create(self.alice, None, {})
        self.assertIsNone(info.length)
        info = yield self._patch(info.id, 0, b"d" * 1000)
        self.assertEqual((info.offset, info.length), (1000, None))
        yield self.assertFailure(
            self.uploads.declare_length(self.alice, info.id, 50 * MiB), UploadTooLarge
        )
        yield self.assertFailure(
            self.uploads.declare_length(self.alice, info.id, 999), UploadConflict
        )
        info = yield self.uploads.declare_length(self.alice, info.id, 1000)
        self.assertEqual(info.sha256, _sha(b"d" * 1000))  # declared where it was: complete
        yield self.assertFailure(
            self.uploads.declare_length(self.alice, info.id, 1000), UploadConflict
        )

    @inlineCallbacks
    def test_bytes_past_the_length_are_refused(self):
        info = yield self.uploads.create(self.alice, 10, {})
        writer = yield self.uploads.open_writer(self.alice, info.id, 0)
        yield self.assertFailure(writer.write(b"0123456789abc"), UploadTooLarge)
        info = yield writer.keep()
        self.assertEqual((info.offset, info.sha256), (10, _sha(b"0123456789")))
        yield self.assertFailure(self.uploads.open_writer(self.alice, info.id, 10), UploadConflict)

    # -- expiry and reaping --------------------------------------------------------------------

    @inlineCallbacks
    def test_an_expired_upload_is_gone(self):
        info = yield self.uploads.create(self.alice, 100, {})
        yield self._patch(info.id, 0, b"e" * 10)
        self.now += datetime.timedelta(seconds=3601)
        error = yield self.assertFailure(self.uploads.info(self.alice, info.id), UploadGone)
        self.assertTrue(error.expired)
        error = yield self.assertFailure(
            self.uploads.open_writer(self.alice, info.id, 10), UploadGone
        )
        self.assertTrue(error.expired)
        self.assertIsNone((yield self.uploads.info(self.bob, info.id)))  # not bob's: absent
        counts = yield self.uploads.reap_expired()
        self.assertEqual(counts, {"uploads": 1, "files": 0})
        self.assertIsNone(_file_size(self.uploads.path(info.id)))

    @inlineCallbacks
    def test_progress_postpones_expiry(self):
        info = yield self.uploads.create(self.alice, 100, {})
        self.now += datetime.timedelta(seconds=3000)
        yield self._patch(info.id, 0, b"e" * 10)
        self.now += datetime.timedelta(seconds=3000)
        self.assertEqual((yield self.uploads.info(self.alice, info.id)).offset, 10)

    @inlineCallbacks
    def test_reaping_drops_expired_station_files_but_never_cloud_files(self):
        data = _content(200000, seed=3)
        info = yield self._upload(data)

        def _cloud(conn):
            return transfers.add_file_txn(
                conn, self.alice, "kept", info.sha256, len(data), "cloud", self.now, None
            )

        yield self.store.db.write(_cloud)
        self.assertEqual((yield self._blob_row(info.sha256)), (2, "hot"))
        self.now += datetime.timedelta(days=8)
        counts = yield self.uploads.reap_expired()
        self.assertEqual(counts, {"uploads": 0, "files": 1})
        self.assertEqual([f["name"] for f in (yield self._files(self.alice))], ["kept"])
        self.assertEqual((yield self._blob_row(info.sha256)), (1, "hot"))
        self.assertIsNone((yield self.uploads.info(self.alice, info.id)))

    # -- the cloud drive: moving files -------------------------------------------------------

    @inlineCallbacks
    def _uploaded_file(self, data, owner=None, name=b"report.pdf"):
        """Upload ``data``; the owner's new file (file names differ within a test)."""
        owner = self.alice if owner is None else owner
        yield self._upload(data, owner, name)
        files = yield self._files(owner)
        return next(f for f in files if f["name"] == name.decode())

    def _share(self, file_id, days):
        expires = self.now + datetime.timedelta(days=days)
        return self.store.db.write(
            lambda c: transfers.create_share_txn(c, file_id, self.now, expires)
        )

    @inlineCallbacks
    def _share_expiries(self, file_id):
        shares = yield self.store.shares(file_id)
        return {share["token"]: share["expires"] for share in shares}

    def _journal(self, kind):
        def _txn(conn):
            j = schema.journal
            return list(
                conn.execute(
                    select(j.c.payload).where(j.c.kind == kind).order_by(j.c.seq)
                ).scalars()
            )

        return self.store.db.read(_txn)

    @inlineCallbacks
    def test_a_file_moves_to_the_cloud_drive_and_back(self):
        data = _content(200000, seed=12)
        file = yield self._uploaded_file(data)
        self.assertEqual(file["expires"], self.now + datetime.timedelta(days=7))
        soon = yield self._share(file["id"], 2)

        kept = yield self.store.move_file(file["id"], self.alice, "cloud")
        self.assertEqual({**file, "kind": "cloud", "expires": None}, kept)
        self.assertEqual((yield self._files(self.alice)), [kept])
        self.assertEqual((yield self.store.cloud_usage(self.alice)), len(data))
        self.assertEqual((yield self.store.station_usage(self.alice)), 0)
        self.assertEqual((yield self.store.move_file(file["id"], self.alice, "cloud")), kept)
        # While kept, a link may outlive the station's lifetime.
        late = yield self._share(file["id"], 365)

        self.now += datetime.timedelta(days=10)
        back = yield self.store.move_file(file["id"], self.alice, "station")
        expires = self.now + datetime.timedelta(days=7)
        self.assertEqual({**file, "expires": expires}, back)
        self.assertEqual((yield self._files(self.alice)), [back])
        self.assertEqual((yield self.store.cloud_usage(self.alice)), 0)
        self.assertEqual((yield self.store.station_usage(self.alice)), len(data))
        # Links are capped at the file's new expiry; shorter ones keep theirs.
        self.assertEqual(
            (yield self._share_expiries(file["id"])),
            {soon["token"]: soon["expires"], late["token"]: expires},
        )
        self.assertEqual(
            (yield self._journal("file.move")),
            [
                {"id": file["id"], "account_id": self.alice, "kind": "cloud", "expires": None},
                {
                    "id": file["id"],
                    "account_id": self.alice,
                    "kind": "station",
                    "expires": expires.isoformat(),
                },
            ],
        )

    @inlineCallbacks
    def test_a_file_over_the_cloud_drive_capacity_stays_where_it_is(self):
        first = yield self._uploaded_file(_content(600000, seed=13), name=b"first")
        second = yield self._uploaded_file(_content(600000, seed=14), name=b"second")
        yield self.store.move_file(first["id"], self.alice, "cloud")
        error = yield self.assertFailure(
            self.store.move_file(second["id"], self.alice, "cloud"), UploadTooLarge
        )
        self.assertEqual(
            str(error),
            f"over the cloud drive capacity of {MiB} bytes for this account"
            " (600000 bytes in use, 600000 more asked for)",
        )
        self.assertEqual((yield self.store.file(second["id"])), second)
        self.assertEqual(len((yield self._journal("file.move"))), 1)
        # Another account's cloud drive is its own.
        bobs = yield self._uploaded_file(_content(600000, seed=14), owner=self.bob)
        self.assertEqual(
            (yield self.store.move_file(bobs["id"], self.bob, "cloud"))["kind"], "cloud"
        )

    @inlineCallbacks
    def test_a_full_station_takes_no_file_back_from_the_cloud_drive(self):
        file = yield self._uploaded_file(_content(300000, seed=15))
        kept = yield self.store.move_file(file["id"], self.alice, "cloud")
        for _ in range(2):  # declared lengths count: 100 MiB, all the station holds
            yield self.uploads.create(self.alice, 50 * MiB, {})
        error = yield self.assertFailure(
            self.store.move_file(file["id"], self.alice, "station"), UploadTooLarge
        )
        self.assertIn("station capacity", str(error))
        self.assertEqual((yield self.store.file(file["id"])), kept)

    @inlineCallbacks
    def test_another_accounts_file_is_not_found(self):
        file = yield self._uploaded_file(_content(1000, seed=16))
        for file_id in (file["id"], transfers.new_token()):
            for kind in ("cloud", "station"):
                self.assertIsNone((yield self.store.move_file(file_id, self.bob, kind)))
        self.assertEqual((yield self.store.file(file["id"])), file)
        self.assertEqual((yield self._journal("file.move")), [])

    @inlineCallbacks
    def test_an_expired_station_file_is_not_rescued(self):
        file = yield self._uploaded_file(_content(1000, seed=17))
        self.now += datetime.timedelta(days=7)
        error = yield self.assertFailure(
            self.store.move_file(file["id"], self.alice, "cloud"), UploadGone
        )
        self.assertTrue(error.expired)
        self.assertEqual((yield self.store.file(file["id"])), file)

    @inlineCallbacks
    def test_reaping_keeps_a_file_moved_to_the_cloud_drive(self):
        kept = yield self._uploaded_file(_content(1000, seed=18), name=b"kept")
        yield self._uploaded_file(_content(1000, seed=19), name=b"dropped")
        kept = yield self.store.move_file(kept["id"], self.alice, "cloud")
        self.now += datetime.timedelta(days=8)
        counts = yield self.store.reap_transfers()
        self.assertEqual(counts, {"uploads": 0, "files": 1})
        self.assertEqual((yield self._files(self.alice)), [kept])

    # -- dedupe and the fast path --------------------------------------------------------------

    @inlineCallbacks
    def test_the_same_content_twice_is_one_blob_with_two_references(self):
        data = _content(300000, seed=4)
        one = yield self._upload(data, name=b"one")
        two = yield self._upload(data, name=b"two")
        self.assertEqual(one.sha256, two.sha256)
        self.assertEqual((yield self._blob_row(one.sha256)), (2, "hot"))
        self.assertIsNone(_file_size(self.uploads.path(two.id)))  # deleted, not placed
        names = sorted(f["name"] for f in (yield self._files(self.alice)))
        self.assertEqual(names, ["one", "two"])
        _, _, content = yield self._read_all(two.id)
        self.assertEqual(content, data)

    @inlineCallbacks
    def test_the_fast_path_works_for_the_owner_only(self):
        data = _content(300000, seed=5)
        info = yield self._upload(data)
        claimed = yield self.uploads.claim_existing(self.alice, info.sha256, len(data), "copy")
        self.assertEqual((claimed["name"], claimed["size"]), ("copy", len(data)))
        self.assertEqual((yield self._blob_row(info.sha256)), (2, "hot"))
        # Bob does not learn that Alice holds it.
        self.assertIsNone(
            (yield self.uploads.claim_existing(self.bob, info.sha256, len(data), "x"))
        )
        self.assertIsNone((yield self.uploads.claim_existing(self.alice, info.sha256, 5, "x")))
        self.assertEqual((yield self._files(self.bob)), [])

    # -- concatenation -----------------------------------------------------------------------

    @inlineCallbacks
    def test_a_final_upload_is_its_parts_in_order(self):
        parts = [_content(n, seed=n) for n in (400009, 0, 123457)]
        ids = []
        for part in parts:
            info = yield self.uploads.create(self.alice, len(part), {}, partial=True)
            if part:
                info = yield self._patch(info.id, 0, part)
            self.assertEqual((info.partial, info.complete, info.sha256), (True, True, None))
            ids.append(info.id)
        yield self.assertFailure(self.uploads.open_content(self.alice, ids[0]), UploadGone)
        final = yield self.uploads.create(self.alice, None, {"filename": b"all"}, parts=ids)
        whole = b"".join(parts)
        self.assertEqual((final.final, final.complete), (True, True))
        self.assertEqual(final.sha256, _sha(whole))
        _, _, content = yield self._read_all(final.id)
        self.assertEqual(content, whole)
        for part_id in ids:
            self.assertIsNone((yield self.uploads.info(self.alice, part_id)))
            self.assertIsNone(_file_size(self.uploads.path(part_id)))
        yield self.assertFailure(self.uploads.open_writer(self.alice, final.id, 0), UploadConflict)

    @inlineCallbacks
    def test_a_final_upload_needs_finished_partials_of_its_owner(self):
        unfinished = yield self.uploads.create(self.alice, 10, {}, partial=True)
        yield self.assertFailure(
            self.uploads.create(self.alice, None, {}, parts=[unfinished.id]), UploadConflict
        )
        plain = yield self.uploads.create(self.alice, 10, {})
        yield self.assertFailure(
            self.uploads.create(self.alice, None, {}, parts=[plain.id]), UploadConflict
        )
        yield self.assertFailure(
            self.uploads.create(self.bob, None, {}, parts=[unfinished.id]), UploadGone
        )
        self.assertEqual(sorted(os.listdir(self.uploads.dir)), [])

    # -- termination -------------------------------------------------------------------------

    @inlineCallbacks
    def test_terminate_deletes_the_row_and_the_file(self):
        info = yield self.uploads.create(self.alice, 100, {})
        yield self._patch(info.id, 0, b"t" * 10)
        yield self.uploads.terminate(self.alice, info.id)
        self.assertIsNone((yield self.uploads.info(self.alice, info.id)))
        self.assertIsNone(_file_size(self.uploads.path(info.id)))
        yield self.assertFailure(self.uploads.terminate(self.alice, info.id), UploadGone)

    @inlineCallbacks
    def test_terminating_a_complete_upload_releases_its_blob(self):
        info = yield self._upload(_content(100000, seed=6))
        yield self.uploads.terminate(self.alice, info.id)
        self.assertEqual((yield self._files(self.alice)), [])
        self.assertEqual((yield self._blob_row(info.sha256)), (0, "hot"))

    @inlineCallbacks
    def test_an_accounts_transfers_can_be_removed_with_it(self):
        info = yield self._upload(_content(100000, seed=11))
        yield self.uploads.create(self.alice, 10, {})

        def _txn(conn):
            return transfers.delete_account_transfers_txn(conn, self.alice)

        self.assertEqual((yield self.store.db.write(_txn)), 1)
        self.assertEqual((yield self._files(self.alice)), [])
        self.assertEqual((yield self._blob_row(info.sha256)), (0, "hot"))

    # -- crashes -----------------------------------------------------------------------------

    @inlineCallbacks
    def test_start_removes_upload_files_no_row_knows(self):
        stray = self.uploads.path("A" * 32)
        with open(stray, "wb") as f:
            f.write(b"left by a crash")
        self.uploads = yield self._uploads()
        self.assertFalse(os.path.exists(stray))

    @inlineCallbacks
    def test_start_finishes_a_completion_a_crash_interrupted(self):
        data = _content(150000, seed=7)
        info = yield self.uploads.create(self.alice, len(data), {})
        yield self._patch(info.id, 0, data[:1000])

        def _crash_txn(conn):  # all bytes recorded, but the process died before the blob
            transfers.set_offset_txn(conn, info.id, 1000, len(data), None)

        with open(self.uploads.path(info.id), "ab") as f:
            f.write(data[1000:])
        yield self.store.db.write(_crash_txn)
        self.uploads = yield self._uploads()
        info = yield self.uploads.info(self.alice, info.id)
        self.assertEqual(info.sha256, _sha(data))
        _, _, content = yield self._read_all(info.id)
        self.assertEqual(content, data)

    # -- the rest of the rows: share links, the journal ----------------------------------------

    @inlineCallbacks
    def test_share_links_count_downloads_and_can_be_revoked(self):
        info = yield self._upload(_content(100000, seed=8))
        file_id = (yield self._files(self.alice))[0]["id"]
        expires = self.now + datetime.timedelta(days=1)
        db = self.store.db
        share = yield db.write(
            lambda c: transfers.create_share_txn(c, file_id, self.now, expires, None, 2)
        )
        self.assertRegex(share["token"], r"^[A-Za-z0-9_-]{22,}$")
        found = yield db.read(lambda c: transfers.share_txn(c, share["token"]))
        self.assertEqual((found["size"], found["blob_sha256"]), (100000, info.sha256))
        count = []
        for _ in range(3):
            counted = yield db.write(
                lambda c: transfers.count_download_txn(c, share["token"], self.now)
            )
            count.append(counted)
        self.assertEqual(count, [True, True, False])
        self.assertFalse(
            (yield db.write(lambda c: transfers.revoke_share_txn(c, share["token"], self.bob)))
        )
        self.assertTrue(
            (yield db.write(lambda c: transfers.revoke_share_txn(c, share["token"], self.alice)))
        )
        # Deleting the file takes its links along.
        yield self.uploads.terminate(self.alice, info.id)
        self.assertIsNone((yield db.read(lambda c: transfers.share_txn(c, share["token"]))))

    @inlineCallbacks
    def test_every_change_is_journaled(self):
        info = yield self._upload(_content(100000, seed=9))
        yield self.uploads.terminate(self.alice, info.id)

        def _kinds(conn):
            j = schema.journal
            return list(conn.execute(select(j.c.kind).order_by(j.c.seq)).scalars())

        kinds = yield self.store.db.read(_kinds)
        tail = kinds[kinds.index("upload.create") :]
        self.assertEqual(
            tail,
            [
                "upload.create",
                "upload.progress",
                "blob.add",
                "file.add",
                "upload.complete",
                "file.remove",
            ],
        )


class SQLiteUploadTests(SQLiteMixin, _UploadTests, TestCase):
    @inlineCallbacks
    def test_writeback_of_a_patch_starts_before_its_fsync_range_by_range(self):
        """Every WRITEBACK_EVERY bytes the blob thread asks the kernel to start writing the
        range just written (store/writeback.py), so the PATCH's fsync finds little to do."""
        asked = []
        real = uploadwriter.start_writeback

        def recording(fd, offset, length):
            asked.append((offset, length))
            return real(fd, offset, length)

        self.patch(uploadwriter, "start_writeback", recording)
        data = _content(3 * uploadwriter.WRITEBACK_EVERY + 12345, seed=31)
        info = yield self.uploads.create(self.alice, 2 * len(data), {})
        yield self._patch(info.id, 0, data, end="keep")
        yield self._patch(info.id, len(data), data)
        for start in (0, len(data)):  # each PATCH: ranges one after another from its start
            ranges = [r for r in asked if start <= r[0] < start + len(data)]
            self.assertEqual(len(ranges), 2)  # at 8 and 16 MiB; the rest is the fsync's
            self.assertEqual(ranges[0][0], start)
            self.assertEqual(ranges[1][0], sum(ranges[0]))
            for _, length in ranges:
                self.assertGreaterEqual(length, uploadwriter.WRITEBACK_EVERY)

    @inlineCallbacks
    def test_a_512_mib_upload_keeps_memory_flat(self):
        """The writer never holds the content: RSS grows by far less than the upload."""
        self.uploads = yield self._uploads(max_file_size=600 * MiB, station_capacity=600 * MiB)
        size = 512 * MiB
        block = _content(MiB, seed=10)
        info = yield self.uploads.create(self.alice, size, {})
        writer = yield self.uploads.open_writer(self.alice, info.id, 0)
        before = _rss()
        peak = before
        for i in range(size // 65536):
            offset = (i * 65536) % MiB
            waiting = writer.write(block[offset : offset + 65536])
            if waiting is not None:
                yield waiting
                peak = max(peak, _rss())
        info = yield writer.finish()
        self.assertTrue(info.complete)
        self.assertLess(peak - before, 64 * MiB)


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PostgreSQLUploadTests(PostgreSQLMixin, _UploadTests, TestCase):
    pass


class TokenTests(TestCase):
    def test_tokens_are_160_bits_of_letters_and_digits(self):
        """A token never starts with '-' (the CLI would read an option) nor holds '_' or '-'."""
        tokens = {transfers.new_token() for _ in range(2000)}
        self.assertEqual(len(tokens), 2000)
        for token in tokens:
            self.assertRegex(token, r"\A[a-z2-7]{32}\Z")


class WritebackTests(TestCase):
    def test_start_writeback_asks_linux_and_is_harmless_elsewhere(self):
        path = self.mktemp()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        self.addCleanup(os.close, fd)
        os.write(fd, b"x" * 65536)
        expected = sys.platform.startswith("linux")
        self.assertEqual(writeback.start_writeback(fd, 0, 65536), expected)
        self.assertFalse(writeback.start_writeback(fd, 0, 0))
