"""The content-addressed blob store: content named by its SHA-256, streamed in and out.

Where content lives: small content (up to ``inline_max``) inline in its ``blobs`` row, written
in the delivering transaction; anything larger in the hot tier directory as
``<tier>/ab/cd/<sha256>``.  Large content is streamed by :class:`BlobWriter`: into a temporary
file in the tier directory, hashed as it flows, fsync'd, then renamed into place and the
directory fsync'd.  File work runs on the blob threads, never on the reactor.

Lifetime (design rule 4): every file has a ``blobs`` row *before* it becomes visible (refcount
0, written by ``_publish``).  Callers then take a reference in their own transaction
(``blob_rows.reference_many_txn``).  Garbage collection takes blobs whose refcount has been
zero for a grace period: their files move to a trash directory and their rows are deleted in
one transaction; the files are unlinked once that is durable, or moved back if it is rolled
back, and a crash in between is sorted out at the next start.  A crash at any point leaves
at worst a row without a file that nothing references (collected later), and never a file
nobody knows about; no directory scan is ever needed.
"""

from __future__ import annotations

import datetime
import io
import os
from collections.abc import Callable
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IConsumer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols.basic import FileSender
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from mailbox_appliance.interfaces import IBlobTier
from mailbox_appliance.store import schema
from mailbox_appliance.store.blob_rows import (
    INLINE,
    BlobRef,
    decref_txn,
    incref_txn,
    inline_content_txn,
    reference_many_txn,
    register_txn,
    utcnow,
)
from mailbox_appliance.store.blobwriter import CHUNK_SIZE, HIGH_WATER, BlobWriter, inline_ref
from mailbox_appliance.store.db import Database, StoreStopped, on_commit, on_rollback
from mailbox_appliance.store.journal import record_txn

__all__ = [
    "CHUNK_SIZE",
    "HIGH_WATER",
    "BlobRef",
    "BlobStore",
    "BlobWriter",
    "HotTier",
    "decref_txn",
    "incref_txn",
    "reference_many_txn",
]

log = Logger()

TMP_DIR = "tmp"
#: Files of collected blobs wait here until the deletion of their rows is durable.
TRASH_DIR = "trash"
#: Content up to this size is kept inline in its row unless the store is told otherwise.
DEFAULT_INLINE_MAX = 64 * 1024


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs_durable(path: str) -> None:
    """``os.makedirs``, fsyncing the parent of every directory it creates.

    Without this a power loss can drop a new ``ab/`` or ``ab/cd/`` entry, and with it a blob
    whose own rename was fsync'd.
    """
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    _makedirs_durable(parent)
    try:
        os.mkdir(path)
    except FileExistsError:
        return  # another blob thread made it (and fsyncs its parent)
    _fsync_dir(parent)


def _read_file_range(path: str, offset: int, size: int) -> bytes:
    with open(path, "rb", buffering=0) as f:
        return os.pread(f.fileno(), size, offset)


@implementer(IBlobTier)
class HotTier:
    """Blob files on a local directory; ``path_for`` names where a blob lives."""

    name = "hot"

    def __init__(self, root: str):
        self.root = root
        self.tmp = os.path.join(root, TMP_DIR)
        self.trash = os.path.join(root, TRASH_DIR)

    def path_for(self, sha256: str) -> str:
        return os.path.join(self.root, sha256[:2], sha256[2:4], sha256)

    def trash_path_for(self, sha256: str) -> str:
        return os.path.join(self.trash, sha256)

    def prepare_thd(self) -> int:
        """Create the directories and remove temporary files a crash left; return how many."""
        os.makedirs(self.tmp, exist_ok=True)
        os.makedirs(self.trash, exist_ok=True)
        removed = 0
        for name in os.listdir(self.tmp):
            os.unlink(os.path.join(self.tmp, name))
            removed += 1
        return removed


# -- the store ----------------------------------------------------------------------------


class BlobStore:
    """Streams blobs in and out of the tier directories, and collects unreferenced ones."""

    def __init__(
        self,
        reactor,
        db: Database,
        hot_root: str,
        *,
        threads: int = 4,
        inline_max: int = DEFAULT_INLINE_MAX,
    ):
        if inline_max > CHUNK_SIZE:
            raise ValueError(f"inline_max may be at most {CHUNK_SIZE} bytes")
        self.reactor = reactor
        self.db = db
        self.hot = HotTier(hot_root)
        self.inline_max = inline_max
        self.pool = ThreadPool(minthreads=1, maxthreads=threads, name="store-blob")

    def start(self) -> Deferred[int]:
        self.pool.start()
        d = self._in_thread(self.hot.prepare_thd)
        d.addCallback(self._log_leftovers)
        d.addCallback(lambda removed: self._recover_trash().addCallback(lambda _: removed))
        return d

    def _recover_trash(self) -> Deferred[None]:
        """Finish a collection a crash interrupted: files whose rows survive go back."""

        def _known(names: list[str]) -> Deferred[set[str]]:
            query = select(schema.blobs.c.sha256).where(schema.blobs.c.sha256.in_(names))
            return self.db.read(lambda conn: set(conn.execute(query).scalars()))

        def _sort_out_thd(known: set[str], names: list[str]) -> None:
            self._restore_thd([sha for sha in names if sha in known])
            self._empty_trash_thd([sha for sha in names if sha not in known])

        def _then(names: list[str]):
            if not names:
                return None
            log.info("finishing an interrupted collection of {n} blob files", n=len(names))
            d = _known(names)
            return d.addCallback(lambda known: self._in_thread(_sort_out_thd, known, names))

        return self._in_thread(os.listdir, self.hot.trash).addCallback(_then)

    @staticmethod
    def _log_leftovers(removed: int) -> int:
        if removed:
            log.info("removed {n} unfinished blob files left by an earlier stop", n=removed)
        return removed

    def stop(self) -> None:
        if self.pool.started:
            self.pool.stop()

    def _in_thread(self, fn: Callable, *args) -> Deferred:
        if not self.pool.started:  # a stopped pool would drop the call and never answer
            return fail(StoreStopped("the blob store is stopped"))
        return deferToThreadPool(self.reactor, self.pool, fn, *args)

    # -- writing ---------------------------------------------------------------------------

    def open_writer(self, observer=None) -> BlobWriter:
        return BlobWriter(self, observer)

    def put(self, data: bytes) -> Deferred[BlobRef]:
        """Store ``data`` (small content; large content goes through ``open_writer``)."""
        inline = inline_ref(data, self.inline_max)
        if inline is not None:
            return succeed(inline)  # stored by the transaction that references it
        writer = self.open_writer()
        writer.write(data)
        return writer.finish()

    def _publish(self, tmp_path: str, ref: BlobRef) -> Deferred[BlobRef]:
        """Register the row durably, then move the file into place (see the module doc)."""
        d = self.db.write(lambda conn: register_txn(conn, ref, self.hot.name))
        d.addCallback(lambda tier: self._in_thread(self._place_thd, tmp_path, ref, tier))
        return d

    def _place_thd(self, tmp_path: str, ref: BlobRef, tier: str) -> BlobRef:
        final = self.hot.path_for(ref.sha256)
        if tier == INLINE or os.path.exists(final):
            os.unlink(tmp_path)  # the same content is already stored: keep one copy
            return ref
        parent = os.path.dirname(final)
        _makedirs_durable(parent)
        os.rename(tmp_path, final)
        _fsync_dir(parent)
        return ref

    # -- reading ---------------------------------------------------------------------------

    def path_for(self, sha256: str) -> str:
        return self.hot.path_for(sha256)

    def open(self, sha256: str) -> Deferred[BinaryIO]:
        """Open a blob for reading (a file, or memory for inline content); the caller closes it."""
        d = self.db.read(lambda conn: inline_content_txn(conn, sha256))

        def _open(inline: bytes | None):
            if inline is not None:
                return io.BytesIO(inline)
            return self._in_thread(open, self.path_for(sha256), "rb")

        return d.addCallback(_open)

    def read_bytes(self, sha256: str) -> Deferred[bytes]:
        """The whole content of a small blob."""

        def _read(f: BinaryIO) -> Deferred[bytes]:
            def _read_thd() -> bytes:
                with f:
                    return f.read()

            return self._in_thread(_read_thd)

        return self.open(sha256).addCallback(_read)

    def send(self, sha256: str, consumer: IConsumer) -> Deferred[None]:
        """Stream a blob to ``consumer`` with a producer; fires when all is written."""

        def _send(f: BinaryIO) -> Deferred[None]:
            d = FileSender().beginFileTransfer(f, consumer)
            d.addBoth(lambda result: (f.close(), result)[1])
            d.addCallback(lambda _: None)
            return d

        return self.open(sha256).addCallback(_send)

    def read_ranges(self, ranges: list[tuple[str, int, int]]) -> Deferred[list[bytes]]:
        """Byte ranges ``(sha256, start, end)`` of many small blobs, in one trip.

        For answers that carry many small messages (IMAP FETCH, POP3 RETR of a maildrop):
        inline content comes from one query, the rest from files read on the same thread.
        """

        def _txn(conn: Connection) -> list[bytes]:
            shas = sorted({sha for sha, _, _ in ranges})
            b = schema.blobs
            inline = dict(
                conn.execute(
                    select(b.c.sha256, b.c.data).where(b.c.sha256.in_(shas), b.c.tier == INLINE)
                ).all()
            )
            out = []
            for sha, start, end in ranges:
                data = inline.get(sha)
                if data is None:
                    out.append(_read_file_range(self.path_for(sha), start, end - start))
                else:
                    out.append(data[start:end])
            return out

        return self.db.read(_txn)

    def run(self, fn: Callable, *args) -> Deferred:
        """Run ``fn(*args)`` on a blob thread (work that reads content, like SEARCH BODY)."""
        return self._in_thread(fn, *args)

    def with_file(self, sha256: str, fn: Callable[[BinaryIO], object]) -> Deferred:
        """Open a blob and run ``fn(file)`` on a blob thread; the file is closed after."""

        def _run(f: BinaryIO):
            def _thd():
                with f:
                    return fn(f)

            return self._in_thread(_thd)

        return self.open(sha256).addCallback(_run)

    def read_file_chunk(self, sha256: str, offset: int, size: int) -> Deferred[bytes]:
        """Up to ``size`` bytes of a file-backed blob from ``offset``, read on a blob thread."""
        return self._in_thread(_read_file_range, self.path_for(sha256), offset, size)

    # -- garbage collection ----------------------------------------------------------------

    def collect(self, grace_seconds: float, limit: int = 1000) -> Deferred[int]:
        """Delete blobs unreferenced for ``grace_seconds``; fires with how many went."""
        cutoff = utcnow() - datetime.timedelta(seconds=grace_seconds)
        return self.db.write(lambda conn: self._collect_txn(conn, cutoff, limit))

    def _collect_txn(self, conn: Connection, cutoff: datetime.datetime, limit: int) -> int:
        blobs = schema.blobs
        rows = conn.execute(
            select(blobs.c.sha256, blobs.c.tier)
            .where(blobs.c.refcount == 0, blobs.c.zero_since < cutoff)
            .limit(limit)
        ).all()
        # Files move to the trash, rows are deleted, and only once that deletion is durable
        # are the files unlinked; if it is rolled back they move back.  A crash in between
        # is sorted out at start (_recover_trash).  So no row is ever left without its file,
        # and no file without its row.  A new register_txn of the same content waits for
        # this transaction (one writer) and places a fresh file.
        moved, gone = self._move_to_trash_thd([r.sha256 for r in rows if r.tier != INLINE])
        gone += [r.sha256 for r in rows if r.tier == INLINE]
        if not gone:
            return 0
        conn.execute(blobs.delete().where(blobs.c.sha256.in_(gone), blobs.c.refcount == 0))
        record_txn(conn, "blob.delete", {"sha256": gone})
        if moved:
            on_commit(conn, lambda: self._empty_trash_thd(moved))
            on_rollback(conn, lambda: self._restore_thd(moved))
        return len(gone)

    def _move_to_trash_thd(self, shas: list[str]) -> tuple[list[str], list[str]]:
        """Move files to the trash; returns (moved, gone: moved or already missing)."""
        moved, gone = [], []
        for sha in shas:
            path = self.path_for(sha)
            try:
                os.rename(path, self.hot.trash_path_for(sha))
            except FileNotFoundError:
                gone.append(sha)  # a row whose file never arrived (a crash before the rename)
            except OSError:
                log.failure("cannot remove blob file {path}; its row stays", path=path)
            else:
                moved.append(sha)
                gone.append(sha)
        return moved, gone

    def _empty_trash_thd(self, shas: list[str]) -> None:
        for sha in shas:
            try:
                os.unlink(self.hot.trash_path_for(sha))
            except FileNotFoundError:
                pass

    def _restore_thd(self, shas: list[str]) -> None:
        for sha in shas:
            path = self.path_for(sha)
            if os.path.exists(path):  # placed again meanwhile: the same content
                os.unlink(self.hot.trash_path_for(sha))
            else:
                _makedirs_durable(os.path.dirname(path))
                os.rename(self.hot.trash_path_for(sha), path)
                _fsync_dir(os.path.dirname(path))
