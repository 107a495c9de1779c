"""The content-addressed blob store: files named by their SHA-256, streamed in and out.

Writing (design rule 3): bytes pass through a fixed-size buffer to a temporary file inside the
tier directory, are hashed as they flow, fsync'd, and renamed to ``<tier>/ab/cd/<sha256>``; the
directory is fsync'd after the rename.  File work runs on the blob threads, never on the reactor.
A writer is an ``IConsumer``: a streaming producer (a TCP transport) is paused while too much
data waits for the disk, so memory stays flat whatever the size.

Lifetime (design rule 4): every file has a ``blobs`` row *before* it becomes visible, written by
``BlobStore.finish`` with refcount 0.  Callers then take a reference in their own transaction
(:func:`incref_txn`).  Garbage collection takes blobs whose refcount has been zero for a grace
period: it unlinks their files (durably), then deletes their rows in the same transaction.  So a
crash at any point leaves at worst a row without a file (collected later) and never a file
nobody knows about, and no directory scan is ever needed.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Callable
from typing import BinaryIO, NamedTuple

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer, IProducer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from mailbox_appliance.errors import BlobMissing
from mailbox_appliance.interfaces import IBlobTier
from mailbox_appliance.store import schema
from mailbox_appliance.store.db import Database
from mailbox_appliance.store.journal import record_txn

log = Logger()

#: Bytes gathered before a chunk is handed to a blob thread.
CHUNK_SIZE = 256 * 1024
#: A streaming producer is paused while more than this waits to be written.
HIGH_WATER = 4 * CHUNK_SIZE
TMP_DIR = "tmp"


class BlobRef(NamedTuple):
    sha256: str
    size: int


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


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


@implementer(IBlobTier)
class HotTier:
    """Blob files on a local directory; ``path_for`` names where a blob lives."""

    name = "hot"

    def __init__(self, root: str):
        self.root = root
        self.tmp = os.path.join(root, TMP_DIR)

    def path_for(self, sha256: str) -> str:
        return os.path.join(self.root, sha256[:2], sha256[2:4], sha256)

    def prepare_thd(self) -> int:
        """Create the directories and remove temporary files a crash left; return how many."""
        os.makedirs(self.tmp, exist_ok=True)
        removed = 0
        for name in os.listdir(self.tmp):
            os.unlink(os.path.join(self.tmp, name))
            removed += 1
        return removed


# -- transaction functions (run on the writer thread) -------------------------------------

# Built once and run with parameters: building a statement with literal values costs more
# on the single writer thread than running it (SQLAlchemy derives a cache key from every
# literal each time), and these run for every message delivered.
_blobs = schema.blobs
_REFCOUNT = select(_blobs.c.refcount).where(_blobs.c.sha256 == bindparam("b_sha256"))
_INSERT = _blobs.insert()
_RESTART_GRACE = (
    update(_blobs)
    .where(_blobs.c.sha256 == bindparam("b_sha256"))
    .values(zero_since=bindparam("b_now"), last_access=bindparam("b_now"))
)
_INCREF = (
    update(_blobs)
    .where(_blobs.c.sha256 == bindparam("b_sha256"))
    .values(refcount=_blobs.c.refcount + bindparam("b_count"), zero_since=None)
)


def register_txn(conn: Connection, ref: BlobRef, tier: str) -> None:
    """Make sure a row exists for ``ref`` before its file becomes visible."""
    now = _utcnow()
    row = conn.execute(_REFCOUNT, {"b_sha256": ref.sha256}).first()
    if row is None:
        conn.execute(
            _INSERT,
            {
                "sha256": ref.sha256,
                "size": ref.size,
                "tier": tier,
                "refcount": 0,
                "created": now,
                "last_access": now,
                "zero_since": now,
            },
        )
        record_txn(conn, "blob.add", {"sha256": ref.sha256, "size": ref.size, "tier": tier})
    elif row.refcount == 0:
        # Restart the grace period so garbage collection leaves it to the coming reference.
        conn.execute(_RESTART_GRACE, {"b_sha256": ref.sha256, "b_now": now})


def incref_txn(conn: Connection, sha256: str, count: int = 1) -> None:
    """Take ``count`` references to a blob; BlobMissing if it was collected."""
    result = conn.execute(_INCREF, {"b_sha256": sha256, "b_count": count})
    if result.rowcount != 1:
        raise BlobMissing(sha256)


def decref_txn(conn: Connection, sha256: str, count: int = 1) -> None:
    """Drop ``count`` references; at zero the blob waits out the grace period, then goes."""
    blobs = schema.blobs
    conn.execute(
        update(blobs).where(blobs.c.sha256 == sha256).values(refcount=blobs.c.refcount - count)
    )
    conn.execute(
        update(blobs)
        .where(blobs.c.sha256 == sha256, blobs.c.refcount <= 0)
        .values(refcount=0, zero_since=_utcnow())
    )


# -- the store ----------------------------------------------------------------------------


class BlobStore:
    """Streams blobs in and out of the tier directories, and collects unreferenced ones."""

    def __init__(self, reactor, db: Database, hot_root: str, *, threads: int = 4):
        self.reactor = reactor
        self.db = db
        self.hot = HotTier(hot_root)
        self.pool = ThreadPool(minthreads=1, maxthreads=threads, name="store-blob")

    def start(self) -> Deferred[int]:
        self.pool.start()
        d = self._in_thread(self.hot.prepare_thd)
        d.addCallback(self._log_leftovers)
        return d

    @staticmethod
    def _log_leftovers(removed: int) -> int:
        if removed:
            log.info("removed {n} unfinished blob files left by an earlier stop", n=removed)
        return removed

    def stop(self) -> None:
        if self.pool.started:
            self.pool.stop()

    def _in_thread(self, fn: Callable, *args) -> Deferred:
        return deferToThreadPool(self.reactor, self.pool, fn, *args)

    # -- writing ---------------------------------------------------------------------------

    def open_writer(self) -> BlobWriter:
        return BlobWriter(self)

    def put(self, data: bytes) -> Deferred[BlobRef]:
        """Store ``data`` (small content; large content goes through ``open_writer``)."""
        writer = self.open_writer()
        writer.write(data)
        return writer.finish()

    def _publish(self, tmp_path: str, ref: BlobRef) -> Deferred[BlobRef]:
        """Register the row durably, then move the file into place (see the module doc)."""
        d = self.db.write(lambda conn: register_txn(conn, ref, self.hot.name))
        d.addCallback(lambda _: self._in_thread(self._place_thd, tmp_path, ref))
        return d

    def _place_thd(self, tmp_path: str, ref: BlobRef) -> BlobRef:
        final = self.hot.path_for(ref.sha256)
        if os.path.exists(final):
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
        """Open a blob for reading, on a blob thread; the caller closes the file."""
        return self._in_thread(open, self.path_for(sha256), "rb")

    def read_bytes(self, sha256: str) -> Deferred[bytes]:
        """The whole content of a small blob."""

        def _read() -> bytes:
            with open(self.path_for(sha256), "rb") as f:
                return f.read()

        return self._in_thread(_read)

    def send(self, sha256: str, consumer: IConsumer) -> Deferred[None]:
        """Stream a blob to ``consumer`` with a producer; fires when all is written."""

        def _send(f: BinaryIO) -> Deferred[None]:
            d = FileSender().beginFileTransfer(f, consumer)
            d.addBoth(lambda result: (f.close(), result)[1])
            d.addCallback(lambda _: None)
            return d

        return self.open(sha256).addCallback(_send)

    # -- garbage collection ----------------------------------------------------------------

    def collect(self, grace_seconds: float, limit: int = 1000) -> Deferred[int]:
        """Delete blobs unreferenced for ``grace_seconds``; fires with how many went."""
        cutoff = _utcnow() - datetime.timedelta(seconds=grace_seconds)
        return self.db.write(lambda conn: self._collect_txn(conn, cutoff, limit))

    def _collect_txn(self, conn: Connection, cutoff: datetime.datetime, limit: int) -> int:
        blobs = schema.blobs
        shas = list(
            conn.execute(
                select(blobs.c.sha256)
                .where(blobs.c.refcount == 0, blobs.c.zero_since < cutoff)
                .limit(limit)
            ).scalars()
        )
        # Files go before their rows (see the module doc): a crash or a failed commit after
        # this leaves rows without files, which the next collection deletes; deleting rows
        # first would leave files nobody knows about.  Nothing refers to these blobs, and a
        # new register_txn of the same content waits for this transaction (one writer).
        gone = self._unlink_thd(shas)
        if not gone:
            return 0
        conn.execute(blobs.delete().where(blobs.c.sha256.in_(gone), blobs.c.refcount == 0))
        record_txn(conn, "blob.delete", {"sha256": gone})
        return len(gone)

    def _unlink_thd(self, shas: list[str]) -> list[str]:
        """Remove the files durably; return the blobs whose file is gone (or was never there)."""
        gone, parents = [], set()
        for sha in shas:
            path = self.path_for(sha)
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError:
                log.failure("cannot remove blob file {path}; its row stays", path=path)
                continue
            else:
                parents.add(os.path.dirname(path))
            gone.append(sha)
        for parent in parents:
            _fsync_dir(parent)
        return gone


@implementer(IConsumer)
class BlobWriter:
    """Receives content in pieces on the reactor and writes it on a blob thread.

    Call ``write`` as data arrives, then ``finish()`` (fires with a :class:`BlobRef` once the
    content is durable and registered) or ``abort()`` (discards it).  A registered streaming
    producer is paused while more than ``HIGH_WATER`` bytes wait for the disk.
    """

    def __init__(self, store: BlobStore):
        self._store = store
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self._size = 0
        self._file: BinaryIO | None = None
        self._path: str | None = None
        self._tail: Deferred = succeed(None)  # the chain of chunk writes, in order
        self._waiting = 0  # bytes handed to the chain and not yet on disk
        self._producer: IProducer | None = None
        self._paused = False
        self._error = None
        self._done = False

    @property
    def size(self) -> int:
        """Bytes received so far."""
        return self._size + len(self._buffer)

    # IConsumer
    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    def write(self, data: bytes) -> None:
        if self._done:
            raise RuntimeError("write after finish() or abort()")
        self._buffer += data
        if len(self._buffer) >= CHUNK_SIZE:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        chunk, self._buffer = bytes(self._buffer), bytearray()
        self._size += len(chunk)
        self._waiting += len(chunk)
        self._tail.addCallback(lambda _: self._store._in_thread(self._write_thd, chunk))
        self._tail.addBoth(self._chunk_written, len(chunk))
        if self._waiting > HIGH_WATER and self._producer is not None and not self._paused:
            self._paused = True
            self._producer.pauseProducing()

    def _chunk_written(self, result, length: int):
        self._waiting -= length
        if isinstance(result, Failure):
            if self._error is None:
                self._error = result
            result = None  # remembered; reported by finish()
        if self._paused and self._waiting <= HIGH_WATER // 2 and self._producer is not None:
            self._paused = False
            self._producer.resumeProducing()
        return result

    def _write_thd(self, chunk: bytes) -> None:
        if self._error is not None:
            return
        if self._file is None:
            name = f"{os.getpid()}-{os.urandom(8).hex()}"
            path = os.path.join(self._store.hot.tmp, name)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            fd = os.open(path, flags, 0o640)
            self._file = os.fdopen(fd, "wb", buffering=0)
            self._path = path  # not self._file.name: a file made by fdopen is named by its fd
        self._hash.update(chunk)
        view = memoryview(chunk)
        while view:  # an unbuffered write may write less than it was given
            view = view[self._file.write(view) :]

    def _seal_thd(self, last: bytes) -> tuple[str, BlobRef]:
        """Write the last piece, fsync and close the file; the content's name is now known.

        One trip to a blob thread for both: a small blob (the common case) takes just this one.
        """
        self._write_thd(last)  # also makes the file for empty content
        assert self._file is not None and self._path is not None
        os.fsync(self._file.fileno())
        self._file.close()
        return self._path, BlobRef(self._hash.hexdigest(), self._size)

    def finish(self) -> Deferred[BlobRef]:
        """Write what is left, make it durable, and fire with its BlobRef."""
        last, self._buffer = bytes(self._buffer), bytearray()
        self._size += len(last)
        self._done = True
        d = self._tail

        def _seal(_):
            if self._error is not None:
                return self._error
            return self._store._in_thread(self._seal_thd, last)

        d.addCallback(_seal)
        d.addCallback(lambda sealed: self._store._publish(*sealed))
        d.addErrback(self._cleanup_after_error)
        return d

    def abort(self) -> Deferred[None]:
        """Discard everything written; fires once the temporary file is gone."""
        self._buffer = bytearray()
        self._done = True
        self._error = self._error or RuntimeError("aborted")
        d = self._tail.addBoth(lambda _: self._store._in_thread(self._discard_thd))
        return d

    def _cleanup_after_error(self, failure):
        d = self._store._in_thread(self._discard_thd)
        d.addBoth(lambda _: failure)
        return d

    def _discard_thd(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.close()
        if self._path is not None:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass
