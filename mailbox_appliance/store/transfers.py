"""The file-transfer station's rows: uploads, files and share links, as ``*_txn`` functions.

Used by store/uploads.py (which adds the file work: upload files, hashing, blobs), the web
layer and the CLI (``files list|share|revoke|move|gc``).  Each returns plain data; each change
writes its journal entry in the same transaction.  A file is on the station (kind "station":
it expires) or in the account's cloud drive (kind "cloud": kept until deleted);
``move_file_txn`` moves it between the two, each with its own capacity.  A ``files`` row
holds one reference to its blob; deleting it (``delete_file_txn``) drops that reference, its
share links and the upload row that made it.  Tokens (upload ids, file ids, share links) are
160 random bits in lower-case base32.
"""

from __future__ import annotations

import base64
import datetime
import secrets
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import and_, delete, false, func, or_, select, update
from sqlalchemy.engine import Connection

from mailbox_appliance.errors import UploadGone, UploadTooLarge
from mailbox_appliance.store import schema
from mailbox_appliance.store.blob_rows import (
    BlobRef,
    decref_txn,
    incref_txn,
    reference_many_txn,
    register_txn,
)
from mailbox_appliance.store.journal import record_many_txn, record_txn

_u, _f, _s = schema.uploads, schema.files, schema.share_links

STATION = "station"
CLOUD = "cloud"
KINDS = frozenset({STATION, CLOUD})


class StationFile(NamedTuple):
    """A station file to add with its share link (an attachment detached from mail)."""

    name: str
    ref: BlobRef
    token: str
    expires: datetime.datetime


def new_token() -> str:
    """A random token of 160 bits: 32 lower-case base32 characters.

    Letters and digits only, so that a token never starts with ``-`` (which a
    command line takes for an option) and a double click selects all of it.
    """
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii").lower()


def utc(value: datetime.datetime | None) -> datetime.datetime | None:
    """Datetimes as stored are UTC; SQLite gives them back naive."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=datetime.UTC)
    return value


def encode_metadata(metadata: dict[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode("ascii") for k, v in metadata.items()}


def decode_metadata(stored: dict[str, str]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in stored.items()}


def file_name(metadata: dict[str, bytes], default: str) -> str:
    """The file's name from Upload-Metadata ``filename`` or ``name``; never a path."""
    raw = metadata.get("filename") or metadata.get("name")
    if not raw:
        return default
    name = raw.decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch >= " " and ch != "\x7f").strip()
    return name[:255] or default


# -- uploads -------------------------------------------------------------------------------


def _upload(row) -> dict[str, Any]:
    out = dict(row._mapping)
    out["created"], out["expires"] = utc(out["created"]), utc(out["expires"])
    return out


def upload_txn(conn: Connection, upload_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(_u).where(_u.c.id == upload_id)).first()
    return None if row is None else _upload(row)


def uploads_txn(conn: Connection, upload_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    rows = conn.execute(select(_u).where(_u.c.id.in_(list(upload_ids))))
    return {row.id: _upload(row) for row in rows}


def station_usage_txn(conn: Connection, account_id: int, exclude: Sequence[str] = ()) -> int:
    """Bytes the account holds on the station: its station files, and what its unfinished
    uploads declared (or hold so far, when their length is deferred)."""
    files = conn.execute(
        select(func.coalesce(func.sum(_f.c.size), 0)).where(
            _f.c.account_id == account_id, _f.c.kind == STATION
        )
    ).scalar()
    query = select(func.coalesce(func.sum(func.coalesce(_u.c.length, _u.c.offset)), 0)).where(
        _u.c.account_id == account_id, _u.c.file_id.is_(None)
    )
    if exclude:
        query = query.where(_u.c.id.not_in(list(exclude)))
    return int(files) + int(conn.execute(query).scalar())


def check_capacity_txn(
    conn: Connection, account_id: int, adding: int, capacity: int, exclude: Sequence[str] = ()
) -> None:
    """UploadTooLarge unless ``adding`` more bytes fit in the account's station capacity."""
    _check_fits("station", station_usage_txn(conn, account_id, exclude), adding, capacity)


def _check_fits(place: str, used: int, adding: int, capacity: int) -> None:
    if used + adding > capacity:
        raise UploadTooLarge(
            f"over the {place} capacity of {capacity} bytes for this account"
            f" ({used} bytes in use, {adding} more asked for)"
        )


def cloud_usage_txn(conn: Connection, account_id: int) -> int:
    """Bytes the account keeps in its cloud drive (uploads always land on the station)."""
    used = conn.execute(
        select(func.coalesce(func.sum(_f.c.size), 0)).where(
            _f.c.account_id == account_id, _f.c.kind == CLOUD
        )
    ).scalar()
    return int(used)


def check_cloud_capacity_txn(conn: Connection, account_id: int, adding: int, capacity: int) -> None:
    """UploadTooLarge unless ``adding`` more bytes fit in the account's cloud drive."""
    _check_fits("cloud drive", cloud_usage_txn(conn, account_id), adding, capacity)


def insert_upload_txn(conn: Connection, row: dict[str, Any]) -> None:
    conn.execute(_u.insert().values(**row))
    record_txn(
        conn,
        "upload.create",
        {
            "id": row["id"],
            "account_id": row["account_id"],
            "length": row["length"],
            "partial": row.get("partial", False),
            "final": row.get("final", False),
        },
    )


def set_offset_txn(
    conn: Connection,
    upload_id: str,
    start: int,
    offset: int,
    expires: datetime.datetime | None,
) -> dict[str, Any] | None:
    """Record that the upload's file durably holds ``offset`` bytes (it held ``start``);
    None when the upload is gone or moved meanwhile."""
    result = conn.execute(
        update(_u)
        .where(_u.c.id == upload_id, _u.c.offset == start, _u.c.file_id.is_(None))
        .values(offset=offset, expires=expires)
    )
    if result.rowcount != 1:
        return None
    record_txn(conn, "upload.progress", {"id": upload_id, "offset": offset})
    return upload_txn(conn, upload_id)


def set_length_txn(conn: Connection, upload_id: str, length: int) -> None:
    conn.execute(update(_u).where(_u.c.id == upload_id).values(length=length))
    record_txn(conn, "upload.length", {"id": upload_id, "length": length})


def delete_uploads_txn(conn: Connection, upload_ids: Sequence[str], kind: str) -> None:
    """Delete upload rows (``kind``: the journal's reason, e.g. "terminate", "expire")."""
    if not upload_ids:
        return
    conn.execute(delete(_u).where(_u.c.id.in_(list(upload_ids))))
    record_txn(conn, f"upload.{kind}", {"ids": list(upload_ids)})


def expired_uploads_txn(conn: Connection, now: datetime.datetime, limit: int) -> list[str]:
    """Unfinished uploads (partials waiting for their final included) past their expiry."""
    query = (
        select(_u.c.id)
        .where(_u.c.file_id.is_(None), _u.c.expires.is_not(None), _u.c.expires <= now)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def complete_upload_txn(
    conn: Connection,
    upload_id: str,
    sha256: str,
    size: int,
    name: str,
    now: datetime.datetime,
    expires: datetime.datetime | None,
) -> tuple[str, dict[str, Any]]:
    """The complete upload's content becomes the blob ``sha256``, held by a new station file.

    Registers the blob row (or finds the same content already stored) and takes the file's
    reference in one transaction.  Returns (the tier the content is in, the file); the caller
    then moves the upload file into place, or deletes it when the content was there already.
    """
    tier = register_txn(conn, BlobRef(sha256, size), "hot")
    row = conn.execute(select(_u.c.account_id).where(_u.c.id == upload_id)).one()
    file = add_file_txn(conn, row.account_id, name, sha256, size, STATION, now, expires)
    conn.execute(
        update(_u)
        .where(_u.c.id == upload_id)
        .values(sha256=sha256, file_id=file["id"], expires=expires)
    )
    record_txn(conn, "upload.complete", {"id": upload_id, "sha256": sha256, "file_id": file["id"]})
    return tier, file


def incomplete_finished_uploads_txn(conn: Connection) -> list[dict[str, Any]]:
    """Uploads whose bytes all arrived but that did not become a file (a crash in between)."""
    rows = conn.execute(
        select(_u).where(
            _u.c.file_id.is_(None),
            _u.c.partial == false(),
            _u.c.length.is_not(None),
            _u.c.offset == _u.c.length,
        )
    )
    return [_upload(row) for row in rows]


# -- files ---------------------------------------------------------------------------------


def _file(row) -> dict[str, Any]:
    out = dict(row._mapping)
    out["created"], out["expires"] = utc(out["created"]), utc(out["expires"])
    return out


def add_file_txn(
    conn: Connection,
    account_id: int,
    name: str,
    sha256: str,
    size: int,
    kind: str,
    now: datetime.datetime,
    expires: datetime.datetime | None,
    ref: BlobRef | None = None,
) -> dict[str, Any]:
    """A new file holding one reference to the stored blob ``sha256``; with ``ref``, content
    that may still be inline and unstored (a BlobWriter's result) is stored now."""
    if kind not in KINDS:
        raise ValueError(f"unknown file kind {kind!r}")
    if ref is None:
        incref_txn(conn, sha256)
    else:
        record_many_txn(conn, reference_many_txn(conn, [ref]))
    row = {
        "id": new_token(),
        "account_id": account_id,
        "name": name,
        "size": size,
        "blob_sha256": sha256,
        "kind": kind,
        "created": now,
        "expires": None if kind == CLOUD else expires,
    }
    conn.execute(_f.insert().values(**row))
    record_txn(
        conn,
        "file.add",
        {"id": row["id"], "account_id": account_id, "sha256": sha256, "size": size, "kind": kind},
    )
    return row


def files_txn(conn: Connection, account_id: int, kind: str | None = None) -> list[dict[str, Any]]:
    """The account's files, newest first."""
    query = select(_f).where(_f.c.account_id == account_id)
    if kind is not None:
        query = query.where(_f.c.kind == kind)
    return [_file(row) for row in conn.execute(query.order_by(_f.c.created.desc(), _f.c.id))]


def file_txn(
    conn: Connection, file_id: str, account_id: int | None = None
) -> dict[str, Any] | None:
    """A file by id (only the account's, when ``account_id`` is given); None if absent."""
    query = select(_f).where(_f.c.id == file_id)
    if account_id is not None:
        query = query.where(_f.c.account_id == account_id)
    row = conn.execute(query).first()
    return None if row is None else _file(row)


def file_of_upload_txn(conn: Connection, upload_id: str, account_id: int) -> dict[str, Any] | None:
    """The file a finished upload of the account's became (the upload URL's last segment
    names it for ``files share``); None if there is none."""
    file_id = conn.execute(
        select(_u.c.file_id).where(_u.c.id == upload_id, _u.c.account_id == account_id)
    ).scalar()
    return None if file_id is None else file_txn(conn, file_id, account_id)


def account_file_with_blob_txn(
    conn: Connection, account_id: int, sha256: str, size: int
) -> dict[str, Any] | None:
    """One of this account's files with that content, if it has one (never another's)."""
    row = conn.execute(
        select(_f)
        .where(_f.c.account_id == account_id, _f.c.blob_sha256 == sha256, _f.c.size == size)
        .limit(1)
    ).first()
    return None if row is None else _file(row)


def delete_file_txn(conn: Connection, file_id: str, reason: str = "remove") -> bool:
    """Delete a file, its share links and its upload row; its blob reference is dropped."""
    row = conn.execute(select(_f.c.blob_sha256).where(_f.c.id == file_id)).first()
    if row is None:
        return False
    conn.execute(delete(_s).where(_s.c.file_id == file_id))
    conn.execute(delete(_u).where(_u.c.file_id == file_id))
    conn.execute(delete(_f).where(_f.c.id == file_id))
    decref_txn(conn, row.blob_sha256)
    record_txn(conn, f"file.{reason}", {"id": file_id, "sha256": row.blob_sha256})
    return True


def move_file_txn(
    conn: Connection,
    file_id: str,
    account_id: int,
    kind: str,
    now: datetime.datetime,
    station_expires: datetime.datetime,
    station_capacity: int,
    cloud_capacity: int,
) -> dict[str, Any] | None:
    """Move the account's file to the cloud drive (kept until deleted) or to the station
    (expiring at ``station_expires``, and its share links no later); the file as it is now.

    None when the account has no such file (another account's is never revealed); a file
    already of ``kind`` stays as it is.  UploadTooLarge when it does not fit where it goes;
    UploadGone when it is a station file past its expiry (the reaper's, not the user's).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown file kind {kind!r}")
    file = file_txn(conn, file_id, account_id)
    if file is None or file["kind"] == kind:
        return file
    if file["expires"] is not None and file["expires"] <= now:
        raise UploadGone(f"file {file_id} has expired", expired=True)
    if kind == CLOUD:
        check_cloud_capacity_txn(conn, account_id, file["size"], cloud_capacity)
        expires = None
    else:
        check_capacity_txn(conn, account_id, file["size"], station_capacity)
        expires = station_expires
        conn.execute(
            update(_s)
            .where(_s.c.file_id == file_id, _s.c.expires > expires)
            .values(expires=expires)
        )
    conn.execute(update(_f).where(_f.c.id == file_id).values(kind=kind, expires=expires))
    record_txn(
        conn,
        "file.move",
        {
            "id": file_id,
            "account_id": account_id,
            "kind": kind,
            "expires": None if expires is None else expires.isoformat(),
        },
    )
    return {**file, "kind": kind, "expires": expires}


def expired_files_txn(conn: Connection, now: datetime.datetime, limit: int) -> list[str]:
    """Station files past their expiry (cloud files never expire)."""
    query = (
        select(_f.c.id)
        .where(_f.c.kind == STATION, _f.c.expires.is_not(None), _f.c.expires <= now)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


# -- share links ---------------------------------------------------------------------------


def _share(row) -> dict[str, Any]:
    out = dict(row._mapping)
    out["created"], out["expires"] = utc(out["created"]), utc(out["expires"])
    return out


def create_share_txn(
    conn: Connection,
    file_id: str,
    now: datetime.datetime,
    expires: datetime.datetime,
    password_hash: str | None = None,
    max_downloads: int | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """A new share link to a file (the caller checked the file is the account's); ``token``
    when it was made (and written into mail) beforehand."""
    row = {
        "token": token or new_token(),
        "file_id": file_id,
        "created": now,
        "expires": expires,
        "password_hash": password_hash,
        "max_downloads": max_downloads,
        "downloads": 0,
        "revoked": False,
    }
    conn.execute(_s.insert().values(**row))
    record_txn(conn, "share.add", {"token": row["token"], "file_id": file_id})
    return row


def share_txn(conn: Connection, token: str) -> dict[str, Any] | None:
    """A share link with its file's name, size and blob; None if there is no such link."""
    query = (
        select(_s, _f.c.name, _f.c.size, _f.c.blob_sha256, _f.c.account_id)
        .join(_f, _f.c.id == _s.c.file_id)
        .where(_s.c.token == token)
    )
    row = conn.execute(query).first()
    return None if row is None else _share(row)


def shares_txn(conn: Connection, file_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(select(_s).where(_s.c.file_id == file_id).order_by(_s.c.created))
    return [_share(row) for row in rows]


def revoke_share_txn(conn: Connection, token: str, account_id: int | None = None) -> bool:
    """Revoke a link (only one to the account's file, when ``account_id`` is given)."""
    query = update(_s).where(_s.c.token == token, _s.c.revoked == false())
    if account_id is not None:
        owned = select(_f.c.id).where(_f.c.account_id == account_id).scalar_subquery()
        query = query.where(_s.c.file_id.in_(owned))
    if conn.execute(query.values(revoked=True)).rowcount != 1:
        return False
    record_txn(conn, "share.revoke", {"token": token})
    return True


def count_download_txn(conn: Connection, token: str, now: datetime.datetime) -> bool:
    """Count one download through a link; False (nothing counted) when the link is revoked,
    expired or used up.  One conditional UPDATE, so parallel downloads cannot overshoot."""
    result = conn.execute(
        update(_s)
        .where(
            _s.c.token == token,
            _s.c.revoked == false(),
            _s.c.expires > now,
            or_(_s.c.max_downloads.is_(None), _s.c.downloads < _s.c.max_downloads),
        )
        .values(downloads=_s.c.downloads + 1)
    )
    if result.rowcount != 1:
        return False
    record_txn(conn, "share.download", {"token": token})
    return True


def usable_share_condition(now: datetime.datetime):
    """The SQL condition of a link that still works (for listings)."""
    return and_(
        _s.c.revoked == false(),
        _s.c.expires > now,
        or_(_s.c.max_downloads.is_(None), _s.c.downloads < _s.c.max_downloads),
    )


def delete_account_transfers_txn(conn: Connection, account_id: int) -> int:
    """Remove an account's files, share links and uploads (for ``remove_account_txn``): the
    blob references are dropped; upload files left behind go at the next start."""
    file_ids = list(conn.execute(select(_f.c.id).where(_f.c.account_id == account_id)).scalars())
    for file_id in file_ids:
        delete_file_txn(conn, file_id)
    upload_ids = list(conn.execute(select(_u.c.id).where(_u.c.account_id == account_id)).scalars())
    delete_uploads_txn(conn, upload_ids, "terminate")
    return len(file_ids)
