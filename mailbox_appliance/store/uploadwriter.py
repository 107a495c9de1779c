"""One PATCH of a resumable upload, appended as it arrives (interfaces.IUploadWriter).

Split from uploads.py: the writer owns the file descriptor, the chunk and content hashes and
the back-pressure; the upload store records offsets and completes uploads.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailbox_appliance.errors import ChecksumMismatch, UploadTooLarge
from mailbox_appliance.interfaces import IUploadWriter, UploadInfo
from mailbox_appliance.store.blobs import _fsync_dir
from mailbox_appliance.store.writeback import start_writeback

if TYPE_CHECKING:
    from mailbox_appliance.store.uploads import UploadStore

#: tus checksum extension algorithms.
CHECKSUMS: dict[str, Any] = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}

log = Logger()

#: Bytes gathered before they are handed to a blob thread.
CHUNK_SIZE = 256 * 1024
#: ``write`` returns a Deferred while more than this waits for the disk (back-pressure).
HIGH_WATER = 2 * 1024 * 1024
#: Bytes written between requests to start their writeback (store/writeback.py).
WRITEBACK_EVERY = 8 * 1024 * 1024


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@implementer(IUploadWriter)
class UploadWriter:
    """One PATCH's bytes, written in order on blob threads as they arrive.

    Small writes are gathered into chunks of ``CHUNK_SIZE``; ``write`` returns a Deferred
    while more than ``HIGH_WATER`` bytes wait for the disk.  The chunk's checksum (when the
    client sent one) and the whole content's SHA-256 are computed on the blob thread.
    """

    def __init__(
        self,
        uploads: UploadStore,
        row: dict[str, Any],
        fd: int,
        rehashed,
        created: bool,
        hasher,
        checksum: tuple[str, bytes] | None,
    ):
        self._uploads = uploads
        self._row = row
        self._fd = fd
        self._created = created
        self._start = row["offset"]
        self._limit = row["length"] if row["length"] is not None else uploads.max_file_size
        self._checksum = checksum
        self._chunk_hash = CHECKSUMS[checksum[0]]() if checksum else None
        self._hasher = hasher if hasher is not None else rehashed
        #: To put back when the chunk is discarded.
        self._hash_at_start = self._hasher.copy() if self._hasher is not None else None
        self._received = 0
        self._buffer = bytearray()
        self._pending = 0  # bytes received and not yet on disk
        self._written = self._start  # file offset reached by the blob thread
        self._written_back = self._start  # writeback asked for up to here
        self._tail: Deferred = succeed(None)
        self._error: Failure | None = None
        self._waiter: Deferred | None = None
        self._done = False

    @property
    def offset(self) -> int:
        """Where the upload will be once what was written so far is kept."""
        return self._start + self._received

    def write(self, data: bytes) -> Deferred[None] | None:
        if self._done:
            raise RuntimeError("write after finish() or keep()")
        if self._error is not None:
            return fail(self._error)
        room = self._limit - self.offset
        over = len(data) > room
        if over:
            data = data[:room]
        self._received += len(data)
        self._pending += len(data)
        if len(data) >= CHUNK_SIZE:
            # A large piece (a socket read) goes to the disk thread as it is: gathering it
            # first would copy every byte twice, in the reactor thread, holding the GIL.
            self._flush()
            self._hand_off(bytes(data))
        else:
            self._buffer += data
            if len(self._buffer) >= CHUNK_SIZE:
                self._flush()
        if over:
            return fail(UploadTooLarge(f"more bytes than the upload's length ({self._limit})"))
        if self._pending > HIGH_WATER:
            if self._waiter is None:
                self._waiter = Deferred()
            return self._waiter
        return None

    def _flush(self) -> None:
        if self._buffer:
            chunk, self._buffer = bytes(self._buffer), bytearray()
            self._hand_off(chunk)

    def _hand_off(self, chunk: bytes) -> None:
        self._tail.addCallback(lambda _: self._uploads.blobs.run(self._write_thd, chunk))
        self._tail.addBoth(self._chunk_written, len(chunk))

    def _chunk_written(self, result, length: int):
        self._pending -= length
        if isinstance(result, Failure):
            if self._error is None:
                self._error = result
            result = None  # remembered; reported by the next write and by finish()
        if self._waiter is not None and (self._pending <= HIGH_WATER // 2 or self._error):
            waiter, self._waiter = self._waiter, None
            waiter.callback(None)
        return result

    def _write_thd(self, chunk: bytes) -> None:
        if self._error is not None:
            return
        if self._chunk_hash is not None:
            self._chunk_hash.update(chunk)
        if self._hasher is not None:
            self._hasher.update(chunk)
        write_all(self._fd, chunk)
        self._written += len(chunk)
        if self._written - self._written_back >= WRITEBACK_EVERY:
            start_writeback(self._fd, self._written_back, self._written - self._written_back)
            self._written_back = self._written

    def finish(self) -> Deferred[UploadInfo]:
        return self._end(verify=True)

    def keep(self) -> Deferred[UploadInfo]:
        return self._end(verify=False)

    def _end(self, verify: bool) -> Deferred[UploadInfo]:
        if self._done:
            raise RuntimeError("finish() or keep() called twice")
        self._done = True
        self._flush()
        uploads, upload_id = self._uploads, self._row["id"]
        d = self._tail
        d.addCallback(lambda _: uploads.blobs.run(self._seal_thd, verify))

        def _sealed(kept: bool):
            if not kept:
                self._forget_hash()
                raise ChecksumMismatch("the chunk does not match its checksum; it was discarded")
            return uploads._record(self._row, self._start, self.offset, self._hasher)

        def _failed(failure: Failure):
            self._forget_hash()
            return failure

        d.addCallback(_sealed)
        d.addErrback(_failed)
        d.addBoth(uploads._release, upload_id)
        # A fresh Deferred, never the shared tail: finish() may be called from inside the
        # tail's own callbacks (a chunk written wakes the request, whose body then ends), and
        # awaiting a Deferred in the middle of its callbacks gives its intermediate result.
        done: Deferred[UploadInfo] = Deferred()
        d.chainDeferred(done)
        return done

    def _forget_hash(self) -> None:
        hashes, upload_id = self._uploads._hashes, self._row["id"]
        if self._hash_at_start is not None:
            hashes[upload_id] = (self._start, self._hash_at_start)
        else:
            hashes.pop(upload_id, None)

    def _seal_thd(self, verify: bool) -> bool:
        """fsync the bytes; on a bad checksum or a failed write cut back to the start."""
        try:
            if self._error is not None:
                self._rollback_thd()
                self._error.raiseException()
            os.fsync(self._fd)
            if verify and self._checksum is not None:
                if self._chunk_hash.digest() != self._checksum[1]:
                    self._rollback_thd()
                    return False
            if self._created:
                _fsync_dir(self._uploads.dir)
            return True
        finally:
            os.close(self._fd)

    def _rollback_thd(self) -> None:
        os.ftruncate(self._fd, self._start)
        os.fsync(self._fd)
