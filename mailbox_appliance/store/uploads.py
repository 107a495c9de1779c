"""The file-transfer station's resumable uploads (tus 1.0.0): ``IUploadBackend`` on the store.

Where the bytes are: an unfinished upload's bytes live in ``<hot tier>/uploads/<id>``, on the
filesystem of the blobs, so that a complete upload becomes a blob by a rename, never a copy.
The database's ``offset`` is how many of them are durable: a PATCH's bytes are written on a
blob thread, fsync'd, and only then is the new offset committed (an acknowledgement means
fsync'd).  Bytes past the recorded offset (a crash mid-PATCH) are cut off when the upload is
next written to.

Completion: the SHA-256 of the whole content is computed as the bytes are written (after a
restart the existing prefix is hashed again on a blob thread).  One transaction then
registers the blob row, makes the ``files`` row holding the reference and marks the upload
complete; the upload file is then renamed into the blob directory, or deleted when the store
already had that content (dedupe).  A crash before the rename is finished by ``start()``,
which also removes upload files that no row knows (terminated, or never committed).

Concatenation (tus ``concatenation`` extension): a final upload's file is made by copying its
partial uploads' files one after the other on a blob thread, hashing as it goes.  That one
copy cannot be avoided (a file is not the concatenation of others without a copy on a
POSIX filesystem); the partials are deleted in the transaction that makes the final.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mailbox_appliance.errors import (
    OffsetMismatch,
    UploadConflict,
    UploadError,
    UploadGone,
    UploadTooLarge,
)
from mailbox_appliance.interfaces import IUploadBackend, UploadInfo
from mailbox_appliance.store import schema, transfers
from mailbox_appliance.store.blob_rows import INLINE
from mailbox_appliance.store.blobs import BlobStore, _fsync_dir, _makedirs_durable
from mailbox_appliance.store.db import Database, on_commit
from mailbox_appliance.store.uploadwriter import CHECKSUMS, UploadWriter, write_all

log = Logger()

UPLOADS_DIR = "uploads"
#: Block size when hashing or concatenating files.
READ_BLOCK = 1024 * 1024
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _info(row: dict[str, Any]) -> UploadInfo:
    return UploadInfo(
        id=row["id"],
        offset=row["offset"],
        length=row["length"],
        metadata=transfers.decode_metadata(row["metadata"]),
        expires=row["expires"],
        partial=bool(row["partial"]),
        final=bool(row["final"]),
        parts=tuple(row.get("parts") or ()),
        sha256=row["sha256"] if row["file_id"] is not None else None,
    )


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@implementer(IUploadBackend)
class UploadStore:
    """Resumable uploads, the station's files and their limits.

    ``max_file_size``: the largest upload; ``station_capacity``: what one account may hold on
    the station (its station files plus the declared lengths of its unfinished uploads);
    ``cloud_capacity``: what one account may keep in its cloud drive (files moved there);
    ``upload_expires``: seconds an unfinished upload lives after its last progress;
    ``station_expiry``: seconds a station file lives.  ``clock``: the current UTC datetime.
    """

    def __init__(
        self,
        reactor,
        db: Database,
        blobs: BlobStore,
        *,
        max_file_size: int,
        station_capacity: int,
        cloud_capacity: int = 1024**3,
        upload_expires: float = 24 * 3600,
        station_expiry: float = 7 * 24 * 3600,
        clock: Callable[[], datetime.datetime] = _utcnow,
    ):
        self.reactor = reactor
        self.db = db
        self.blobs = blobs
        self.max_file_size = max_file_size
        self.station_capacity = station_capacity
        self.cloud_capacity = cloud_capacity
        self.upload_expires = datetime.timedelta(seconds=upload_expires)
        self.station_expiry = datetime.timedelta(seconds=station_expiry)
        self.clock = clock
        self.dir = os.path.join(blobs.hot.root, UPLOADS_DIR)
        #: upload id -> (offset, SHA-256 state of the bytes before it), kept while written.
        self._hashes: dict[str, tuple[int, Any]] = {}
        #: Uploads a writer, a completion or a concatenation has in hand.
        self._busy: set[str] = set()

    def path(self, upload_id: str) -> str:
        return os.path.join(self.dir, upload_id)

    # -- start: finish what a crash interrupted ----------------------------------------------

    def start(self) -> Deferred[None]:
        """Remove upload files no row knows, place complete ones, finish completions."""

        def _list_thd() -> list[str]:
            _makedirs_durable(self.dir)
            return os.listdir(self.dir)

        def _rows_txn(conn: Connection, names: list[str]):
            rows = transfers.uploads_txn(conn, names)
            b = schema.blobs
            shas = [row["sha256"] for row in rows.values() if row["file_id"] is not None]
            query = select(b.c.sha256, b.c.tier).where(b.c.sha256.in_(shas))
            tiers = {row.sha256: row.tier for row in conn.execute(query)}
            return rows, tiers

        d = self.blobs.run(_list_thd)
        d.addCallback(
            lambda names: self.db.read(lambda conn: _rows_txn(conn, names)).addCallback(
                lambda found: self.blobs.run(self._sort_out_thd, *found, names)
            )
        )
        d.addCallback(lambda _: self.db.read(transfers.incomplete_finished_uploads_txn))
        d.addCallback(self._finish_completions)
        return d

    def _sort_out_thd(self, rows: dict[str, dict], tiers: dict[str, str], names: list[str]):
        for name in names:
            row = rows.get(name)
            if row is None:
                log.info("removing upload file {name} that no upload knows", name=name)
                _unlink(self.path(name))
            elif row["file_id"] is not None:  # committed complete; the rename was cut short
                tier = tiers.get(row["sha256"], "hot")
                self._place_thd(name, row["sha256"], row["length"], tier)

    def _finish_completions(self, rows: list[dict[str, Any]]) -> Deferred[None]:
        d: Deferred = succeed(None)
        for row in rows:
            d.addCallback(lambda _, row=row: self._complete_guarded(row, None))
            d.addErrback(
                lambda f, row=row: log.failure("cannot complete upload {id}", f, id=row["id"])
            )
        return d.addCallback(lambda _: None)

    # -- IUploadBackend ----------------------------------------------------------------------

    def create(
        self,
        owner: int,
        length: int | None,
        metadata: dict[str, bytes],
        parts: Sequence[str] | None = None,
        partial: bool = False,
    ) -> Deferred[UploadInfo]:
        """A new upload; ``partial``: a part of a later final upload (Upload-Concat: partial)."""
        if parts is not None:
            if partial:
                return fail(UploadConflict("an upload cannot be both partial and final"))
            return self._create_final(owner, list(parts), metadata)
        if length is not None and length < 0:
            return fail(UploadConflict("the upload length cannot be negative"))
        if length is not None and length > self.max_file_size:
            return fail(self._too_large())
        now = self.clock()
        row = {
            "id": transfers.new_token(),
            "account_id": owner,
            "length": length,
            "offset": 0,
            "metadata": transfers.encode_metadata(metadata),
            "created": now,
            "expires": now + self.upload_expires,
            "partial": partial,
            "final": False,
            "parts": None,
            "sha256": None,
            "file_id": None,
        }

        def _txn(conn: Connection) -> dict[str, Any]:
            transfers.check_capacity_txn(conn, owner, length or 0, self.station_capacity)
            transfers.insert_upload_txn(conn, row)
            return row

        d = self.db.write(_txn)
        if length == 0 and not partial:
            d.addCallback(lambda row: self._complete_guarded(row, hashlib.sha256()))
        else:
            d.addCallback(_info)
        return d

    def info(self, owner: int, upload_id: str) -> Deferred[UploadInfo | None]:
        def _answer(row):
            if row is None:
                return None
            if self._expired(row):
                raise UploadGone("the upload expired", expired=True)
            if self._needs_completion(row) and row["id"] not in self._busy:
                return self._complete_guarded(row, None)  # a completion that failed earlier
            return _info(row)

        return self._row(owner, upload_id).addCallback(_answer)

    def declare_length(self, owner: int, upload_id: str, length: int) -> Deferred[UploadInfo]:
        if length < 0:
            return fail(UploadConflict("the upload length cannot be negative"))
        if length > self.max_file_size:
            return fail(self._too_large())

        def _txn(conn: Connection) -> dict[str, Any]:
            row = transfers.upload_txn(conn, upload_id)
            self._check_present(row, owner)
            if row["length"] is not None:
                raise UploadConflict("the upload's length is already set")
            if length < row["offset"]:
                raise UploadConflict(f"the upload already holds {row['offset']} bytes")
            transfers.check_capacity_txn(
                conn, owner, length, self.station_capacity, exclude=[upload_id]
            )
            transfers.set_length_txn(conn, upload_id, length)
            return {**row, "length": length}

        def _then(row):
            if self._needs_completion(row) and row["id"] not in self._busy:
                return self._complete_guarded(row, self._cached_hash(row))
            return _info(row)

        return self.db.write(_txn).addCallback(_then)

    def open_writer(
        self,
        owner: int,
        upload_id: str,
        offset: int,
        checksum: tuple[str, bytes] | None = None,
    ) -> Deferred[UploadWriter]:
        if checksum is not None and checksum[0] not in CHECKSUMS:
            return fail(UploadError(f"unsupported checksum algorithm {checksum[0]!r}"))
        if upload_id in self._busy:
            return fail(UploadConflict("another request is writing to this upload"))
        if not _TOKEN.match(upload_id):
            return fail(UploadGone())
        self._busy.add(upload_id)

        def _open(row):
            self._check_present(row, owner)
            if row["final"]:
                raise UploadConflict("a final upload cannot be written to")
            if row["length"] is not None and row["offset"] == row["length"]:
                raise UploadConflict("the upload is complete")
            if offset != row["offset"]:
                raise OffsetMismatch(row["offset"])
            hasher = None if row["partial"] else self._cached_hash(row)
            rehash = not row["partial"] and hasher is None
            d = self.blobs.run(self._open_thd, upload_id, offset, rehash)
            d.addCallback(lambda opened: UploadWriter(self, row, *opened, hasher, checksum))
            return d

        d = self._row(owner, upload_id).addCallback(_open)
        d.addErrback(self._release, upload_id)
        return d

    def terminate(self, owner: int, upload_id: str) -> Deferred[None]:
        if not _TOKEN.match(upload_id):
            return fail(UploadGone())

        def _txn(conn: Connection) -> None:
            row = transfers.upload_txn(conn, upload_id)
            self._check_present(row, owner)
            if row["file_id"] is not None:
                transfers.delete_file_txn(conn, row["file_id"])
            else:
                transfers.delete_uploads_txn(conn, [upload_id], "terminate")
                on_commit(conn, lambda: _unlink(self.path(upload_id)))

        self._hashes.pop(upload_id, None)
        return self.db.write(_txn)

    def open_content(self, owner: int, upload_id: str) -> Deferred[tuple[int, str, Callable]]:
        if not _TOKEN.match(upload_id):
            return fail(UploadGone())

        def _txn(conn: Connection):
            row = transfers.upload_txn(conn, upload_id)
            self._check_present(row, owner)
            if row["file_id"] is None:
                raise UploadGone("the upload is not complete")
            tier = conn.execute(
                select(schema.blobs.c.tier).where(schema.blobs.c.sha256 == row["sha256"])
            ).scalar()
            return row["length"], row["sha256"], tier

        return self.db.read(_txn).addCallback(lambda found: (*found[:2], self._reader(*found)))

    # -- beyond tus: the fast path, reaping ----------------------------------------------------

    def claim_existing(
        self, owner: int, sha256: str, size: int, name: str
    ) -> Deferred[dict[str, Any] | None]:
        """A new station file of content this account already holds, without its bytes; None
        when the account holds no such content (whoever else does is never revealed)."""

        def _txn(conn: Connection) -> dict[str, Any] | None:
            if transfers.account_file_with_blob_txn(conn, owner, sha256, size) is None:
                return None
            transfers.check_capacity_txn(conn, owner, size, self.station_capacity)
            now = self.clock()
            return transfers.add_file_txn(
                conn, owner, name, sha256, size, transfers.STATION, now, now + self.station_expiry
            )

        return self.db.write(_txn)

    def reap_expired(
        self, now: datetime.datetime | None = None, limit: int = 1000
    ) -> Deferred[dict[str, int]]:
        """Delete expired unfinished uploads (with their files) and expired station files
        (dropping their blob references; garbage collection takes the blobs later)."""
        now = now or self.clock()
        busy = set(self._busy)

        def _txn(conn: Connection) -> dict[str, int]:
            ids = [i for i in transfers.expired_uploads_txn(conn, now, limit) if i not in busy]
            transfers.delete_uploads_txn(conn, ids, "expire")
            paths = [self.path(i) for i in ids]
            on_commit(conn, lambda: [_unlink(p) for p in paths])
            files = transfers.expired_files_txn(conn, now, limit)
            for file_id in files:
                transfers.delete_file_txn(conn, file_id, "expire")
            return {"uploads": len(ids), "files": len(files)}

        def _forget(counts):
            for upload_id in list(self._hashes):
                if upload_id not in self._busy:
                    self._hashes.pop(upload_id, None)
            return counts

        return self.db.write(_txn).addCallback(_forget)

    # -- helpers on the reactor --------------------------------------------------------------

    def _too_large(self) -> UploadTooLarge:
        return UploadTooLarge(f"larger than the largest file allowed ({self.max_file_size} bytes)")

    def _row(self, owner: int, upload_id: str) -> Deferred[dict[str, Any] | None]:
        if not _TOKEN.match(upload_id):
            return succeed(None)

        def _owned(row):
            return row if row is not None and row["account_id"] == owner else None

        return self.db.read(lambda conn: transfers.upload_txn(conn, upload_id)).addCallback(_owned)

    def _expired(self, row: dict[str, Any]) -> bool:
        expires = row["expires"]
        return row["file_id"] is None and expires is not None and expires <= self.clock()

    def _check_present(self, row: dict[str, Any] | None, owner: int) -> None:
        if row is None or row["account_id"] != owner:
            raise UploadGone()
        if self._expired(row):
            raise UploadGone("the upload expired", expired=True)

    @staticmethod
    def _needs_completion(row: dict[str, Any]) -> bool:
        return (
            not row["partial"]
            and row["file_id"] is None
            and row["length"] is not None
            and row["offset"] == row["length"]
        )

    def _cached_hash(self, row: dict[str, Any]):
        cached = self._hashes.get(row["id"])
        if cached is None or cached[0] != row["offset"]:
            return None
        return cached[1].copy()

    def _release(self, result, upload_id: str):
        self._busy.discard(upload_id)
        return result

    def _reader(self, size: int, sha256: str, tier: str) -> Callable[[int, int], Deferred[bytes]]:
        def read(offset: int, length: int) -> Deferred[bytes]:
            length = max(0, min(length, size - offset))
            if tier == INLINE:
                ranges = [(sha256, offset, offset + length)]
                return self.blobs.read_ranges(ranges).addCallback(lambda parts: parts[0])
            return self.blobs.read_file_chunk(sha256, offset, length)

        return read

    # -- progress and completion -------------------------------------------------------------

    def _record(self, row: dict[str, Any], start: int, offset: int, hasher) -> Deferred:
        """The upload's file durably holds ``offset`` bytes: commit it; complete it if full."""
        upload_id = row["id"]
        expires = self.clock() + self.upload_expires
        d = self.db.write(
            lambda conn: transfers.set_offset_txn(conn, upload_id, start, offset, expires)
        )

        def _recorded(new_row):
            if new_row is None:
                self._hashes.pop(upload_id, None)
                raise UploadGone("the upload was terminated meanwhile")
            if hasher is not None:
                self._hashes[upload_id] = (offset, hasher)
            if self._needs_completion(new_row):
                return self._complete(new_row, hasher)
            return _info(new_row)

        return d.addCallback(_recorded)

    def _complete_guarded(self, row: dict[str, Any], hasher) -> Deferred[UploadInfo]:
        self._busy.add(row["id"])
        return self._complete(row, hasher).addBoth(self._release, row["id"])

    def _complete(self, row: dict[str, Any], hasher) -> Deferred[UploadInfo]:
        """The content becomes a blob held by a new station file (see the module doc)."""
        upload_id, size = row["id"], row["length"]
        if hasher is not None:
            d = succeed(hasher.hexdigest())
        else:
            d = self.blobs.run(self._hash_file_thd, upload_id, size)
        name = transfers.file_name(transfers.decode_metadata(row["metadata"]), "upload")
        now = self.clock()
        expires = now + self.station_expiry

        def _commit(sha256: str) -> Deferred:
            def _txn(conn: Connection):
                return transfers.complete_upload_txn(
                    conn, upload_id, sha256, size, name, now, expires
                )

            d = self.db.write(_txn)
            d.addCallback(lambda done: self._place(upload_id, sha256, size, done))
            d.addCallback(
                lambda file: _info(
                    {**row, "sha256": sha256, "file_id": file["id"], "expires": expires}
                )
            )
            return d

        d.addCallback(_commit)
        d.addBoth(lambda result: (self._hashes.pop(upload_id, None), result)[1])
        return d

    def _place(self, upload_id: str, sha256: str, size: int, done: tuple) -> Deferred:
        """Move the committed content into place; fires with the new file (``done``: what
        ``complete_upload_txn`` returned)."""
        tier, file = done
        d = self.blobs.run(self._place_thd, upload_id, sha256, size, tier)
        return d.addCallback(lambda _: file)

    def _create_final(
        self, owner: int, part_ids: list[str], metadata: dict[str, bytes]
    ) -> Deferred[UploadInfo]:
        if not part_ids or len(set(part_ids)) != len(part_ids):
            return fail(UploadConflict("a final upload needs distinct partial uploads"))
        if not all(_TOKEN.match(i) for i in part_ids) or self._busy & set(part_ids):
            return fail(UploadGone("a partial upload is absent or in use"))
        final_id = transfers.new_token()

        def _check_parts(conn: Connection) -> list[dict[str, Any]]:
            rows = transfers.uploads_txn(conn, part_ids)
            parts = []
            for part_id in part_ids:
                row = rows.get(part_id)
                self._check_present(row, owner)
                if not row["partial"]:
                    raise UploadConflict(f"upload {part_id} is not a partial upload")
                if row["length"] is None or row["offset"] != row["length"]:
                    raise UploadConflict(f"partial upload {part_id} is not complete")
                parts.append(row)
            total = sum(row["length"] for row in parts)
            if total > self.max_file_size:
                raise self._too_large()
            transfers.check_capacity_txn(
                conn, owner, total, self.station_capacity, exclude=part_ids
            )
            return parts

        def _copy(parts: list[dict[str, Any]]) -> Deferred:
            lengths = [(row["id"], row["length"]) for row in parts]
            d = self.blobs.run(self._concat_thd, final_id, lengths)
            return d.addCallback(lambda sha256: _commit(parts, sha256))

        def _commit(parts: list[dict[str, Any]], sha256: str) -> Deferred:
            size = sum(row["length"] for row in parts)
            first = transfers.decode_metadata(parts[0]["metadata"])
            name = transfers.file_name(metadata, transfers.file_name(first, "upload"))
            now = self.clock()
            expires = now + self.station_expiry
            row = {
                "id": final_id,
                "account_id": owner,
                "length": size,
                "offset": size,
                "metadata": transfers.encode_metadata(metadata),
                "created": now,
                "expires": now + self.upload_expires,
                "partial": False,
                "final": True,
                "parts": part_ids,
                "sha256": None,
                "file_id": None,
            }

            def _txn(conn: Connection):
                if [r["offset"] for r in _check_parts(conn)] != [r["offset"] for r in parts]:
                    raise UploadConflict("a partial upload changed meanwhile")
                transfers.insert_upload_txn(conn, row)
                transfers.delete_uploads_txn(conn, part_ids, "concatenated")
                paths = [self.path(i) for i in part_ids]
                on_commit(conn, lambda: [_unlink(p) for p in paths])
                return transfers.complete_upload_txn(
                    conn, final_id, sha256, size, name, now, expires
                )

            d = self.db.write(_txn)
            d.addCallback(lambda done: self._place(final_id, sha256, size, done))
            d.addCallback(
                lambda file: _info(
                    {**row, "sha256": sha256, "file_id": file["id"], "expires": expires}
                )
            )
            return d

        def _cleanup(failure: Failure):
            d = self.blobs.run(_unlink, self.path(final_id))
            return d.addBoth(lambda _: failure)

        self._busy.update(part_ids)
        d = self.db.read(_check_parts).addCallback(_copy)
        d.addErrback(_cleanup)
        d.addBoth(lambda result: (self._busy.difference_update(part_ids), result)[1])
        return d

    # -- on blob threads ---------------------------------------------------------------------

    def _open_thd(self, upload_id: str, offset: int, rehash: bool) -> tuple[int, Any, bool]:
        """Open the upload's file for writing at ``offset``: (fd, SHA-256 of the prefix when
        ``rehash``, whether the file was created).  Bytes past ``offset`` were never
        acknowledged (a crash mid-PATCH) and are cut off."""
        path = self.path(upload_id)
        created = False
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if offset != 0:
                raise
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
            created = True
        try:
            size = os.fstat(fd).st_size
            if size < offset:
                raise OSError(f"upload file {path} holds {size} bytes, not {offset}")
            if size > offset:
                os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
            hasher = self._hash_prefix_thd(path, offset) if rehash else None
        except BaseException:
            os.close(fd)
            raise
        return fd, hasher, created

    @staticmethod
    def _hash_prefix_thd(path: str, length: int):
        hasher = hashlib.sha256()
        with open(path, "rb", buffering=0) as f:
            left = length
            while left:
                block = f.read(min(READ_BLOCK, left))
                if not block:
                    raise OSError(f"upload file {path} is shorter than {length} bytes")
                hasher.update(block)
                left -= len(block)
        return hasher

    def _hash_file_thd(self, upload_id: str, size: int) -> str:
        path = self.path(upload_id)
        if size == 0 and not os.path.exists(path):
            return hashlib.sha256().hexdigest()
        return self._hash_prefix_thd(path, size).hexdigest()

    def _place_thd(self, upload_id: str, sha256: str, size: int, tier: str) -> None:
        """The committed content's file moves into the blob directory, or goes if the store
        has the content already."""
        src, dest = self.path(upload_id), self.blobs.path_for(sha256)
        if tier == INLINE or os.path.exists(dest):
            _unlink(src)
            return
        if not os.path.exists(src):
            if size != 0:
                raise OSError(f"upload file {src} is missing")
            fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
            os.fsync(fd)
            os.close(fd)
        parent = os.path.dirname(dest)
        _makedirs_durable(parent)
        os.rename(src, dest)
        _fsync_dir(parent)

    def _concat_thd(self, final_id: str, parts: list[tuple[str, int]]) -> str:
        """Copy the partial uploads' bytes into the final upload's file; its SHA-256."""
        path = self.path(final_id)
        hasher = hashlib.sha256()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
        try:
            for part_id, length in parts:
                if length == 0:
                    continue
                with open(self.path(part_id), "rb", buffering=0) as src:
                    left = length
                    while left:
                        block = src.read(min(READ_BLOCK, left))
                        if not block:
                            raise OSError(f"partial upload {part_id} is short of its length")
                        hasher.update(block)
                        write_all(fd, block)
                        left -= len(block)
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(self.dir)
        return hasher.hexdigest()
