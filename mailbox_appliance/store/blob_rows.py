"""Blob rows: the ``*_txn`` functions that register, reference and release blobs.

A blob lives either in a tier directory (a file named by its SHA-256) or, when it is small,
*inline* in its own row (``blobs.data``, tier ``inline``).  Inline content is written in the
same transaction as the message that uses it, so one group commit (one fsync of the database
log) makes a whole batch of small messages durable, where files would cost each message its
own file and directory fsyncs.

Statements are built once with bound parameters: building a statement with literal values
costs more on the single writer thread than running it, and these run for every message.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from mailbox_appliance.errors import BlobMissing
from mailbox_appliance.store import schema
from mailbox_appliance.store.journal import record_txn

INLINE = "inline"


class BlobRef(NamedTuple):
    """A stored (or, with ``inline``, ready to store) piece of content."""

    sha256: str
    size: int
    #: The content itself, for a small blob that is kept in its database row.
    inline: bytes | None = None

    def __repr__(self) -> str:
        where = f", inline {len(self.inline)} bytes" if self.inline is not None else ""
        return f"BlobRef({self.sha256[:12]}…, {self.size}{where})"


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


_blobs = schema.blobs
_REFCOUNT = select(_blobs.c.refcount, _blobs.c.tier).where(_blobs.c.sha256 == bindparam("b_sha256"))
_INSERT = _blobs.insert()
_EXISTING = select(_blobs.c.sha256, _blobs.c.tier, _blobs.c.refcount).where(
    _blobs.c.sha256.in_(bindparam("shas", expanding=True))
)
_MAKE_INLINE = (
    update(_blobs)
    .where(_blobs.c.sha256 == bindparam("b_sha256"))
    .values(tier=INLINE, data=bindparam("b_data"))
)
_CONTENT = select(_blobs.c.tier, _blobs.c.data).where(_blobs.c.sha256 == bindparam("b_sha256"))
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
_DECREF = (
    update(_blobs)
    .where(_blobs.c.sha256 == bindparam("b_sha256"))
    .values(refcount=_blobs.c.refcount - bindparam("b_count"))
)
_MARK_ZERO = (
    update(_blobs)
    .where(_blobs.c.sha256 == bindparam("b_sha256"), _blobs.c.refcount <= 0)
    .values(refcount=0, zero_since=bindparam("b_now"))
)


def _insert_txn(conn: Connection, ref: BlobRef, tier: str, refcount: int) -> None:
    now = utcnow()
    conn.execute(
        _INSERT,
        {
            "sha256": ref.sha256,
            "size": ref.size,
            "tier": tier,
            "refcount": refcount,
            "created": now,
            "last_access": now,
            "zero_since": None if refcount else now,
            "data": ref.inline,
        },
    )
    record_txn(conn, "blob.add", {"sha256": ref.sha256, "size": ref.size, "tier": tier})


def register_txn(conn: Connection, ref: BlobRef, tier: str) -> str:
    """Make sure a row exists for a file blob before its file becomes visible.

    Returns the tier the content is stored in: ``inline`` when the same content is already
    kept in its row (stored while ``inline_max`` was larger), and then no file is needed.
    """
    row = conn.execute(_REFCOUNT, {"b_sha256": ref.sha256}).first()
    if row is None:
        _insert_txn(conn, ref, tier, refcount=0)
        return tier
    if row.refcount == 0:
        # Restart the grace period so garbage collection leaves it to the coming reference.
        conn.execute(_RESTART_GRACE, {"b_sha256": ref.sha256, "b_now": utcnow()})
    return row.tier


def incref_txn(conn: Connection, sha256: str, count: int = 1) -> None:
    """Take ``count`` references to a stored blob; BlobMissing if there is none."""
    result = conn.execute(_INCREF, {"b_sha256": sha256, "b_count": count})
    if result.rowcount != 1:
        raise BlobMissing(sha256)


def reference_many_txn(
    conn: Connection, refs: Sequence[BlobRef]
) -> list[tuple[str, dict[str, object]]]:
    """One reference per message to its blob; inline content not stored yet is stored now.

    Returns the journal changes for the caller to record with its own (one insert per batch).
    """
    counts = Counter(ref.sha256 for ref in refs)
    by_sha: dict[str, BlobRef] = {}
    for ref in refs:  # prefer a ref that carries the content
        if ref.inline is not None or ref.sha256 not in by_sha:
            by_sha[ref.sha256] = ref
    existing = {row.sha256: row for row in conn.execute(_EXISTING, {"shas": list(counts)})}
    # An unreferenced file row may have lost its file to a crash before the rename; content
    # we hold in memory is kept inline instead, so no message ever points at a missing file.
    to_inline = [
        {"b_sha256": sha, "b_data": by_sha[sha].inline}
        for sha, row in existing.items()
        if row.tier != INLINE and row.refcount == 0 and by_sha[sha].inline is not None
    ]
    if to_inline:
        conn.execute(_MAKE_INLINE, to_inline)
    if existing:
        conn.execute(_INCREF, [{"b_sha256": sha, "b_count": counts[sha]} for sha in existing])
    new = [by_sha[sha] for sha in counts if sha not in existing]
    if not new:
        return []
    missing = [ref.sha256 for ref in new if ref.inline is None]
    if missing:
        raise BlobMissing(missing[0])
    now = utcnow()
    conn.execute(
        _INSERT,
        [
            {
                "sha256": ref.sha256,
                "size": ref.size,
                "tier": INLINE,
                "refcount": counts[ref.sha256],
                "created": now,
                "last_access": now,
                "zero_since": None,
                "data": ref.inline,
            }
            for ref in new
        ],
    )
    return [("blob.add", {"sha256": r.sha256, "size": r.size, "tier": INLINE}) for r in new]


def decref_txn(conn: Connection, sha256: str, count: int = 1) -> None:
    """Drop ``count`` references; at zero the blob waits out the grace period, then goes."""
    decref_many_txn(conn, {sha256: count})


def decref_many_txn(conn: Connection, counts: dict[str, int]) -> None:
    """``decref_txn`` for many blobs: two statements in all (``executemany``)."""
    if not counts:
        return
    now = utcnow()
    conn.execute(_DECREF, [{"b_sha256": sha, "b_count": n} for sha, n in counts.items()])
    conn.execute(_MARK_ZERO, [{"b_sha256": sha, "b_now": now} for sha in counts])


def inline_content_txn(conn: Connection, sha256: str) -> bytes | None:
    """The content of an inline blob; None for a blob kept in a file."""
    row = conn.execute(
        select(_blobs.c.tier, _blobs.c.data).where(_blobs.c.sha256 == sha256)
    ).first()
    if row is None:
        raise BlobMissing(sha256)
    return row.data if row.tier == INLINE else None
