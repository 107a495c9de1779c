"""A fake IUploadBackend for the file-transfer station's tests: one file per upload in a
temporary directory, offsets in memory, limits and expiry set by the test."""

import dataclasses
import datetime
import hashlib
import itertools
import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from mailbox_appliance.errors import (
    ChecksumMismatch,
    OffsetMismatch,
    UploadConflict,
    UploadGone,
    UploadTooLarge,
)
from mailbox_appliance.interfaces import IUploadBackend, IUploadWriter, UploadInfo


@dataclasses.dataclass(frozen=True)
class FakeUploadInfo(UploadInfo):
    """UploadInfo plus the parts of a final upload (for HEAD's Upload-Concat)."""

    parts: tuple[str, ...] = ()


@dataclasses.dataclass
class FakeUpload:
    id: str
    owner: int
    path: str
    length: int | None
    metadata: dict
    offset: int = 0
    partial: bool = False
    parts: tuple[str, ...] = ()
    sha256: str | None = None
    expired: bool = False
    writer: Any = None

    def info(self, expires: datetime.datetime | None) -> FakeUploadInfo:
        return FakeUploadInfo(
            id=self.id,
            offset=self.offset,
            length=self.length,
            metadata=dict(self.metadata),
            expires=expires,
            partial=self.partial,
            final=bool(self.parts),
            sha256=self.sha256,
            parts=self.parts,
        )


@implementer(IUploadBackend)
class FakeUploadBackend:
    """``write_hook(writer, data)`` may return a Deferred: what writer.write returns."""

    def __init__(
        self,
        root: str,
        max_length: int | None = None,
        expires: datetime.datetime | None = None,
        write_hook: Callable[["FakeWriter", bytes], Deferred[None] | None] | None = None,
    ):
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.max_length = max_length
        self.expires = expires
        self.write_hook = write_hook
        self.uploads: dict[str, FakeUpload] = {}
        #: (upload id, bytes) of every write, and the ids kept after a dropped connection.
        self.writes: list[tuple[str, int]] = []
        self.kept: list[str] = []
        self._ids = itertools.count(1)

    # test controls

    def expire(self, upload_id: str) -> None:
        self.uploads[upload_id].expired = True

    def content(self, upload_id: str) -> bytes:
        with open(self.uploads[upload_id].path, "rb") as f:
            return f.read(self.uploads[upload_id].offset)

    def _find(self, owner: int, upload_id: str) -> FakeUpload:
        upload = self.uploads.get(upload_id)
        if upload is None or upload.owner != owner:
            raise UploadGone()
        if upload.expired:
            raise UploadGone("the upload expired", expired=True)
        return upload

    def _info(self, upload: FakeUpload) -> FakeUploadInfo:
        complete = upload.length is not None and upload.offset == upload.length
        return upload.info(None if complete else self.expires)

    def _check_length(self, length: int | None) -> None:
        if length is not None and self.max_length is not None and length > self.max_length:
            raise UploadTooLarge(f"larger than the largest file ({self.max_length} bytes)")

    # IUploadBackend

    def create(self, owner, length, metadata, parts=None, partial=False):
        try:
            self._check_length(length)
            upload_id = f"u{next(self._ids):04d}x"
            path = os.path.join(self.root, upload_id)
            upload = FakeUpload(upload_id, owner, path, length, dict(metadata), partial=partial)
            if parts:
                sources = [self._find(owner, part) for part in parts]
                for source in sources:
                    if not source.partial or source.offset != source.length:
                        raise UploadConflict(f"{source.id} is not a finished partial upload")
                upload.length = sum(source.length for source in sources)
                self._check_length(upload.length)
                upload.parts = tuple(parts)
                with open(path, "wb") as out:
                    for source in sources:
                        with open(source.path, "rb") as f:
                            out.write(f.read(source.length))
                upload.offset = upload.length
                upload.sha256 = _sha256(path)
            else:
                open(path, "wb").close()
                if length == 0:
                    upload.sha256 = _sha256(path)
        except Exception as error:
            return fail(error)
        self.uploads[upload_id] = upload
        return succeed(self._info(upload))

    def info(self, owner, upload_id):
        try:
            return succeed(self._info(self._find(owner, upload_id)))
        except UploadGone as gone:
            return fail(gone) if gone.expired else succeed(None)

    def declare_length(self, owner, upload_id, length):
        try:
            upload = self._find(owner, upload_id)
            if upload.length is not None:
                raise UploadConflict("the length is already set")
            self._check_length(length)
            if length < upload.offset:
                raise UploadConflict("shorter than what arrived")
            upload.length = length
        except Exception as error:
            return fail(error)
        return succeed(self._info(upload))

    def open_writer(self, owner, upload_id, offset, checksum=None):
        try:
            upload = self._find(owner, upload_id)
            if upload.parts:
                raise UploadConflict("a final upload takes no bytes")
            if upload.length is not None and upload.offset == upload.length:
                raise UploadConflict("the upload is complete")
            if upload.writer is not None:
                raise UploadConflict("another request is writing this upload")
            if offset != upload.offset:
                raise OffsetMismatch(upload.offset)
        except Exception as error:
            return fail(error)
        upload.writer = FakeWriter(self, upload, checksum)
        return succeed(upload.writer)

    def terminate(self, owner, upload_id):
        try:
            upload = self._find(owner, upload_id)
        except Exception as error:
            return fail(error)
        del self.uploads[upload_id]
        os.unlink(upload.path)
        return succeed(None)

    def open_content(self, owner, upload_id):
        try:
            upload = self._find(owner, upload_id)
            if upload.sha256 is None:
                raise UploadGone("the upload is not finished")
        except Exception as error:
            return fail(error)

        def read(offset: int, length: int) -> Deferred[bytes]:
            with open(upload.path, "rb") as f:
                f.seek(offset)
                return succeed(f.read(length))

        return succeed((upload.offset, upload.sha256, read))


@implementer(IUploadWriter)
class FakeWriter:
    """Appends to the upload's file; the checksum (if any) covers this PATCH's bytes."""

    def __init__(self, backend: FakeUploadBackend, upload: FakeUpload, checksum):
        self.backend = backend
        self.upload = upload
        self.start = upload.offset
        self.position = upload.offset
        self.checksum = checksum
        self.hash = hashlib.new(checksum[0]) if checksum else None
        self.file = open(upload.path, "r+b")
        self.file.seek(self.position)

    def write(self, data):
        length = self.upload.length
        if length is not None and self.position + len(data) > length:
            raise UploadTooLarge("more bytes than Upload-Length")
        self.file.write(data)
        self.position += len(data)
        if self.hash is not None:
            self.hash.update(data)
        self.backend.writes.append((self.upload.id, len(data)))
        if self.backend.write_hook is not None:
            return self.backend.write_hook(self, data)
        return None

    def _close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.upload.writer = None

    def _record(self) -> Deferred:
        self.upload.offset = self.position
        if self.upload.offset == self.upload.length:
            self.upload.sha256 = _sha256(self.upload.path)
        return succeed(self.backend._info(self.upload))

    def finish(self):
        if self.hash is not None and self.hash.digest() != self.checksum[1]:
            self.file.truncate(self.start)
            self._close()
            return fail(ChecksumMismatch("the chunk does not match Upload-Checksum"))
        self._close()
        return self._record()

    def keep(self):
        self._close()
        self.backend.kept.append(self.upload.id)
        return self._record()


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
