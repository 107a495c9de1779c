"""Streaming content into the blob store: an ``IConsumer`` that never holds a message whole.

Bytes are gathered in a buffer of ``CHUNK_SIZE``; each full chunk is written and hashed on a
blob thread, in order, into a temporary file in the tier directory.  A registered streaming
producer (a TCP transport) is paused while more than ``HIGH_WATER`` bytes wait for the disk,
so memory stays flat whatever the size (design rule 3).  Content that ends before the first
chunk was written and is no larger than the store's ``inline_max`` never touches a file: it
becomes an inline :class:`BlobRef` that the delivering transaction stores.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, BinaryIO

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer, IProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from mailbox_appliance.store.blob_rows import BlobRef

if TYPE_CHECKING:
    from mailbox_appliance.store.blobs import BlobStore

#: Bytes gathered before a chunk is handed to a blob thread.
CHUNK_SIZE = 256 * 1024
#: A streaming producer is paused while more than this waits to be written.
HIGH_WATER = 4 * CHUNK_SIZE


def inline_ref(data: bytes, inline_max: int) -> BlobRef | None:
    """An inline BlobRef for content small enough to live in its row (0: never); else None."""
    if not inline_max or len(data) > inline_max:
        return None
    return BlobRef(hashlib.sha256(data).hexdigest(), len(data), data)


@implementer(IConsumer)
class BlobWriter:
    """Receives content in pieces on the reactor and writes it on a blob thread.

    Call ``write`` as data arrives, then ``finish()`` (fires with a :class:`BlobRef` once the
    content is durable and registered) or ``abort()`` (discards it).  A registered streaming
    producer is paused while more than ``HIGH_WATER`` bytes wait for the disk.  An
    ``observer`` (``feed(bytes)``; the MIME scanner) sees the content in order, on the blob
    thread beside the hashing, or at ``finish()`` for content that stays inline.
    """

    def __init__(self, store: BlobStore, observer=None):
        self._store = store
        self.observer = observer
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
        if len(data) >= CHUNK_SIZE:
            # A large piece goes to the blob thread as it is, not copied twice on the reactor.
            self._flush()
            self._hand_off(bytes(data))
            return
        self._buffer += data
        if len(self._buffer) >= CHUNK_SIZE:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            chunk, self._buffer = bytes(self._buffer), bytearray()
            self._hand_off(chunk)

    def _hand_off(self, chunk: bytes) -> None:
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
        if self.observer is not None:
            self.observer.feed(chunk)
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
        """Write what is left, make it durable, and fire with its BlobRef.

        Small content that never reached the disk comes back as an inline BlobRef at once; it
        becomes durable with the transaction that references it (``blob_rows.reference_many_txn``).
        """
        last, self._buffer = bytes(self._buffer), bytearray()
        self._done = True
        inline = inline_ref(last, self._store.inline_max) if self._size == 0 else None
        if inline is not None and self._error is None:
            self._size = inline.size
            if self.observer is not None:
                self.observer.feed(last)
            return succeed(inline)
        self._size += len(last)
        d = self._tail

        def _seal(_):
            if self._error is not None:
                return self._error
            return self._store._in_thread(self._seal_thd, last)

        d.addCallback(_seal)
        d.addCallback(lambda sealed: self._store._publish(*sealed))
        d.addErrback(self._cleanup_after_error)
        # A fresh Deferred, not the chain itself: a caller resumed from inside that chain (a
        # producer resumed by _chunk_written) that awaited it would get its current result.
        done: Deferred[BlobRef] = Deferred()
        d.chainDeferred(done)
        return done

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
